"""AG, both designs: H's gradient against a hand-written H, F untouched by the wrapper, BN, call counts."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as tf
from agq.training.ag_one_pass import OnePassAG
from agq.training.ag_two_pass import TwoPassAG
from agq.training.config import Config, config_from_dict
from agq.training.models import build_model
from agq.training.objective import build_objective
from agq.training.precision import full_precision, precision_state
from brevitas.nn import QuantConv2d
from torch import nn

TINY_MODEL = {
    "image_size": 8, "stem_channels": 4, "widths": [4, 8, 8], "depths": [1, 1, 1], "strides": [2, 2, 1],
}
DESIGNS = ("one_pass", "two_pass")


def tiny_config(**sections: dict) -> Config:
    """An 8x8 digits-sized 3-block F: widths change at block 2, not at block 3 (identity projection)."""
    data = {"model": dict(TINY_MODEL), "ssp": {"enabled": False}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return config_from_dict(data)


def batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen) * 255, torch.randint(0, 10, (n,), generator=gen)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture
def float64():
    """Both sides in double precision: in float32 the autograd and the hand-written graphs sum in different
    orders, and their gradients differ by a few ulp from machine to machine (AVX2 vs AVX-512 kernels)."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def bn_train(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return tf.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)


def conv_bn(x: torch.Tensor, seq: nn.Sequential) -> torch.Tensor:
    conv, bn = seq
    return bn_train(tf.conv2d(x, conv.weight, stride=conv.stride), bn)


def hand_chain(model: nn.Module, x: torch.Tensor, bns: list) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The stem's output and O_1..O_3 of the tiny plain model, full precision, with the given BNs."""
    stem = out = tf.conv2d(x, model.stem.weight, padding=1)
    taps = []
    for block, bn in zip(model.blocks, bns, strict=True):
        conv = block.layers[0].conv
        out = tf.conv2d(torch.relu(bn_train(out, bn)), conv.weight, stride=conv.stride, padding=1)
        taps.append(out)
    return stem, taps


def f_head(model: nn.Module, out: torch.Tensor, head_bn: nn.Module) -> torch.Tensor:
    return tf.linear(torch.flatten(torch.relu(bn_train(out, head_bn)), 1), model.head.fc.weight)


def hand_two_pass(model: nn.Module, x: torch.Tensor, ag: TwoPassAG) -> torch.Tensor:
    """H of the two-pass design: g1 = phi1(O1); g2 = phi2(O2) + proj(g1); g3 = phi3(O3) + g2."""
    _, taps = hand_chain(model, x, [bns[0] for bns in ag.bns])
    g = conv_bn(taps[0], ag.adaptors[0])
    g = conv_bn(taps[1], ag.adaptors[1]) + conv_bn(g, ag.projections[0])
    g = conv_bn(taps[2], ag.adaptors[2]) + g
    if ag.classifier is None:
        return f_head(model, g, ag.head_bn)
    fc = ag.classifier[1]
    return tf.linear(torch.flatten(torch.relu(bn_train(g, ag.head_bn)), 1), fc.weight, fc.bias)


def hand_one_pass(model: nn.Module, x: torch.Tensor, ag: OnePassAG) -> torch.Tensor:
    """H of the one-pass design on F's own (F's BN) maps: g0 = phi0(stem) (stride 2, to O1's shape),
    g1 = relu(g0 + phi1(O1)), g2 = relu(proj(g1) + phi2(O2)), g3 = relu(g2 + phi3(O3))."""
    stem, taps = hand_chain(model, x, [b.layers[0].bn for b in model.blocks])
    g = torch.relu(conv_bn(stem, ag.stem_adaptor) + conv_bn(taps[0], ag.adaptors[0]))
    g = torch.relu(conv_bn(g, ag.projections[0]) + conv_bn(taps[1], ag.adaptors[1]))
    g = torch.relu(g + conv_bn(taps[2], ag.adaptors[2]))
    fc = ag.classifier[1]
    return tf.linear(torch.flatten(g, 1), fc.weight, fc.bias)


