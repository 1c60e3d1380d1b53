"""The fine-tuning objective: F plus whatever training adds (AG's H, SSP, KD teacher, additional losses).

The loop builds it once after full-precision pre-training (and, with ``ag.pretrain``, an AG-only one for
pre-training: :func:`build_pretrain_objective`), optimises ``objective.parameters()`` and calls, per
step::

    loss, logits = objective(x, y, progress)   # progress = fractional fine-tuning epoch
    loss.backward(); optimizer.step()

* ``logits``: ``{"F": ...}`` plus ``"H"`` when AG is on (for H's top-1).
* ``objective.evaluate(x)``: the same dict without grad, F fully quantized (the caller sets eval()).
* ``objective.deployable()``: F alone, fully quantized; its state_dict holds no AG/KD/aux parameter.
* ``objective.delta(progress)``: SSP's delta at that progress (0.0 without SSP), for logging.
* ``objective.state_dict()`` carries SSP's generator state (``ssp._extra_state``): load it on resume.

The loss (any combination, each term only when its config switch is on)::

    L = CE(F) + lam * CE(H)                          AG, Eq. 2
          + CE(teacher) + beta * T^2 * KL(t || s)    KD (training.baselines)
          + alpha * sum_i CE(head_i(O_i))            additional losses (training.baselines)

Choices: the AG loss is Eq. 2 as written, without Algorithm 1's 1 / (1 + lambda) on the shared weights'
gradient. That factor only rescales the shared weights' gradient, which Adam's per-parameter
normalisation cancels (up to its epsilon, and without weight decay); leaving it out keeps the gradient of
every parameter exactly that of the returned loss, which is what the tests check. With SSP, one mask is
drawn per step and F and H both run with it: H's low-precision path *is* F's modules, so H sees the F of
this step. How H is computed (one pass or two, its classifier, its BN) is ``ag.design`` (training/ag.py).
Under
DistributedDataParallel, SSP leaves the scales of the quantizers it switches off without gradient in a
step: wrap with ``find_unused_parameters=True``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as tf
from agq.training.ag import build_ag
from agq.training.baselines import AdditionalLosses, Distillation
from agq.training.config import Config
from agq.training.models import QuantCNN
from agq.training.precision import set_precision
from agq.training.ssp import StochasticPrecision
from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer as QuantWBIOL
from torch import nn


class TrainingObjective(nn.Module):
    """F as ``.model`` and the training-only parts as optional submodules ``ag``, ``ssp``, ``kd``, ``aux``."""

    def __init__(self, model: QuantCNN, cfg: Config, pretraining: bool = False) -> None:
        super().__init__()
        self.model = model
        self.lam = cfg.ag.lam
        self.ag = build_ag(model, cfg.ag) if cfg.ag.enabled else None
        self.ssp = self.kd = self.aux = None
        if pretraining:  # F's quantizers stay as the pre-training loop sets them; no SSP or baseline
            return
        self.ssp = StochasticPrecision(model, cfg.ssp, cfg.train.seed) if cfg.ssp.enabled else None
        base = cfg.baseline
        self.kd = Distillation(model, base.kd_temperature, base.kd_beta) if base.kd else None
        self.aux = AdditionalLosses(model, base.aux_alpha) if base.aux_losses else None
        set_precision(self.model, weights=True, acts=True)
        init_weight_scales(self.model)

    def delta(self, progress: float) -> float:
        """SSP's stochastic ratio at ``progress`` fine-tuning epochs (0.0 when SSP is off)."""
        return 0.0 if self.ssp is None else self.ssp.delta(progress)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, progress: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        precision = contextlib.nullcontext() if self.ssp is None else self.ssp.sampled(progress)
        with precision:
            outputs, logits = self._logits(x)
        loss = tf.cross_entropy(logits["F"], y)
        if self.ag is not None:
            loss = loss + self.lam * tf.cross_entropy(logits["H"], y)
        if self.kd is not None:
            loss = loss + self.kd.loss(x, y, logits["F"])
        if self.aux is not None:
            loss = loss + self.aux.loss(outputs, y)
        return loss, logits

    def _logits(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """F's block outputs and the logits of F (and H)."""
        if self.ag is None:
            outputs = self.model.block_outputs(x)
            return outputs, {"F": self.model.head(outputs[-1])}
        outputs, f_logits, h_logits = self.ag.run(self.model, x)
        return outputs, {"F": f_logits, "H": h_logits}

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of F as it stands (fully quantized after fine-tuning steps) and of H with AG; the caller
        chooses train()/eval()."""
        return self._logits(x)[1]

    def deployable(self) -> QuantCNN:
        """F alone (fully quantized): the network that is exported; nothing of H, KD or aux is in it."""
        return self.model


@torch.no_grad()
def init_weight_scales(model: QuantCNN) -> None:
    """Initialise every weight quantizer's scale from F's (pre-trained) weights now.

    Brevitas initialises a stats-derived scale lazily at the first quantized forward; doing it here for
    all layers makes the start of fine-tuning independent of which fragments SSP quantizes first, and
    puts every scale into F's state_dict from the start.
    """
    for layer in model.modules():
        if isinstance(layer, QuantWBIOL):
            layer.quant_weight()


def build_objective(model: QuantCNN, cfg: Config) -> TrainingObjective:
    """The fine-tuning objective for F as ``cfg`` (ag, ssp, baseline sections) asks."""
    return TrainingObjective(model, cfg)


def build_pretrain_objective(model: QuantCNN, cfg: Config) -> TrainingObjective:
    """F + H for full-precision pre-training with ``ag.pretrain`` (the authors train their booster then
    too): AG only, F's quantizers and lazily initialised scales left alone (the loop runs it inside
    :func:`training.precision.full_precision`)."""
    return TrainingObjective(model, cfg, pretraining=True)
