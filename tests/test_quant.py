"""Integer levels after training: ternary (k-bit narrow) low-bit weights, 16-bit first/last layers,
unsigned k-bit activations, checked on F's actual tensors after a few AG + SSP training steps."""

from __future__ import annotations

import pytest
import torch
from brevitas.nn import QuantReLU

from tests.test_ag import batch, tiny_config
from training.models import build_model
from training.objective import build_objective


@pytest.fixture(scope="module", params=[2, 3], ids=["2bit", "3bit"])
def trained(request):
    """F after 6 Adam steps of AG + SSP (delta 0.5 -> 0 within the steps), in eval mode."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    bits = request.param
    cfg = tiny_config(model={"weight_bits": bits, "act_bits": bits},
                      ssp={"enabled": True, "weights_activations": True, "decay_epochs": 1.0})
    objective = build_objective(build_model(cfg.model), cfg)
    optimizer = torch.optim.Adam(objective.parameters(), 1e-2)
    for step in range(6):
        x, y = batch(32, seed=step)
        loss, _ = objective(x, y, step / 5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return bits, objective.eval().deployable()


def integer_levels(quant) -> torch.Tensor:
    """The integers of a QuantTensor, checked to be exactly what its float value encodes."""
    levels = quant.int().to(torch.int64)
    torch.testing.assert_close(quant.value, levels * quant.scale, rtol=1e-6, atol=0.0)
    return levels


def test_low_bit_weights_take_narrow_signed_levels(trained):
    bits, model = trained
    top = 2 ** (bits - 1) - 1  # narrow range: 2 bit -> {-1, 0, 1}
    for layer in model.quant_layers():
        quant = layer.conv.quant_weight()
        assert int(quant.bit_width) == bits
        levels = integer_levels(quant)
        assert set(levels.unique().tolist()) <= set(range(-top, top + 1))
        assert levels.min() == -top and levels.max() == top  # not degenerate


def test_first_conv_and_last_fc_are_16_bit(trained):
    _, model = trained
    for layer in (model.stem, model.head.fc):
        quant = layer.quant_weight()
        assert int(quant.bit_width) == 16
        levels = integer_levels(quant)
        assert levels.abs().max() == 32767  # per-tensor max scaling uses the whole narrow range


def test_activations_are_unsigned_k_bit(trained):
    bits, model = trained
    seen = []

    def check(module: QuantReLU, inputs: tuple, output: torch.Tensor) -> None:
        quant = module.act_quant(inputs[0])
        torch.testing.assert_close(output, quant.value, rtol=0.0, atol=0.0)
        levels = integer_levels(quant)
        assert levels.min() >= 0 and levels.max() <= 2**bits - 1
        seen.append(levels.unique().numel())

    acts = [m for m in model.modules() if isinstance(m, QuantReLU)]
    hooks = [m.register_forward_hook(check) for m in acts]
    with torch.no_grad():
        model(batch(32, seed=99)[0])
    for hook in hooks:
        hook.remove()
    assert len(seen) == len(acts) == 4 and max(seen) == 2**bits
