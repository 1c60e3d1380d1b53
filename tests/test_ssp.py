"""SSP: the delta schedule, sampling frequencies (fixed seed), W/A independence, switching, resume."""

from __future__ import annotations

import io
import math

import pytest
import torch
from agq.training.models import build_model
from agq.training.objective import build_objective
from agq.training.precision import precision_state
from agq.training.ssp import StochasticPrecision, fragments, ssp_delta

from tests.test_ag import batch, tiny_config

DRAWS = 2000


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def binomial_tolerance(p: float, n: int, sigmas: float = 4.5) -> float:
    """Half-width of a +-4.5 sigma interval for a frequency of n Bernoulli(p) draws (two-sided ~7e-6)."""
    return sigmas * math.sqrt(p * (1 - p) / n)


def sampler(fragment: str = "layer", wa: bool = False, seed: int = 0, **model) -> StochasticPrecision:
    ssp = {"enabled": True, "fragment": fragment, "weights_activations": wa, "decay_epochs": 4.0}
    cfg = tiny_config(ssp=ssp, model=model)
    return StochasticPrecision(build_model(cfg.model), cfg.ssp, seed)


def test_delta_schedule():
    assert ssp_delta(0.0, 0.5, 20) == 0.5
    assert ssp_delta(5.0, 0.5, 20) == pytest.approx(0.375)
    assert ssp_delta(10.0, 0.5, 20) == pytest.approx(0.25)
    assert ssp_delta(19.5, 0.5, 20) == pytest.approx(0.0125)
    assert ssp_delta(20.0, 0.5, 20) == 0.0
    assert ssp_delta(33.0, 0.5, 20) == 0.0
    assert ssp_delta(0.0, 0.5, 0) == 0.0
    assert sampler().delta(2.0) == pytest.approx(0.5 * (1 - 2.0 / 4))


def test_fragments_blockdrop_and_layerdrop():
    model = build_model(tiny_config(model={"arch": "residual", "convs_per_block": 2}).model)
    assert fragments(model, "block") == list(model.blocks)
    layers = fragments(model, "layer")
    # 2 conv layers per block + the projection shortcut of the two blocks whose shape changes
    assert len(layers) == 3 * 2 + 2
    assert model.stem not in layers and model.head not in layers


@pytest.mark.parametrize("progress", [0.0, 1.6])
def test_quantized_frequency_is_one_minus_delta(progress):
    ssp = sampler()
    delta = ssp.delta(progress)
    masks = torch.stack([ssp.sample(progress) for _ in range(DRAWS)]).float()
    assert torch.equal(masks[..., 0], masks[..., 1])  # without W/A one draw decides both
    freq = masks[..., 0].mean(0)  # per fragment
    tol = binomial_tolerance(1 - delta, DRAWS)
    assert ((freq - (1 - delta)).abs() <= tol).all(), (freq, 1 - delta, tol)
    pooled = masks[..., 0].mean()
    assert abs(pooled - (1 - delta)) <= binomial_tolerance(1 - delta, DRAWS * masks.shape[1])


def test_weights_and_activations_are_drawn_independently():
    ssp = sampler(wa=True)
    p = 1 - ssp.delta(0.0)
    masks = torch.stack([ssp.sample(0.0) for _ in range(DRAWS)]).float()
    weights, acts = masks[..., 0].flatten(), masks[..., 1].flatten()
    n = weights.numel()
    for freq, expected in ((weights.mean(), p), (acts.mean(), p), ((weights * acts).mean(), p * p),
                           (((1 - weights) * acts).mean(), (1 - p) * p)):
        assert abs(freq - expected) <= binomial_tolerance(expected, n)


def test_delta_zero_quantizes_everything_without_drawing():
    ssp = sampler(wa=True)
    state = ssp.generator.get_state()
    mask = ssp.sample(10.0)
    assert mask.all() and torch.equal(ssp.generator.get_state(), state)


def test_sampled_switches_fragments_only_and_restores_full_quantization():
    cfg = tiny_config(ssp={"enabled": True, "fragment": "layer", "weights_activations": True})
    model = build_model(cfg.model)
    ssp = StochasticPrecision(model, cfg.ssp, seed=3)
    seen_off = False
    for _ in range(20):
        with ssp.sampled(0.0) as mask:
            for fragment, (w, a) in zip(ssp.fragments, mask.tolist(), strict=True):
                assert not fragment.conv.weight_quant.disable_quant == w
                assert not fragment.act.act_quant.disable_quant == a
            assert all(precision_state(model.stem)) and all(precision_state(model.head))
            seen_off |= not mask.all()
        assert all(precision_state(model))
    assert seen_off


