"""AG's one-pass design (the authors' released code, METHOD.md section 7): H taps F's own forward.

::

    stem, O_1..O_P = F's forward (F's BN, F's quantizers: the very tensors F's loss sees)
    g_0 = phi_0(stem)                               1x1 conv + BN, to O_1's width and resolution
    g_1 = ReLU(g_0 + phi_1(O_1))
    g_p = ReLU(proj_p(g_{p-1}) + phi_p(O_p))        p = 2..P
    H(x) = own full-precision linear(flatten(g_P))

phi_0 maps the stem's output straight to the shape of O_1 (a strided 1x1 conv + BN where block 1
downsamples). The authors' stem already sits at block 1's resolution; here the stem runs at full
resolution, and an adaptor at full resolution followed by a projection would be two 1x1 convs in a row,
i.e. one linear map, at several times the cost (the full-resolution 1x1 conv's backward alone took 9 ms
of a 90 ms plain step on the bench net).

F's convolutions run once per step; H adds only its 1x1 adaptors, projections and classifier. L2's
gradient reaches F's conv weights, quantizer scales and BN through the taps. F's outputs and BN running
statistics are exactly those of F alone (H reads F's tensors, never runs one of F's modules again).
"""

from __future__ import annotations

from typing import Literal

import torch
from agq.training.ag import (
    Outputs,
    adaptors_and_projections,
    conv_bn,
    own_classifier,
    select_taps,
    tap_shapes,
)
from agq.training.models import QuantCNN
from torch import nn


class OnePassAG(nn.Module):
    """H's private parts (stem adaptor phi_0, adaptors, projections, classifier); F is not a submodule:
    ``run(model, x)`` computes F and H for the F it is given, which must be the F it was built for."""

    def __init__(self, model: QuantCNN, granularity: Literal["block", "layer"] = "block") -> None:
        super().__init__()
        self.granularity = granularity
        taps = tap_shapes(model, granularity)
        width, stride = taps[0]
        self.stem_adaptor = conv_bn(model.cfg.stem_channels, width, stride)
        self.adaptors, self.projections = adaptors_and_projections(taps)
        self.classifier = own_classifier(model)

    def aggregate(self, stem: torch.Tensor, taps: list[torch.Tensor]) -> torch.Tensor:
        """g_P: g_0 from the stem, then ReLU(proj(g) + phi(O_p)) at every tap."""
        g = torch.relu(self.stem_adaptor(stem) + self.adaptors[0](taps[0]))
        for adaptor, project, tap in zip(self.adaptors[1:], self.projections, taps[1:], strict=True):
            g = torch.relu(project(g) + adaptor(tap))
        return g

    def run(self, model: QuantCNN, x: torch.Tensor) -> Outputs:
        """F's block outputs, F's logits and H's logits from F's one forward."""
        stem, per_block = model.features(x)
        outputs = [layers[-1] for layers in per_block]
        g = self.aggregate(stem, select_taps(per_block, self.granularity))
        return outputs, model.head(outputs[-1]), self.classifier(g)
