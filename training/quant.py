"""Brevitas quantizer definitions: the one place that knows bit widths, scaling and narrow range.

Each quantizer is composed from Brevitas' own mixins, so a bit width or a scaling rule changes in one
line. The choices are dictated by what FINN can turn into integer-only RTL on a DSP48E1 part:

* weights are signed and narrow-range (2-bit narrow = ternary), because FINN's RTL MVAU on DSP48E1 only
  takes narrow-range signed weights (full-range 2-bit weights fall back to HLS);
* low-bit weight scales are learned per output channel, initialised from mean |w| (a TWN-like ternary
  threshold at half the mean magnitude); FINN folds per-channel scales into the next thresholds;
* the 16-bit first conv and last FC use a per-tensor max-scaled quantizer: the last FC's scale times the
  last activation scale is then one scalar, the logit scale that stays on the host;
* low-bit weights use Brevitas' straight-through clamp (``TensorClampSte``) by default: Brevitas solves a
  learned-scale quantizer to a plain ``TensorClamp``, which gives every weight beyond the clamp (about a
  quarter of the ternary weights after pre-training, bench/results/zero_grad.json) a zero gradient, so
  they could never move back; with the STE clamp the scale still learns (LSQ-style), and
  ``model.weight_clamp: clamp`` restores Brevitas' default;
* the learned low-bit scale is linear by default (Brevitas' default, and every benchmark record so far);
  ``model.weight_scale: log`` learns its log2 instead (Brevitas' ``RestrictValueType.LOG_FP``). Behind
  the next BatchNorm the network barely depends on a channel's scale, and Adam moves a linear scale by
  about the learning rate per step whatever its size, so long fine-tuning can walk it to ~0 or through 0
  (Brevitas uses its absolute value); in the log domain a step changes it by a fixed ratio instead;
* activations are unsigned k-bit with a learned per-tensor scale (PACT-like), which FINN turns into
  MultiThreshold nodes together with the preceding BatchNorm.
"""

from __future__ import annotations

from brevitas.core.function_wrapper import TensorClamp, TensorClampSte
from brevitas.inject.enum import RestrictValueType, ScalingImplType, StatsOp
from brevitas.quant.base import NarrowIntQuant, PerChannelFloatScaling8bit
from brevitas.quant.scaled_int import Int8WeightPerTensorFloat, Uint8ActPerTensorFloatMaxInit
from brevitas.quant.solver import WeightQuantSolver


class LowBitWeightQuant(NarrowIntQuant, PerChannelFloatScaling8bit, WeightQuantSolver):
    """Signed narrow-range k-bit weights, learned per-channel scale initialised from mean |w|."""

    scaling_impl_type = ScalingImplType.PARAMETER_FROM_STATS
    scaling_stats_op = StatsOp.AVE
    scaling_min_val = 1e-8


class WideWeightQuant(Int8WeightPerTensorFloat):
    """Signed narrow-range weights (16 bit by default) with a per-tensor max-statistics scale."""

    bit_width = 16


class LowBitActQuant(Uint8ActPerTensorFloatMaxInit):
    """Unsigned k-bit activations with a learned per-tensor scale initialised from ``max_val``."""


CLAMPS = {"ste": TensorClampSte, "clamp": TensorClamp}
SCALE_DOMAINS = {"linear": RestrictValueType.FP, "log": RestrictValueType.LOG_FP}


def weight_quant(bits: int, wide: bool, clamp: str = "ste", scale: str = "linear") -> type:
    """The weight quantizer for a layer: ``wide`` marks the first conv and the last FC (max-scaled, so
    nothing is ever clamped); ``clamp`` ("ste" or "clamp") is the low-bit weights' clamp and ``scale``
    ("linear" or "log") the domain their learned scale lives in."""
    if wide:
        return WideWeightQuant.let(bit_width=bits)
    return LowBitWeightQuant.let(bit_width=bits, tensor_clamp_impl=CLAMPS[clamp],
                                 restrict_scaling_type=SCALE_DOMAINS[scale])


def act_quant(bits: int, max_val: float) -> type:
    """The activation quantizer of every QuantReLU."""
    return LowBitActQuant.let(bit_width=bits, max_val=max_val)