def test_training_step_leaves_f_fully_quantized_and_evaluation_quantized():
    cfg = tiny_config(ssp={"enabled": True, "delta_start": 1.0})  # delta 1: every fragment full precision
    model = build_model(cfg.model)
    objective = build_objective(model, cfg)
    x, y = batch()
    _, logits = objective(x, y, 0.0)
    assert all(precision_state(model))
    assert objective.delta(0.0) == 1.0
    objective.eval()
    evaluated = objective.evaluate(x)["F"]
    assert torch.equal(evaluated, model(x))
    objective.train()
    _, quantized = build_objective(model, tiny_config())(x, y, 0.0)  # same F, SSP off
    assert not torch.allclose(logits["F"], quantized["F"])  # the SSP step really ran full precision


def test_generator_state_round_trips_through_the_state_dict():
    cfg = tiny_config(ssp={"enabled": True, "fragment": "layer", "weights_activations": True})
    objective = build_objective(build_model(cfg.model), cfg)
    for _ in range(5):
        objective.ssp.sample(0.0)
    buffer = io.BytesIO()
    torch.save(objective.state_dict(), buffer)
    expected = [objective.ssp.sample(0.0) for _ in range(10)]
    other_cfg = tiny_config(ssp={"enabled": True, "fragment": "layer", "weights_activations": True},
                            train={"seed": 123})
    resumed = build_objective(build_model(other_cfg.model), other_cfg)
    assert not all(torch.equal(resumed.ssp.sample(0.0), m) for m in expected)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert all(torch.equal(resumed.ssp.sample(0.0), m) for m in expected)


def test_module_apply_still_reaches_every_submodule():
    """nn.Module.apply(fn) on the objective must not hit an SSP method of the same name."""
    cfg = tiny_config(ssp={"enabled": True})
    objective = build_objective(build_model(cfg.model), cfg)
    visited = []
    objective.apply(visited.append)
    assert objective.ssp in visited and objective.model in visited


def test_bn_recalibration_estimates_fully_quantized_statistics():
    """BN statistics become those of fully quantized F over the first ``steps`` batches (checked at the
    first BN, whose input does not depend on BN state); weights, momentum and eval mode are untouched."""
    from agq.training.bn_recalibration import recalibrate_bn

    cfg = tiny_config(ssp={"enabled": True, "delta_start": 1.0})
    objective = build_objective(build_model(cfg.model), cfg).eval()
    batches = [batch(seed=s) for s in range(3)]
    norms = [m for m in objective.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    weights = {k: v.clone() for k, v in objective.named_parameters()}
    inputs = []
    hook = norms[0].register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach()))
    for x, _ in batches[:2]:
        objective.evaluate(x)
    hook.remove()
    old_mean = norms[0].running_mean.clone()

    recalibrate_bn(objective, objective.evaluate, iter(batches), steps=2)

    first = norms[0]
    assert not first.training and first.momentum == 0.1 and not objective.training
    mean = torch.stack([t.mean(dim=(0, 2, 3)) for t in inputs]).mean(0)
    var = torch.stack([t.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for t in inputs]).mean(0)
    torch.testing.assert_close(first.running_mean, mean)
    torch.testing.assert_close(first.running_var, var)
    assert not torch.allclose(first.running_mean, old_mean)
    assert all(torch.equal(v, weights[k]) for k, v in objective.named_parameters())


def test_training_evaluates_mixed_precision_epochs_with_recalibrated_bn(tmp_path):
    """The epochs trained with delta > 0 are evaluated on a recalibrated copy; those after are not."""
    import json

    from agq.cli import main

    out = tmp_path / "runs"
    args = ["train", "--config", "digits_tiny", "--no-progress", "--set", f"train.output_dir={out}",
            "--set", "train.pretrain_epochs=0", "--set", "train.epochs=3", "--set", "data.limit_train=256",
            "--set", "ssp.enabled=true", "--set", "ssp.decay_epochs=2"]
    assert main(args) == 0
    rows = json.loads((out / "digits_tiny" / "metrics.json").read_text())
    assert [r["bn_recalibrated"] for r in rows if r["phase"] == "finetune"] == [True, True, False]


