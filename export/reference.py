"""PyTorch's side of every equality check: captured activations, exact integer logits, one float-tie rule.

Both checks hold something against F in PyTorch: ``export.equivalence`` the exported QONNX graph,
``hw.rtlsim`` the simulated RTL. They use this module, so that both capture the same values and call
the same differences float ties.

* Capture: forward hooks on F's quantizer modules give, per module, the value it rounds and its output.
  QuantReLU applies its ReLU inside the quantizer, so the value being rounded is relu(input).
* Exact integer logits: the last layer's integer accumulators (what the last MVAU outputs), computed in
  int64 from the captured FC input codes and the FC's integer weights. Written by hand because float32
  logits cannot hold them: accumulators reach 2^20 and more, where round(logits / scale) in float32 is
  off by a sizeable fraction of one.
* Float tie: two quantized codes that differ by exactly one step where every known pre-quantization
  value lies within ``TIE_TOLERANCE_STEPS`` quantization steps of the rounding threshold between them
  (FINN-NOTES.md, "Equivalence pitfalls"). Export knows both values (PyTorch's and QONNX's), the RTL check
  only PyTorch's (the hardware compares integers with thresholds); anything else is an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from agq.export.layers import QuantLayer, output_scale, trace_quant_layers
from torch import nn

# Values closer than this (in quantization steps) to a rounding threshold sit on it up to float rounding.
# Measured noise between PyTorch and qonnx/onnxruntime BatchNorm: ~2e-6 steps; a changed weight or
# scale moves values by far more.
TIE_TOLERANCE_STEPS = 1e-4
# Images per forward pass of :func:`torch_logits`: bounds memory on a whole test split.
BATCH = 256

Captured = dict[nn.Module, tuple[np.ndarray, np.ndarray]]


def capture(model: nn.Module, modules: Sequence[nn.Module], x: np.ndarray) -> tuple[np.ndarray, Captured]:
    """F's float logits on ``x`` (N x C x H x W) and, per module, (the value it rounds, its output)."""
    seen: Captured = {}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen[module] = (torch.relu(inputs[0]).numpy(), output.numpy())

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
    finally:
        for handle in handles:
            handle.remove()
    return logits, seen


def exact_logits(
    fc_input: np.ndarray, act_scale: float, int_weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The last layer's integer accumulators and sum |a_i w_i| (which bounds their float error), in int64.

    ``fc_input`` is the quantized input of the last layer in real units, ``int_weight`` its integer
    weights (out, in).
    """
    codes = np.round(fc_input.reshape(len(fc_input), -1).astype(np.float64) / act_scale).astype(np.int64)
    return codes @ int_weight.T, np.abs(codes) @ np.abs(int_weight).T


def last_layer(layers: list[QuantLayer]) -> tuple[float, np.ndarray]:
    """F's last activation scale and the FC's integer weights (out, in) as int64: its exact last layer."""
    output_scale(layers)  # the last two layers must be the per-tensor activation and FC
    act, fc = layers[-2], layers[-1]
    return float(act.scale().item()), fc.module.quant_weight().int().numpy().astype(np.int64)


def torch_logits(model: nn.Module, images: np.ndarray, batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(exact integer logits as int64, float32 logits) of F on raw images (N x C x H x W), one pass each."""
    layers = trace_quant_layers(model, (1, *images.shape[1:]))
    act_scale, weight = last_layer(layers)
    fc = layers[-1].module
    exact, floats = [], []
    for start in range(0, len(images), batch):
        logits, seen = capture(model, [fc], images[start : start + batch])
        exact.append(exact_logits(seen[fc][0], act_scale, weight)[0])
        floats.append(logits)
    return np.concatenate(exact), np.concatenate(floats)


def rounding_threshold(code_a: np.ndarray, code_b: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """The value (real units) where rounding turns the lower of two codes into the next one."""
    return (np.minimum(code_a, code_b) + 0.5) * scale


def float_ties(code_a: np.ndarray, code_b: np.ndarray, pre_values: Sequence[np.ndarray],
               scale: np.ndarray | float) -> np.ndarray:
    """Per element: is the difference between ``code_a`` and ``code_b`` a float tie (module docstring)?

    ``pre_values`` are the known values before rounding (PyTorch's, and the other side's where it has
    one); ``scale`` the quantization step, broadcast against them.
    """
    threshold = rounding_threshold(code_a, code_b, scale)
    tie = np.abs(code_a - code_b) == 1
    for pre in pre_values:
        tie &= np.abs(pre - threshold) <= TIE_TOLERANCE_STEPS * np.broadcast_to(scale, np.shape(pre))
    return tie
