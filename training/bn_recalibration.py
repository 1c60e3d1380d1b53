"""Evaluate SSP's stochastic epochs with BN statistics of the network that is evaluated.

During an epoch in which SSP runs fragments in full precision (delta > 0), F's BN running statistics
average over batches of mixed precision, while the F evaluated after the epoch is fully quantized: it
normalises with statistics of another network and scores near chance (the first SSP curve of the
benchmark's Fig. 3 sat at 10 % until delta reached 0). For that evaluation only, a copy of the training
objective re-estimates every BN layer's statistics over a few training batches with every fragment
quantized (a cumulative average, BN's ``momentum=None``) and is evaluated instead. The trained objective,
its RNG streams and its checkpoint are untouched, so training and every number after delta reaches 0
are the same as without it. Brevitas and torch have no such step; it is written here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from agq.training.objective import TrainingObjective
from torch import nn

CALIBRATION_BATCHES = 32  # 4,096 images at batch 128: enough for per-channel means of a few hundred channels


@torch.no_grad()
def recalibrated(objective: TrainingObjective, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 steps: int) -> TrainingObjective:
    """A copy of ``objective`` (in eval mode, every fragment quantized) whose BN layers hold the mean and
    variance of their inputs over the first ``steps`` of ``batches``."""
    clone = copy.deepcopy(objective).eval()
    norms = [m for m in clone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    for i, (x, _) in enumerate(batches):
        if i == steps:
            break
        clone.evaluate(x)
    for norm in norms:
        norm.eval()
    return clone
