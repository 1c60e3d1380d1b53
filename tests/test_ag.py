"""AG: H's structure and gradient against a hand-written H, BN isolation, the deployable F."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as tf
from torch import nn

from training.ag import AuxiliaryGradientModule
from training.config import Config, config_from_dict
from training.models import build_model
from training.objective import build_objective
from training.precision import full_precision, precision_state

TINY_MODEL = {
    "image_size": 8, "stem_channels": 4, "widths": [4, 8, 8], "depths": [1, 1, 1], "strides": [2, 2, 1],
}


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


def bn_train(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return tf.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)


def conv_bn(x: torch.Tensor, seq: nn.Sequential) -> torch.Tensor:
    conv, bn = seq
    return bn_train(tf.conv2d(x, conv.weight, stride=conv.stride), bn)


def hand_logits(model: nn.Module, x: torch.Tensor, bns: list, head_bn: nn.Module, ag=None) -> torch.Tensor:
    """F (ag=None) or H written out with functional ops, full precision, for the tiny plain model."""
    out = tf.conv2d(x, model.stem.weight, padding=1)
    taps = []
    for block, bn in zip(model.blocks, bns, strict=True):
        conv = block.layers[0].conv
        out = tf.conv2d(torch.relu(bn_train(out, bn)), conv.weight, stride=conv.stride, padding=1)
        taps.append(out)
    if ag is not None:  # Eq. 1: g1 = phi1(O1); g2 = phi2(O2) + proj(g1); g3 = phi3(O3) + g2
        g = conv_bn(taps[0], ag.adaptors[0])
        g = conv_bn(taps[1], ag.adaptors[1]) + conv_bn(g, ag.projections[0])
        out = conv_bn(taps[2], ag.adaptors[2]) + g
    return tf.linear(torch.flatten(torch.relu(bn_train(out, head_bn)), 1), model.head.fc.weight)


def shared_weights(model: nn.Module) -> list[torch.Tensor]:
    return [model.stem.weight, *(b.layers[0].conv.weight for b in model.blocks), model.head.fc.weight]


def test_projection_only_where_shape_changes():
    cfg = tiny_config()
    ag = build_objective(build_model(cfg.model), cfg).ag
    assert isinstance(ag.projections[0][0], nn.Conv2d) and ag.projections[0][0].stride == (2, 2)
    assert isinstance(ag.projections[1], nn.Identity)
    assert len(ag.adaptors) == 3 and all(a[0].kernel_size == (1, 1) for a in ag.adaptors)


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_shared_weight_gradient_is_that_of_l1_plus_lambda_l2_by_hand(lam):
    cfg = tiny_config(ag={"lam": lam})
    model = build_model(cfg.model)
    objective = build_objective(model, cfg)
    x, y = batch()
    with full_precision(model):  # the hand-written network has no quantizer
        loss, _ = objective(x, y, 0.0)
    loss.backward()
    ag = objective.ag
    f_bns = [b.layers[0].bn for b in model.blocks]
    h_bns = [bns[0] for bns in ag.bns]
    l1 = tf.cross_entropy(hand_logits(model, x, f_bns, model.head.bn), y)
    l2 = tf.cross_entropy(hand_logits(model, x, h_bns, ag.head_bn, ag), y)
    torch.testing.assert_close(loss, l1 + lam * l2)
    expected = torch.autograd.grad(l1 + lam * l2, shared_weights(model))
    for weight, grad in zip(shared_weights(model), expected, strict=True):
        assert grad.abs().sum() > 0
        torch.testing.assert_close(weight.grad, grad, rtol=1e-5, atol=1e-7)


def test_quantized_gradient_is_sum_of_separate_passes():
    """With quantizers on, the joint step equals dL1 + lam dL2 from F and H run on their own."""
    cfg = tiny_config(ag={"lam": 0.5})
    model = build_model(cfg.model)
    objective = build_objective(model, cfg)
    x, y = batch()
    reference = copy.deepcopy(objective)
    loss, _ = objective(x, y, 0.0)
    loss.backward()
    ref_model = reference.model
    l1 = tf.cross_entropy(ref_model(x), y)
    l2 = tf.cross_entropy(reference.ag(ref_model, x), y)
    params = [p for p in ref_model.parameters() if p.requires_grad]
    expected = torch.autograd.grad(l1 + 0.5 * l2, params, allow_unused=True)
    for (name, param), grad in zip(model.named_parameters(), expected, strict=True):
        assert grad is not None, name
        torch.testing.assert_close(param.grad, grad, rtol=1e-5, atol=1e-7, msg=name)


def test_h_owns_no_weight_of_f_and_uses_all_of_them():
    cfg = tiny_config(ag={"granularity": "layer"}, model={"convs_per_block": 2, "arch": "residual"})
    model = build_model(cfg.model)
    ag = AuxiliaryGradientModule(model, "layer")
    f_tensors = {t.data_ptr() for t in model.state_dict().values()}
    assert not f_tensors & {t.data_ptr() for t in ag.state_dict().values()}
    assert len(ag.adaptors) == 6  # one per conv layer
    x, y = batch()
    tf.cross_entropy(ag(model, x), y).backward()
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in convs)
    assert all(p.grad is None for n, p in model.named_parameters() if ".bn." in n)  # F's BN: not H's


def bn_buffers(module: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for m in module.modules() if isinstance(m, nn.BatchNorm2d) for b in m.buffers()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_bn_running_statistics_are_private():
    cfg = tiny_config()
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


def test_deployable_f_equals_f_inside_the_wrapper():
    cfg = tiny_config(ssp={"enabled": True})
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


@pytest.mark.parametrize("granularity", ["block", "layer"])
def test_fused_step_equals_two_separate_passes(granularity):
    common = {
        "model": {"arch": "residual", "convs_per_block": 2},
        "ssp": {"enabled": True, "fragment": "layer", "weights_activations": True},
        "baseline": {"aux_losses": True},
    }
    naive_cfg = tiny_config(ag={"granularity": granularity}, **common)
    fused_cfg = tiny_config(ag={"granularity": granularity, "fused": True}, **common)
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
