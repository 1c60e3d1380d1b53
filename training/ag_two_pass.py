"""AG's two-pass design (the paper's text, section 3.1.2): H is a second forward of F's conv chain.

::

    O_1..O_P = F.stem -> F's blocks, every BN replaced by H's private BN   (shared conv weights)
    g_1 = phi_1(O_1);   g_p = phi_p(O_p) + proj_p(g_{p-1})                  (linear, no g_0: Eq. 1)
    H(x) = own head: H's head BN -> ReLU -> flatten -> full-precision linear       (ag.head=own)
         = F's head: H's head BN -> F's QuantReLU -> F's 16-bit FC                (ag.head=shared)

Choices where the paper is silent:

* **Private BN everywhere.** Every BN of F (each layer's and the head's) has an H twin; H's forward never
  runs one of F's BNs, so F's running statistics are untouched by H and vice versa. With ``copy_bn``
  (default) the twins start as copies of F's BN when H is built, i.e. of F's pre-trained BN at the start
  of fine-tuning: fresh BN (gamma 1, beta 0) made H's first loss 3.15, worse than chance.
* **Shared modules.** H owns no conv weight: it calls F's modules, and so also shares F's QuantReLU
  quantizers (their learned scales get gradients from L1 and L2). With ``ag.head=shared`` it also shares
  F's 16-bit FC, which then learns from two feature spaces; ``own`` (default) gives H the authors'
  full-precision classifier instead.

``fused``: F and H in one pass over the two batches stacked (:meth:`TwoPassAG.joint`): same logits, BN
statistics and loss, gradients equal up to float summation order.
"""

from __future__ import annotations

from typing import Literal

import torch
from agq.training.ag import Outputs, adaptors_and_projections, own_classifier, select_taps, tap_shapes
from agq.training.models import QuantCNN
from torch import nn


class TwoPassAG(nn.Module):
    """H's private parts: BN twins of F's BNs, adaptors phi_p, projections proj_p, (own classifier).

    F itself is not a submodule (H owns no weight of F, and the objective's state_dict holds F once,
    under ``model``): ``run(model, x)`` runs F and H for the F it is given, which must be the F this
    module was built for.
    """

    def __init__(self, model: QuantCNN, granularity: Literal["block", "layer"] = "block",
                 own_head: bool = True, copy_bn: bool = True, fused: bool = False) -> None:
        super().__init__()
        self.granularity, self.fused = granularity, fused
        self.bns = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(layer.bn.num_features) for layer in block.layers)
            for block in model.blocks
        )
        self.head_bn = nn.BatchNorm2d(model.head.bn.num_features)
        if copy_bn:
            for h_bns, block in zip(self.bns, model.blocks, strict=True):
                for h_bn, layer in zip(h_bns, block.layers, strict=True):
                    h_bn.load_state_dict(layer.bn.state_dict())
            self.head_bn.load_state_dict(model.head.bn.state_dict())
        self.adaptors, self.projections = adaptors_and_projections(tap_shapes(model, granularity))
        self.classifier = own_classifier(model) if own_head else None

    def taps(self, model: QuantCNN, x: torch.Tensor) -> list[torch.Tensor]:
        """O_1..O_P: F's feature maps computed by F's conv chain with H's BN layers."""
        return select_taps(model.layer_outputs(x, bns=self.bns), self.granularity)

    def aggregate(self, taps: list[torch.Tensor]) -> torch.Tensor:
        """g_P of Eq. 1, with projections where width or resolution changes."""
        g = self.adaptors[0](taps[0])
        for adaptor, project, tap in zip(self.adaptors[1:], self.projections, taps[1:], strict=True):
            g = adaptor(tap) + project(g)
        return g

    def head(self, model: QuantCNN, g: torch.Tensor, bn: nn.Module) -> torch.Tensor:
        """H's logits from g_P: its own classifier, or F's head, after H's head BN (``bn``)."""
        if self.classifier is None:
            return model.head(g, bn=bn)
        return self.classifier(torch.relu(bn(g)))

    def forward(self, model: QuantCNN, x: torch.Tensor) -> torch.Tensor:
        """H's logits."""
        return self.head(model, self.aggregate(self.taps(model, x)), self.head_bn)

    def run(self, model: QuantCNN, x: torch.Tensor) -> Outputs:
        """F's block outputs, F's logits and H's logits: two forwards, or one stacked (``fused``)."""
        if self.fused:
            return self.joint(model, x)
        outputs = model.block_outputs(x)
        return outputs, model.head(outputs[-1]), self(model, x)

    def joint(self, model: QuantCNN, x: torch.Tensor) -> Outputs:
        """F's block outputs, F's logits and H's logits from one pass over F's and H's batches stacked.

        Every shared module (conv, QuantReLU, FC) is called once on the 2B batch, so each weight is
        quantized once per step instead of twice and the convolutions get one larger batch; each half is
        normalised by its own network's BN (:class:`SplitBatchNorm`), so logits, batch and running
        statistics and the loss equal those of two separate passes, the gradients up to float summation
        order. Opt-in (``ag.fused``): on a 2-core CPU it measured slower (122 vs 111 ms CPU time per step,
        default MNIST model, batch 128); it is meant for accelerators, where fewer, larger kernels pay.
        """
        n = x.shape[0]
        bns = [
            [SplitBatchNorm(layer.bn, h_bn) for layer, h_bn in zip(block.layers, h_bns, strict=True)]
            for block, h_bns in zip(model.blocks, self.bns, strict=True)
        ]
        per_block = model.layer_outputs(torch.cat([x, x]), bns=bns)
        f_outputs = [layers[-1][:n] for layers in per_block]
        g = self.aggregate([tap[n:] for tap in select_taps(per_block, self.granularity)])
        if self.classifier is None:
            logits = model.head(torch.cat([f_outputs[-1], g]), bn=SplitBatchNorm(model.head.bn, self.head_bn))
            return f_outputs, logits[:n], logits[n:]
        return f_outputs, model.head(f_outputs[-1]), self.head(model, g, self.head_bn)


class SplitBatchNorm(nn.Module):
    """Normalise the first half of a batch with F's BN and the second half with H's.

    The two BNs are held in a tuple, not registered: this wrapper is built per step and owns nothing.
    """

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.halves = (first, second)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2)
        return torch.cat([self.halves[0](first), self.halves[1](second)])