def hand_f(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    _, taps = hand_chain(model, x, [b.layers[0].bn for b in model.blocks])
    return f_head(model, taps[-1], model.head.bn)


def shared_weights(model: nn.Module) -> list[torch.Tensor]:
    return [model.stem.weight, *(b.layers[0].conv.weight for b in model.blocks), model.head.fc.weight]


@pytest.mark.parametrize("design", DESIGNS)
def test_projection_only_where_shape_changes(design):
    cfg = tiny_config(ag={"design": design})
    ag = build_objective(build_model(cfg.model), cfg).ag
    assert isinstance(ag.projections[0][0], nn.Conv2d) and ag.projections[0][0].stride == (2, 2)
    assert isinstance(ag.projections[1], nn.Identity)
    assert len(ag.adaptors) == 3 and all(a[0].kernel_size == (1, 1) for a in ag.adaptors)
    if design == "one_pass":  # g_0 goes straight to O_1's shape: block 1 downsamples 4 -> 4 channels
        assert ag.stem_adaptor[0].stride == (2, 2) and ag.stem_adaptor[0].out_channels == 4


@pytest.mark.parametrize(("design", "head", "lam"), [
    ("one_pass", "own", 1.0), ("one_pass", "own", 0.3), ("two_pass", "own", 1.0), ("two_pass", "own", 0.3),
    ("two_pass", "shared", 1.0),
])
def test_shared_weight_gradient_is_that_of_l1_plus_lambda_l2_by_hand(design, head, lam, float64):
    cfg = tiny_config(ag={"design": design, "head": head, "lam": lam})
    model = build_model(cfg.model)
    objective = build_objective(model, cfg)
    x, y = batch()
    assert model.stem.weight.dtype == x.dtype == torch.float64
    with full_precision(model):  # the hand-written network has no quantizer
        loss, _ = objective(x, y, 0.0)
    loss.backward()
    hand_h = hand_one_pass if design == "one_pass" else hand_two_pass
    l1 = tf.cross_entropy(hand_f(model, x), y)
    l2 = tf.cross_entropy(hand_h(model, x, objective.ag), y)
    torch.testing.assert_close(loss, l1 + lam * l2)
    expected = torch.autograd.grad(l1 + lam * l2, shared_weights(model), retain_graph=True)
    for weight, grad in zip(shared_weights(model), expected, strict=True):
        assert grad.abs().sum() > 0
        torch.testing.assert_close(weight.grad, grad, rtol=1e-10, atol=1e-13)
    # and L2 really contributes: without it the gradient of the stem differs
    (only_l1,) = torch.autograd.grad(l1, [model.stem.weight])
    assert not torch.allclose(only_l1, model.stem.weight.grad)


@pytest.mark.parametrize("design", DESIGNS)
def test_quantized_gradient_is_sum_of_separate_losses(design):
    """With quantizers on, the objective's gradient equals dL1 + lam dL2 of F and H computed on their own."""
    cfg = tiny_config(ag={"design": design, "lam": 0.5})
    model = build_model(cfg.model)
    objective = build_objective(model, cfg)
    x, y = batch()
    reference = copy.deepcopy(objective)
    loss, _ = objective(x, y, 0.0)
    loss.backward()
    ref_model = reference.model
    _, f_logits, h_logits = reference.ag.run(ref_model, x)
    torch.testing.assert_close(f_logits, ref_model(x))  # F inside the wrapper is F
    l1, l2 = tf.cross_entropy(f_logits, y), tf.cross_entropy(h_logits, y)
    params = [p for p in reference.parameters() if p.requires_grad]
    expected = torch.autograd.grad(l1 + 0.5 * l2, params, allow_unused=True)
    for (name, param), grad in zip(objective.named_parameters(), expected, strict=True):
        assert (param.grad is None) == (grad is None), name
        if grad is not None:
            torch.testing.assert_close(param.grad, grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("design", DESIGNS)
def test_h_owns_no_weight_of_f_and_uses_all_convs(design):
    cfg = tiny_config(ag={"design": design, "granularity": "layer"},
                      model={"convs_per_block": 2, "arch": "residual"})
    model = build_model(cfg.model)
    ag = build_objective(model, cfg).ag
    f_tensors = {t.data_ptr() for t in model.state_dict().values()}
    assert not f_tensors & {t.data_ptr() for t in ag.state_dict().values()}
    assert len(ag.adaptors) == 6  # one per conv layer
    x, y = batch()
    _, _, h_logits = ag.run(model, x)
    tf.cross_entropy(h_logits, y).backward()
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in convs)
    assert model.head.fc.weight.grad is None  # H has its own classifier
    f_bn_grads = [p.grad for n, p in model.named_parameters() if ".bn." in n and "head" not in n]
    if design == "one_pass":  # H taps F's forward: L2 reaches F's BN
        assert all(g is not None and g.abs().sum() > 0 for g in f_bn_grads)
    else:  # H has private BN
        assert all(g is None for g in f_bn_grads)


def bn_buffers(module: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for m in module.modules() if isinstance(m, nn.BatchNorm2d) for b in m.buffers()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_two_pass_bn_running_statistics_are_private():
    cfg = tiny_config(ag={"design": "two_pass"})
    model = build_model(cfg.model)
    objective = build_objective(model, cfg).train()
    x, _ = batch()
    f_before, h_before = bn_buffers(model), bn_buffers(objective.ag)
    objective.ag(model, x)
    assert same(bn_buffers(model), f_before)
    assert not same(bn_buffers(objective.ag), h_before)
    h_after = bn_buffers(objective.ag)
    model(x)
    assert same(bn_buffers(objective.ag), h_after)
    assert not same(bn_buffers(model), f_before)


@pytest.mark.parametrize("copy_bn", [True, False])
def test_two_pass_h_bn_starts_as_f_bn_where_configured(copy_bn):
    cfg = tiny_config(ag={"design": "two_pass", "copy_bn": copy_bn})
    model = build_model(cfg.model).train()
    model(batch()[0])  # F's BN away from its initial state, as after pre-training
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    ag = build_objective(model, cfg).ag
    f_bns = [layer.bn for block in model.blocks for layer in block.layers] + [model.head.bn]
    h_bns = [bn for bns in ag.bns for bn in bns] + [ag.head_bn]
    for f_bn, h_bn in zip(f_bns, h_bns, strict=True):
        f_state, h_state = f_bn.state_dict(), h_bn.state_dict()
        if copy_bn:
            assert all(torch.equal(f_state[k], h_state[k]) for k in f_state)
            assert h_bn.weight.data_ptr() != f_bn.weight.data_ptr()  # a copy, not the same tensor
        else:
            assert torch.equal(h_state["weight"], torch.ones_like(f_bn.weight))
            assert torch.equal(h_state["running_mean"], torch.zeros_like(f_bn.running_mean))


@pytest.mark.parametrize("design", DESIGNS)
def test_f_outputs_and_state_are_unchanged_by_the_wrapper(design):
    """F's logits and F's BN running statistics after a training forward are those of F alone."""
    cfg = tiny_config(ag={"design": design})
    model = build_model(cfg.model)
    objective = build_objective(model, cfg).train()
    alone = copy.deepcopy(model).train()
    x, y = batch()
    _, logits = objective(x, y, 0.0)
    assert torch.equal(logits["F"], alone(x))
    assert same(bn_buffers(model), bn_buffers(alone))
    assert set(objective.model.state_dict()) == set(alone.state_dict())


def conv_calls(model: nn.Module) -> dict[str, int]:
    """Count forward calls of F's convolutions (stem and every low-bit conv)."""
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantConv2d):
            counts[name] = 0
            module.register_forward_hook(
                lambda _m, _i, _o, name=name: counts.__setitem__(name, counts[name] + 1))
    return counts


@pytest.mark.parametrize(("design", "calls"), [("one_pass", 1), ("two_pass", 2)])
def test_f_convolutions_run_once_per_step_in_one_pass(design, calls):
    cfg = tiny_config(ag={"design": design})
    model = build_model(cfg.model)
    objective = build_objective(model, cfg)
    counts = conv_calls(model)
    loss, _ = objective(*batch(), 0.0)
    loss.backward()
    assert len(counts) == 4 and set(counts.values()) == {calls}


@pytest.mark.parametrize("design", DESIGNS)
def test_deployable_f_equals_f_inside_the_wrapper(design):
    cfg = tiny_config(ag={"design": design}, ssp={"enabled": True})
    model = build_model(cfg.model)
    objective = build_objective(model, cfg)
    optimizer = torch.optim.Adam(objective.parameters(), 1e-2)
    for step in range(3):
        x, y = batch(seed=step)
        loss, _ = objective(x, y, step / 4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    objective.eval()
    deployable = objective.deployable()
    assert deployable is model and all(precision_state(deployable))
    state = deployable.state_dict()
    wrapper_keys = {k for k in objective.state_dict() if not k.startswith("model.")}
    assert wrapper_keys and all(k.split(".")[0] in {"ag", "ssp"} for k in wrapper_keys)
    assert set(state) == {k.removeprefix("model.") for k in objective.state_dict() if k.startswith("model.")}
    fresh = build_model(cfg.model)
    fresh.load_state_dict(state, strict=True)
    x, _ = batch(seed=9)
    inside = objective.evaluate(x)["F"]
    assert torch.equal(deployable(x), inside)
    assert torch.equal(fresh.eval()(x), inside)


@pytest.mark.parametrize("head", ["own", "shared"])
@pytest.mark.parametrize("granularity", ["block", "layer"])
def test_fused_step_equals_two_separate_passes(granularity, head):
    common = {
        "model": {"arch": "residual", "convs_per_block": 2},
        "ssp": {"enabled": True, "fragment": "layer", "weights_activations": True},
        "baseline": {"aux_losses": True},
    }
    ag = {"design": "two_pass", "granularity": granularity, "head": head}
    naive_cfg = tiny_config(ag=ag, **common)
    fused_cfg = tiny_config(ag={**ag, "fused": True}, **common)
    naive = build_objective(build_model(naive_cfg.model), naive_cfg)
    fused = build_objective(copy.deepcopy(naive.model), fused_cfg)
    fused.load_state_dict(naive.state_dict())  # same H parameters and SSP generator
    for step in range(3):
        x, y = batch(seed=step)
        naive_loss, naive_logits = naive(x, y, 0.0)
        fused_loss, fused_logits = fused(x, y, 0.0)
        for key in ("F", "H"):
            assert torch.equal(naive_logits[key], fused_logits[key]), key
        assert torch.equal(naive_loss, fused_loss)
        naive_loss.backward()
        fused_loss.backward()
    assert same(bn_buffers(naive), bn_buffers(fused))
    for (name, a), b in zip(naive.named_parameters(), fused.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)
