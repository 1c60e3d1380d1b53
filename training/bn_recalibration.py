"""Re-estimate BN statistics after SSP's mixed-precision epochs, for the network that is evaluated and saved;
and freeze them for the last fine-tuning epochs (``train.bn_freeze_epochs``).

During an epoch in which SSP runs fragments in full precision (delta > 0), F's BN running statistics
average over batches of mixed precision, while the F evaluated and saved after the epoch is fully
quantized: it normalises with statistics of another network and scores near chance (the first SSP curve of
the benchmark's Fig. 3 sat at 10 % until delta reached 0). After such an epoch every BN layer's statistics
are re-estimated over a few training batches with every fragment quantized (a cumulative average, BN's
``momentum=None``). Running statistics are buffers that training-mode BN never reads, so the gradients
and weights of training are unchanged; the checkpoint of the epoch holds the statistics of the network it
holds. Brevitas and torch have no such step; it is written here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

CALIBRATION_BATCHES = 32  # 4,096 images at batch 128: enough for per-channel means of a few hundred channels


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BN layer in ``module``, in module order."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_bn(module: nn.Module) -> None:
    """Put every BN layer of ``module`` in eval mode inside a training epoch: it normalises with its
    running statistics and no longer updates them, while its affine weights still learn. Quantization-aware
    training commonly ends so (PyTorch's QAT freezes BN statistics too): F then trains on exactly the
    normalisation it is evaluated and deployed with, instead of each batch's own statistics."""
    for norm in batch_norms(module):
        norm.eval()


@torch.no_grad()
def recalibrate_bn(module: nn.Module, forward: Callable[[torch.Tensor], object],
                   batches: Iterable[tuple[torch.Tensor, torch.Tensor]], steps: int) -> None:
    """Set every BN layer of ``module`` (in eval mode otherwise; a training objective runs every fragment
    quantized) to the mean and variance of its inputs over the first ``steps`` of ``batches``, run through
    ``forward`` (a training objective's ``evaluate``, or a network itself); the layers' momentum and mode
    return."""
    norms = batch_norms(module)
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    try:
        for i, (x, _) in enumerate(batches):
            if i == steps:
                break
            forward(x)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
            norm.eval()
