"""The training loop on a tiny digits model: it learns, writes its files, and resumes bit-identically."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from agq.training import loop
from agq.training.checkpoint import load_checkpoint, load_deployable
from agq.training.config import load_config
from agq.training.loop import finetune_milestones, train

CONFIG = "configs/digits_tiny.yaml"


class Killed(Exception):
    """Stands for the process dying right after a checkpoint was written."""


def tiny(tmp_path, *overrides: str):
    return load_config(CONFIG, [f"train.output_dir={tmp_path}", *overrides])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cfg = tiny(tmp_path_factory.mktemp("full"))
    return cfg, train(cfg, progress=False)


def test_milestones_scale_the_papers_schedule():
    assert finetune_milestones(35, [25 / 35, 30 / 35]) == [25, 30]
    assert finetune_milestones(6, [25 / 35, 30 / 35]) == [4, 5]
    assert finetune_milestones(1, [25 / 35, 30 / 35]) == [1]


def test_tiny_run_learns_and_writes_its_files(uninterrupted):
    cfg, path = uninterrupted
    assert path == cfg.run_dir / "checkpoint.pt"
    payload = load_checkpoint(path)
    assert "trainer" not in payload
    meta = payload["meta"]
    assert meta["dataset"] == "digits" and meta["classes"] == [str(d) for d in range(10)]
    assert meta["phase"] == "finetune" and meta["epoch"] == 5
    assert meta["metrics"]["test_top1"] > 60.0  # chance is 10 %
    rows = json.loads((cfg.run_dir / "metrics.json").read_text())
    assert [(r["phase"], r["epoch"]) for r in rows] == [
        ("pretrain", 1), ("pretrain", 2), ("finetune", 1), ("finetune", 2), ("finetune", 3)]
    assert rows[-1]["test_F_top1"] == meta["metrics"]["test_top1"]
    assert all("test_H_top1" in r and "ssp_delta" in r for r in rows[2:])
    assert [r["ssp_delta"] for r in rows[2:]] == [0.5, 0.25, 0.0]
    assert [r["lr"] for r in rows[2:]] == pytest.approx([0.01, 0.01, 0.001])  # milestones [2, 3] of 3
    header = (cfg.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss", "test_F_top1", "test_F_top5", "val_F_top1", "time_s"} <= set(header)
    assert (cfg.run_dir / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    # the deployable F: fully quantized, evaluates to the logged accuracy
    _, model, _ = load_deployable(path)
    from agq.training.data import test_images

    images, labels = test_images(cfg.data)
    with torch.no_grad():
        correct = int((model(torch.tensor(images).float()).argmax(1) == torch.tensor(labels)).sum())
    assert 100 * correct / len(labels) == meta["metrics"]["test_top1"]


def run_until_killed(start: Callable[[], object], monkeypatch, kill_after: int) -> None:
    """Call ``start`` (a training) and let its process die right after its ``kill_after``-th checkpoint."""
    saves = []
    real_save = loop.save_checkpoint

    def save_then_die(path, payload):
        real_save(path, payload)
        saves.append(path)
        if len(saves) == kill_after:
            raise Killed

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        start()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)


def killed_then_resumed(cfg, monkeypatch, kill_after: int):
    """Train ``cfg``, die right after its ``kill_after``-th checkpoint, resume: the final checkpoint."""
    run_until_killed(lambda: train(cfg, progress=False), monkeypatch, kill_after)
    assert not (cfg.run_dir / "checkpoint.pt").exists()
    return train(cfg, resume=True, progress=False)


@pytest.mark.parametrize("kill_after", [1, 3], ids=["in-pretraining", "in-fine-tuning"])
def test_resume_after_a_kill_is_bit_identical(uninterrupted, tmp_path, monkeypatch, kill_after):
    full_cfg, full_path = uninterrupted
    cfg = tiny(tmp_path)
    resumed = load_checkpoint(killed_then_resumed(cfg, monkeypatch, kill_after))
    expected = load_checkpoint(full_path)
    assert resumed["model"].keys() == expected["model"].keys()
    for key, value in expected["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    assert resumed["meta"]["metrics"] == expected["meta"]["metrics"]
    full_rows = json.loads((full_cfg.run_dir / "metrics.json").read_text())
    rows = json.loads((cfg.run_dir / "metrics.json").read_text())
    drop_times = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in (*full_rows, *rows)]
    assert drop_times[: len(full_rows)] == drop_times[len(full_rows):]


def test_cosine_schedule_anneals_per_step_to_zero_and_resumes_bit_identically(tmp_path, monkeypatch):
    import math

    cfg = tiny(tmp_path / "full", "train.lr_schedule=cosine")
    full = load_checkpoint(train(cfg, progress=False))["model"]
    rows = json.loads((cfg.run_dir / "metrics.json").read_text())
    epochs, lr = cfg.train.epochs, cfg.train.lr
    # logged at each epoch's start: the cosine at whole epochs, whatever the batches per epoch
    assert [r["lr"] for r in rows[2:]] == pytest.approx(
        [lr * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)])
    last = load_checkpoint(cfg.run_dir / "last.pt")["trainer"]["optimizer"]["param_groups"][0]["lr"]
    assert last == pytest.approx(0.0, abs=1e-12)
    # killed right after the first fine-tuning epoch's checkpoint, then resumed: the same weights
    again = tiny(tmp_path / "killed", "train.lr_schedule=cosine")
    resumed = load_checkpoint(killed_then_resumed(again, monkeypatch, kill_after=3))["model"]
    assert resumed.keys() == full.keys()
    for key, value in full.items():
        assert torch.equal(resumed[key], value), key


def test_another_seed_gives_other_weights(uninterrupted, tmp_path):
    _, full_path = uninterrupted
    cfg = tiny(tmp_path, "train.seed=1", "train.epochs=0", "train.pretrain_epochs=1")
    other = load_checkpoint(train(cfg, progress=False))["model"]
    assert not torch.equal(other["stem.weight"], load_checkpoint(full_path)["model"]["stem.weight"])


@pytest.mark.parametrize(("name", "weight_layers", "fc_inputs"), [
    ("mnist_plain_ag", 8, 1024),
    ("digits_tiny", 4, 64),
    ("cifar100_resnet18_plain", 18, 8192),
    ("cifar100_resnet18_residual", 18, 8192),
    ("cifar100_resnet34_plain", 34, 8192),
])
def test_shipped_configs_build_their_networks(name, weight_layers, fc_inputs):
    from agq.training.models import build_model
    from brevitas.nn import QuantConv2d, QuantLinear

    cfg = load_config(f"configs/{name}.yaml")
    model = build_model(cfg.model)
    # weight layers as ResNet counts them: stem, the 3x3 convs, the FC (not the 1x1 shortcuts)
    convs = [m for m in model.modules() if isinstance(m, QuantConv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == weight_layers
    (fc,) = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert fc.in_features == fc_inputs and fc.out_features == cfg.model.num_classes
    assert (cfg.model.arch == "residual") == any(b.shortcut is not None for b in model.blocks)
