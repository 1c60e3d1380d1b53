"""The Auxiliary Gradient module (paper section 3.1): the mixed-precision network H built around F.

H is F's own chain of layers run with H's private BatchNorm layers, plus full-precision branches that
tap F's feature maps O_1..O_P and aggregate them like a ResNet (Eq. 1)::

    O_1..O_P = F.stem -> F's blocks, every BN replaced by H's private BN   (shared conv weights)
    g_1 = phi_1(O_1);   g_p = phi_p(O_p) + proj_p(g_{p-1})
    H(x) = F.head(g_P) with H's private head BN                          (shared QuantReLU and FC)

Choices where the paper is silent (METHOD.md section 1 asks to state them here):

* **Taps.** ``granularity="block"``: O_p is the output of block p (after the shortcut add in a residual
  F). ``"layer"``: one tap per conv layer; the last layer of a block taps the block output, so the layer
  taps are a superset of the block taps.
* **Adaptor** phi_p: full-precision 1x1 conv (no bias, width kept) + BN, as the paper says.
* **Aggregation.** There is no g_0: g_1 = phi_1(O_1). Where g_{p-1} and O_p differ in width or
  resolution, proj_p is a full-precision strided 1x1 conv (no bias) + BN, a ResNet projection shortcut
  (its stride is the tapped conv's stride; 1x1 stride-s and 'same' kxk stride-s give the same size);
  elsewhere proj_p is the identity.
* **Shared, not copied.** H owns no conv weight: it calls F's modules. Besides the conv weights H also
  shares F's QuantReLU quantizers (their learned scales get gradients from L1 and L2) and F's 16-bit
  classifier FC; so H's classifier is F's head (BN -> QuantReLU -> flatten -> QuantLinear) reading g_P
  with H's own head BN. H thus differs from F only by full-precision parts (adaptors, projections, the
  g-path) and private BN, which is the paper's Fig. 1 (b).
* **Private BN everywhere.** Every BN of F (each layer's and the head's) has an H twin; H's forward
  never runs one of F's BNs, so F's running statistics are untouched by H and vice versa.

Loss: see :mod:`training.objective` (L = L1 + lambda * L2, Eq. 2). :meth:`AuxiliaryGradientModule.joint`
computes F and H in one pass over the two batches stacked (same results, see there).
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch
from torch import nn

from training.models import QuantCNN


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Full-precision 1x1 conv (no bias) + BN: the adaptor (stride 1) and the projection shortcut."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class AuxiliaryGradientModule(nn.Module):
    """H's private parts: BN twins of F's BNs, adaptors phi_p and projections proj_p.

    F itself is not a submodule (H owns no weight of F, and the objective's state_dict holds F once,
    under ``model``): ``forward(model, x)`` runs H around the F it is given, which must be the F this
    module was built for.
    """

    def __init__(self, model: QuantCNN, granularity: Literal["block", "layer"] = "block") -> None:
        super().__init__()
        self.granularity = granularity
        self.bns = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(layer.bn.num_features) for layer in block.layers)
            for block in model.blocks
        )
        self.head_bn = nn.BatchNorm2d(model.head.bn.num_features)
        taps = self._tap_shapes(model)
        self.adaptors = nn.ModuleList(conv_bn(width, width, 1) for width, _ in taps)
        self.projections = nn.ModuleList(
            conv_bn(prev, width, stride) if (prev, stride) != (width, 1) else nn.Identity()
            for (prev, _), (width, stride) in itertools.pairwise(taps)
        )

    def _tap_shapes(self, model: QuantCNN) -> list[tuple[int, int]]:
        """(width, stride relative to the previous tap) of every tapped feature map."""
        taps = []
        for block in model.blocks:
            convs = [layer.conv for layer in block.layers]
            if self.granularity == "layer":
                taps += [(conv.out_channels, conv.stride[0]) for conv in convs]
            else:
                stride = 1
                for conv in convs:
                    stride *= conv.stride[0]
                taps.append((convs[-1].out_channels, stride))
        return taps

    def taps(self, model: QuantCNN, x: torch.Tensor) -> list[torch.Tensor]:
        """O_1..O_P: F's feature maps computed by F's conv chain with H's BN layers."""
        return self._select(model.layer_outputs(x, bns=self.bns))

    def _select(self, per_block: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """The tapped maps among every layer's output: all of them, or each block's last."""
        if self.granularity == "layer":
            return [out for layers in per_block for out in layers]
        return [layers[-1] for layers in per_block]

    def aggregate(self, taps: list[torch.Tensor]) -> torch.Tensor:
        """g_P of Eq. 1, with projections where width or resolution changes."""
        g = self.adaptors[0](taps[0])
        for adaptor, project, tap in zip(self.adaptors[1:], self.projections, taps[1:], strict=True):
            g = adaptor(tap) + project(g)
        return g

    def joint(
        self, model: QuantCNN, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
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
        g = self.aggregate([tap[n:] for tap in self._select(per_block)])
        logits = model.head(torch.cat([f_outputs[-1], g]), bn=SplitBatchNorm(model.head.bn, self.head_bn))
        return f_outputs, logits[:n], logits[n:]

    def forward(self, model: QuantCNN, x: torch.Tensor) -> torch.Tensor:
        """H's logits: F's head (shared QuantReLU + 16-bit FC) on g_P, normalised by H's head BN."""
        return model.head(self.aggregate(self.taps(model, x)), bn=self.head_bn)


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