def test_every_epoch_recalibration_changes_only_the_bn_statistics(tmp_path):
    """train.bn_recalibration=every_epoch re-estimates BN after every fine-tuning epoch: training (weights,
    losses) is the same as without it, and each row keeps the running-average score; in the first epoch
    that equals the score without recalibration (later, the running averages start from recalibrated
    statistics, which they forget at BN's momentum: 0.9 per step)."""
    import json

    from agq.training.checkpoint import load_checkpoint

    from agq.cli import main

    def train(mode: str) -> tuple[list[dict], dict]:
        out = tmp_path / mode
        args = ["train", "--config", "digits_tiny", "--no-progress", "--set", f"train.output_dir={out}",
                "--set", "train.pretrain_epochs=1", "--set", "train.epochs=2", "--set",
                "data.limit_train=256", "--set", "ssp.enabled=false",
                "--set", f"train.bn_recalibration={mode}"]
        assert main(args) == 0
        rows = json.loads((out / "digits_tiny" / "metrics.json").read_text())
        return rows, load_checkpoint(out / "digits_tiny" / "last.pt")["model"]

    plain_rows, plain_state = train("mixed_precision_epochs")
    rows, state = train("every_epoch")
    finetune = [r for r in rows if r["phase"] == "finetune"]
    assert [r["bn_recalibrated"] for r in finetune] == [True, True]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in plain_rows]
    assert finetune[0]["running_bn_test_F_top1"] == next(r for r in plain_rows if r["phase"] == "finetune")[
        "test_F_top1"]
    stats = [k for k in state if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(torch.equal(state[k], plain_state[k]) for k in state if k not in stats)
    assert not all(torch.equal(state[k], plain_state[k]) for k in stats)


def test_frozen_bn_epochs_train_on_the_statistics_they_are_evaluated_with(tmp_path, monkeypatch):
    """train.bn_freeze_epochs=2 of 4: the statistics are re-estimated once, after epoch 2, and then stay
    as they are while every weight (BN's affine ones included) still learns; epochs 1-2 train as without
    the option."""
    import copy

    from agq.training import loop
    from agq.training.config import load_config

    saved: dict[str, list[dict]] = {}
    end_epoch = loop._Run._end_epoch

    def keep(self, row, module, model_state, optimizer, scheduler):
        saved.setdefault(self.cfg.train.output_dir, []).append((dict(row), copy.deepcopy(model_state)))
        end_epoch(self, row, module, model_state, optimizer, scheduler)

    monkeypatch.setattr(loop._Run, "_end_epoch", keep)

    def run(freeze: int) -> list[tuple[dict, dict]]:
        out = str(tmp_path / str(freeze))
        cfg = load_config("digits_tiny", [f"train.output_dir={out}", "train.pretrain_epochs=1",
                                          "train.epochs=4", "data.limit_train=256", "ssp.enabled=false",
                                          f"train.bn_freeze_epochs={freeze}"])
        loop.train(cfg, progress=False)
        return [(r, m) for r, m in saved[out] if r["phase"] == "finetune"]

    frozen, free = run(2), run(0)
    assert [(r["bn_recalibrated"], r["bn_frozen"]) for r, _ in frozen] == [
        (False, False), (True, False), (False, True), (False, True)]
    assert [r["train_loss"] for r, _ in frozen[:2]] == [r["train_loss"] for r, _ in free[:2]]
    stats = ("running_mean", "running_var", "num_batches_tracked")
    after_recalibration, last = frozen[1][1], frozen[3][1]
    assert all(torch.equal(last[k], v) for k, v in after_recalibration.items() if k.endswith(stats))
    learned = [k for k, v in after_recalibration.items()
               if not k.endswith(stats) and not torch.equal(last[k], v)]
    assert any(k.endswith("bn.weight") for k in learned) and any(k.endswith("conv.weight") for k in learned)
    assert not torch.equal(free[3][1]["head.bn.running_mean"], free[1][1]["head.bn.running_mean"])


def test_bn_freeze_epochs_must_leave_an_epoch_with_batch_statistics(capsys):
    from agq.cli import main

    code = main(["train", "--config", "digits_tiny", "--set", "train.epochs=3",
                 "--set", "train.bn_freeze_epochs=3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "train.bn_freeze_epochs=3" in err[0]
