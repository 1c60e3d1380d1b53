"""The Auxiliary Gradient module (paper section 3.1): the network H built around F, in two designs.

H = F plus full-precision branches: adaptors phi_p (1x1 conv + BN) on F's feature maps O_1..O_P,
aggregated like a ResNet, ``g_p = phi_p(O_p) + proj_p(g_{p-1})``, and a classifier on g_P. H shares
every conv weight of F; after training only F exists. ``ag.design`` picks how H is computed:

* ``one_pass`` (:mod:`training.ag_one_pass`): the authors' released code (METHOD.md section
  7). H taps F's own forward, so F's BN is shared on the main chain and F's convolutions run once per
  step; g starts at ``g_0 = phi_0(stem output)`` and every aggregation is followed by a ReLU; H has its
  own full-precision classifier. Cost per step: 1.08x plain, against 2.01x for two_pass
  (bench/results/cost.json).
* ``two_pass`` (:mod:`training.ag_two_pass`, the default: the one design whose gain over plain F was
  beyond noise in agq's benchmark): the paper's text (section 3.1.2). H is a second forward of
  F's conv chain with H's private BN layers (copied from F's pre-trained BN by default), a linear g-path
  without g_0, and H's own full-precision classifier (or F's quantized head, the old behaviour).

Both designs share the choices below (the paper leaves them open; METHOD.md section 1 asks to state
them here):

* **Taps.** ``granularity="block"``: O_p is the output of block p (after the shortcut add in a residual
  F). ``"layer"``: one tap per conv layer; the last layer of a block taps the block output, so the layer
  taps are a superset of the block taps.
* **Adaptor** phi_p: full-precision 1x1 conv (no bias, width kept) + BN, as the paper says.
* **Projections.** Where g_{p-1} and O_p differ in width or resolution, proj_p is a full-precision strided
  1x1 conv (no bias) + BN, a ResNet projection shortcut (its stride is the tapped conv's stride; 1x1
  stride-s and 'same' kxk stride-s give the same size); elsewhere proj_p is the identity.
* **H's own classifier**: flatten -> full-precision linear (with bias) on g_P, the shape F's head reads.

Every design exposes ``run(model, x) -> (F's block outputs, F's logits, H's logits)``; the objective
(:mod:`training.objective`) builds the loss L1 + lambda * L2 from it.
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch
import torch.nn.functional as tf
from agq.training.config import AGConfig
from agq.training.models import QuantCNN
from torch import nn

Outputs = tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]


class Conv1x1(nn.Conv2d):
    """A 1x1 conv (no bias) that computes a stride as subsampling, then a stride-1 conv: the same values,
    but on this CPU oneDNN's strided 1x1 backward took 6.6 ms where slice + conv took 0.7 ms (8 channels,
    28x28, batch 64)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sy, sx = self.stride
        return tf.conv2d(x[:, :, ::sy, ::sx], self.weight)


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Full-precision 1x1 conv (no bias) + BN: the adaptor (stride 1) and the projection shortcut."""
    return nn.Sequential(Conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


def tap_shapes(model: QuantCNN, granularity: Literal["block", "layer"]) -> list[tuple[int, int]]:
    """(width, stride relative to the previous tap) of every tapped feature map of F's blocks."""
    taps = []
    for block in model.blocks:
        convs = [layer.conv for layer in block.layers]
        if granularity == "layer":
            taps += [(conv.out_channels, conv.stride[0]) for conv in convs]
        else:
            stride = 1
            for conv in convs:
                stride *= conv.stride[0]
            taps.append((convs[-1].out_channels, stride))
    return taps


def select_taps(
    per_block: list[list[torch.Tensor]], granularity: Literal["block", "layer"]
) -> list[torch.Tensor]:
    """The tapped maps among every layer's output: all of them, or each block's last."""
    if granularity == "layer":
        return [out for layers in per_block for out in layers]
    return [layers[-1] for layers in per_block]


def adaptors_and_projections(taps: list[tuple[int, int]]) -> tuple[nn.ModuleList, nn.ModuleList]:
    """One adaptor per tap; one projection between consecutive taps (identity where shapes agree)."""
    adaptors = nn.ModuleList(conv_bn(width, width, 1) for width, _ in taps)
    projections = nn.ModuleList(
        conv_bn(prev, width, stride) if (prev, stride) != (width, 1) else nn.Identity()
        for (prev, _), (width, stride) in itertools.pairwise(taps)
    )
    return adaptors, projections


def own_classifier(model: QuantCNN) -> nn.Sequential:
    """H's own full-precision classifier: flatten -> linear with bias, reading g_P (O_P's shape)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(model.head.fc.in_features, model.cfg.num_classes))


def build_ag(model: QuantCNN, cfg: AGConfig) -> nn.Module:
    """H's private parts for F, in the design ``cfg.design`` asks for (config validated before)."""
    if cfg.design == "one_pass":
        from agq.training.ag_one_pass import OnePassAG

        return OnePassAG(model, cfg.granularity)
    from agq.training.ag_two_pass import TwoPassAG

    return TwoPassAG(model, cfg.granularity, own_head=cfg.head == "own", copy_bn=cfg.copy_bn,
                     fused=cfg.fused)
