"""Stochastic Structured Precision (paper section 3.2, Algorithm 2).

Every training iteration F is split at random into a quantized and a full-precision set of fragments:
fragment i is quantized with probability 1 - delta. delta decays linearly from ``delta_start`` to 0,
reached after ``decay_epochs`` fine-tuning epochs (fractional progress, so it moves every iteration);
from then on all of F is quantized (Algorithm 2, line 7: no draw at all).

Choices where the paper is silent:

* **Fragments.** ``block`` (blockdrop): each block of F, including its residual shortcut conv if any.
  ``layer`` (layerdrop): each pre-activation conv layer (its QuantReLU and QuantConv) and each residual
  shortcut conv. The 16-bit stem conv and the head (its QuantReLU and 16-bit FC) are never fragments: they
  stay quantized, so only the low-bit part of F is relaxed.
* **W/A variant.** The indicator matrix B (N x 2) has two independent draws per fragment: column 0 decides
  the weight quantizers, column 1 the activation quantizers. Without W/A one draw decides both.
* **Switching.** Brevitas' own ``disable_quant`` flags via :func:`training.precision.set_precision`;
  no module is swapped. :meth:`StochasticPrecision.sampled` restores full quantization when the step's
  forward passes are done, so evaluation, checkpoints and export always see F fully quantized (the
  autograd graph is already recorded, so backward is unaffected).
* **Randomness.** A private ``torch.Generator`` seeded with ``train.seed``: the global RNG (data order,
  augmentation) does not depend on whether SSP is on, every DDP rank draws the same masks, and the
  generator state is part of the state_dict (``get_extra_state``) so a resumed run draws the same masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from agq.training.config import SSPConfig
from agq.training.models import QuantCNN
from agq.training.precision import set_precision
from brevitas.nn import QuantConv2d
from torch import nn


def ssp_delta(progress: float, delta_start: float, decay_epochs: float) -> float:
    """delta after ``progress`` fine-tuning epochs: linear from ``delta_start`` to 0 at ``decay_epochs``."""
    if decay_epochs <= 0:
        return 0.0
    return delta_start * max(0.0, 1.0 - progress / decay_epochs)


def fragments(model: QuantCNN, kind: Literal["block", "layer"]) -> list[nn.Module]:
    """F's fragments in forward order: blocks, or conv layers plus residual shortcut convs."""
    if kind == "block":
        return list(model.blocks)
    parts: list[nn.Module] = []
    for block in model.blocks:
        parts += list(block.layers)
        if isinstance(block.shortcut, QuantConv2d):
            parts.append(block.shortcut)
    return parts


class StochasticPrecision(nn.Module):
    """Samples and applies the per-iteration precision of F's fragments.

    F's fragments are referenced, not registered, so the module's state is only the generator's.
    """

    def __init__(self, model: QuantCNN, cfg: SSPConfig, seed: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.fragments = fragments(model, cfg.fragment)
        self.generator = torch.Generator().manual_seed(seed)

    def delta(self, progress: float) -> float:
        return ssp_delta(progress, self.cfg.delta_start, self.cfg.decay_epochs)

    def sample(self, progress: float) -> torch.Tensor:
        """The indicator matrix B (fragments x [weights, acts]), True = quantized, P(True) = 1 - delta."""
        n = len(self.fragments)
        delta = self.delta(progress)
        if delta == 0.0:
            return torch.ones(n, 2, dtype=torch.bool)
        columns = 2 if self.cfg.weights_activations else 1
        draws = torch.rand(n, columns, generator=self.generator) >= delta
        return draws.expand(n, 2) if columns == 1 else draws

    def set_mask(self, mask: torch.Tensor) -> None:
        """Switch every fragment's quantizers as ``mask`` says (not named ``apply``: that is
        ``nn.Module.apply``, which ``objective.apply(fn)`` calls on every submodule)."""
        for fragment, (weights, acts) in zip(self.fragments, mask.tolist(), strict=True):
            set_precision(fragment, weights=weights, acts=acts)

    @contextmanager
    def sampled(self, progress: float) -> Iterator[torch.Tensor]:
        """Run the body with a freshly drawn precision, then quantize every fragment again."""
        mask = self.sample(progress)
        self.set_mask(mask)
        try:
            yield mask
        finally:
            self.set_mask(torch.ones_like(mask))

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())
