"""The low-bit weight clamp (straight-through or not) and the clipped full-precision activations."""

from __future__ import annotations

import pytest
import torch
from agq.training.config import ModelConfig
from agq.training.models import build_model
from agq.training.precision import clipped_activations, full_precision
from agq.training.quant import weight_quant
from brevitas.nn import QuantConv2d, QuantReLU


def weight_scale(conv: QuantConv2d) -> float:
    """The scale the weight quantizer uses now (its first use initialises it)."""
    return float(conv.quant_weight().scale.detach())


@pytest.mark.parametrize(("clamp", "passes"), [("ste", True), ("clamp", False)])
def test_straight_through_clamp_passes_gradient_beyond_the_clamp(clamp, passes):
    conv = QuantConv2d(4, 1, 1, bias=False, weight_quant=weight_quant(2, wide=False, clamp=clamp))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.1, 0.2, 0.3, 3.0]).view(1, 4, 1, 1))
    scale = weight_scale(conv)  # mean |w| = 0.9: the clamp is at 1.5 * 0.9
    assert 3.0 > 1.5 * scale > 0.3
    conv(torch.ones(1, 4, 1, 1)).sum().backward()
    grad = conv.weight.grad.flatten()
    assert bool(grad[3] != 0) == passes  # the weight beyond the clamp
    assert bool((grad[:3] != 0).all())  # weights inside the clamp get a gradient either way
    assert conv.weight_quant.tensor_quant.scaling_impl.value.grad is not None  # the scale still learns


def test_linear_scale_is_brevitas_default_and_log_scale_starts_from_the_same_value():
    from agq.training.quant import LowBitWeightQuant
    from brevitas.core.function_wrapper import TensorClampSte
    from brevitas.inject.enum import RestrictValueType

    assert LowBitWeightQuant.restrict_scaling_type == RestrictValueType.FP  # "linear" changes nothing
    weight = torch.randn(3, 4, 3, 3)
    x = torch.randn(2, 4, 5, 5)
    quants = {"before": LowBitWeightQuant.let(bit_width=2, tensor_clamp_impl=TensorClampSte),
              "linear": weight_quant(2, wide=False), "log": weight_quant(2, wide=False, scale="log")}
    outputs, scales = {}, {}
    for name, quant in quants.items():
        conv = QuantConv2d(4, 3, 3, bias=False, weight_quant=quant)
        with torch.no_grad():
            conv.weight.copy_(weight)
        outputs[name], scales[name] = conv(x), conv.quant_weight().scale
    assert torch.equal(outputs["before"], outputs["linear"])
    assert torch.allclose(scales["log"], weight.abs().mean((1, 2, 3), keepdim=True))  # mean |w| init
    assert torch.allclose(outputs["log"], outputs["linear"], atol=1e-6)


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_one_adam_step_larger_than_the_scale(scale):
    """A step of lr = 0.5 against a scale of about 0.2: linear goes through zero (Brevitas then uses its
    absolute value), log changes it by the factor 2 ** -0.5 and stays positive."""
    conv = QuantConv2d(4, 1, 1, bias=False, weight_quant=weight_quant(2, wide=False, scale=scale))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.1, 0.2, 0.3, 0.2]).view(1, 4, 1, 1))
    before = weight_scale(conv)  # the first use initialises the scale: mean |w| = 0.2
    assert before == pytest.approx(0.2, rel=1e-6)
    value = conv.weight_quant.tensor_quant.scaling_impl.value
    optimizer = torch.optim.Adam([value], lr=0.5)
    value.grad = torch.ones_like(value)  # any positive gradient: Adam's first step is -lr in the stored value
    optimizer.step()
    stored = float(value.detach())
    if scale == "linear":
        assert stored == pytest.approx(before - 0.5, abs=1e-5) and stored < 0
        assert weight_scale(conv) == pytest.approx(abs(stored), rel=1e-6)
    else:
        assert 2 ** stored == pytest.approx(before * 2 ** -0.5, rel=1e-5)
        assert weight_scale(conv) == pytest.approx(before * 2 ** -0.5, rel=1e-5)


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
    return max(float(o.detach().max()) for o in outputs)


def test_clipped_activations_clip_full_precision_relus_then_restore():
    model = build_model(ModelConfig(image_size=8, stem_channels=4, widths=[4], depths=[1], strides=[1]))
    x = torch.rand(4, 1, 8, 8) * 255
    with full_precision(model):
        assert largest_relu_output(model, x) > 2.0  # an unclipped ReLU exceeds the clip here
        with clipped_activations(model, 2.0):
            assert largest_relu_output(model, x) == pytest.approx(2.0)
        assert largest_relu_output(model, x) > 2.0  # hooks removed
