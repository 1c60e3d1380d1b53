"""The low-bit weight clamp (straight-through or not) and the clipped full-precision activations."""

from __future__ import annotations

import pytest
import torch
from agq.training.config import ModelConfig
from agq.training.models import build_model
from agq.training.precision import clipped_activations, full_precision
from agq.training.quant import weight_quant
from brevitas.nn import QuantConv2d, QuantReLU


@pytest.mark.parametrize(("clamp", "passes"), [("ste", True), ("clamp", False)])
def test_straight_through_clamp_passes_gradient_beyond_the_clamp(clamp, passes):
    conv = QuantConv2d(4, 1, 1, bias=False, weight_quant=weight_quant(2, wide=False, clamp=clamp))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.1, 0.2, 0.3, 3.0]).view(1, 4, 1, 1))
    scale = float(conv.quant_weight().scale)  # mean |w| = 0.9: the clamp is at 1.5 * 0.9
    assert 3.0 > 1.5 * scale > 0.3
    conv(torch.ones(1, 4, 1, 1)).sum().backward()
    grad = conv.weight.grad.flatten()
    assert bool(grad[3] != 0) == passes  # the weight beyond the clamp
    assert bool((grad[:3] != 0).all())  # weights inside the clamp get a gradient either way
    assert conv.weight_quant.tensor_quant.scaling_impl.value.grad is not None  # the scale still learns


def test_wide_weights_are_never_clamped():
    conv = QuantConv2d(4, 1, 1, bias=False, weight_quant=weight_quant(16, wide=True))
    conv(torch.ones(1, 4, 1, 1)).sum().backward()
    assert bool((conv.weight.grad != 0).all())


def largest_relu_output(model, x: torch.Tensor) -> float:
    """The largest value any QuantReLU of ``model`` returns (observed after every hook registered so far)."""
    outputs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out))
               for m in model.modules() if isinstance(m, QuantReLU)]
    model(x)
    for handle in handles:
        handle.remove()
    assert len(outputs) == len(handles) == 2
    return max(float(o.max()) for o in outputs)


def test_clipped_activations_clip_full_precision_relus_then_restore():
    model = build_model(ModelConfig(image_size=8, stem_channels=4, widths=[4], depths=[1], strides=[1]))
    x = torch.rand(4, 1, 8, 8) * 255
    with full_precision(model):
        assert largest_relu_output(model, x) > 2.0  # an unclipped ReLU exceeds the clip here
        with clipped_activations(model, 2.0):
            assert largest_relu_output(model, x) == pytest.approx(2.0)
        assert largest_relu_output(model, x) > 2.0  # hooks removed
