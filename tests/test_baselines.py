"""KD and additional losses: structure, loss values, gradients, and their composition with AG + SSP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as tf
from agq.training.config import config_from_dict
from agq.training.models import build_model
from agq.training.objective import build_objective
from agq.training.precision import full_precision, precision_state
from torch import nn

from agq.errors import AgqError
from tests.test_ag import batch, tiny_config


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def kd_objective(beta: float = 0.5, temperature: float = 2.0):
    cfg = tiny_config(ag={"enabled": False},
                      baseline={"kd": True, "kd_beta": beta, "kd_temperature": temperature})
    return build_objective(build_model(cfg.model), cfg)


def test_teacher_is_a_separate_full_precision_copy_of_f():
    objective = kd_objective()
    model, teacher = objective.model, objective.kd.teacher
    assert not any(precision_state(teacher)) and all(precision_state(model))
    assert not {p.data_ptr() for p in model.parameters()} & {p.data_ptr() for p in teacher.parameters()}
    assert not any(k.startswith("kd.") for k in objective.deployable().state_dict())
    x, _ = batch()
    with full_precision(model):
        torch.testing.assert_close(teacher(x), model(x))  # starts from F's (pre-trained) weights


def test_kd_loss_and_mutual_gradients():
    beta, t = 0.5, 2.0
    objective = kd_objective(beta, t)
    x, y = batch()
    loss, logits = objective(x, y, 0.0)
    student = logits["F"]
    teacher = objective.kd.teacher(x)
    p_teacher = torch.softmax(teacher / t, 1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / t, 1))).sum(1).mean()
    expected = tf.cross_entropy(student, y) + tf.cross_entropy(teacher, y) + beta * t * t * kl
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert objective.model.blocks[0].layers[0].conv.weight.grad.abs().sum() > 0
    assert objective.kd.teacher.blocks[0].layers[0].conv.weight.grad.abs().sum() > 0
    frozen = [p for n, p in objective.kd.teacher.named_parameters() if "_quant." in n]
    assert frozen and all(not p.requires_grad for p in frozen)


def test_additional_heads_after_downsampling_blocks():
    cfg = tiny_config(ag={"enabled": False}, baseline={"aux_losses": True})
    objective = build_objective(build_model(cfg.model), cfg)
    aux = objective.aux
    assert aux.block_indices == [0, 1]  # strides [2, 2, 1]
    assert aux.alpha == 0.01
    head = aux.heads[1]
    kinds = [nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]
    assert [type(m) for m in head] == kinds and head[-1].in_features == 8
    x, y = batch()
    loss, logits = objective(x, y, 0.0)
    outputs = objective.model.block_outputs(x)
    heads_ce = sum(tf.cross_entropy(h(outputs[i]), y) for i, h in zip([0, 1], aux.heads, strict=True))
    torch.testing.assert_close(loss, tf.cross_entropy(logits["F"], y) + 0.01 * heads_ce)
    assert not any(k.startswith("aux.") for k in objective.deployable().state_dict())


def test_additional_losses_need_a_downsampling_block():
    cfg = tiny_config(ag={"enabled": False}, baseline={"aux_losses": True}, model={"strides": [1, 1, 1]})
    with pytest.raises(AgqError, match=r"baseline\.aux_losses"):
        build_objective(build_model(cfg.model), cfg)


def test_kd_beta_must_be_non_negative():
    with pytest.raises(AgqError, match=r"baseline\.kd_beta=-1"):
        config_from_dict({"baseline": {"kd_beta": -1.0}})


def test_every_method_composes_and_learns():
    """AG + SSP (layerdrop, W/A) + KD + additional losses on a residual F: all terms present, loss drops."""
    cfg = tiny_config(
        model={"arch": "residual", "convs_per_block": 2},
        ag={"granularity": "layer"},
        ssp={"enabled": True, "fragment": "layer", "weights_activations": True, "decay_epochs": 1.0},
        baseline={"kd": True, "aux_losses": True},
    )
    objective = build_objective(build_model(cfg.model), cfg)
    assert {"ag", "ssp", "kd", "aux"} <= {k.split(".")[0] for k in objective.state_dict()}
    optimizer = torch.optim.Adam(objective.parameters(), 1e-2)
    x, y = batch(64)
    losses = []
    for step in range(25):
        loss, logits = objective(x, y, step / 20)
        assert set(logits) == {"F", "H"}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])
