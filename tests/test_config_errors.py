"""Bad input to ``agq train``: one line on stderr, a non-zero exit, and no half-written file."""

from __future__ import annotations

import pytest
import torch
from agq.training import data

from agq.cli import main

CONFIG = "configs/digits_tiny.yaml"


def agq_train(capsys, tmp_path, *args: str) -> tuple[int, str]:
    """Run the real CLI; return (exit code, stderr)."""
    code = main(["train", "--config", CONFIG, "--no-progress",
                 "--set", f"train.output_dir={tmp_path / 'runs'}", *args])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agq train: error: "), err
    for needle in needles:
        assert needle in lines[0]


def written(tmp_path) -> list[str]:
    runs = tmp_path / "runs"
    return sorted(str(p.relative_to(runs)) for p in runs.rglob("*") if p.is_file()) if runs.exists() else []


@pytest.mark.parametrize(("assignment", "needles"), [
    ("model.depth=3", ("unknown key model.depth",)),
    ("colour=red", ("unknown key colour",)),
    ("model.widths=16", ("model.widths", "expected a list")),
    ("train.epochs=1.5", ("train.epochs", "expected int")),
    ("ag.enabled=maybe", ("ag.enabled", "true/false")),
    ("model.weight_bits=17", ("model.weight_bits=17", "1..16")),
    ("model.act_bits=0", ("model.act_bits=0", "1..16")),
    ("model.first_last_bits=32", ("model.first_last_bits=32",)),
    ("ag.lam=-0.5", ("ag.lam=-0.5", ">= 0")),
    ("ag.lam=.nan", ("ag.lam=nan", "finite")),
    ("train.lr=.inf", ("train.lr=inf", "finite")),
    ("train.seed=-1", ("train.seed=-1", ">= 0")),
    ("ag.design=three_pass", ("ag.design='three_pass'", "one_pass", "two_pass")),
    ("model.weight_clamp=round", ("model.weight_clamp='round'", "ste")),
    ("ssp.delta_start=1.5", ("ssp.delta_start=1.5", "[0, 1]")),
    ("ssp.delta_start=-0.1", ("ssp.delta_start=-0.1",)),
    ("model.image_size=28", ("image_size", "digits", "1x8x8")),
    ("model.num_classes=100", ("num_classes=100", "10 classes")),
])
def test_bad_config_values(capsys, tmp_path, assignment, needles):
    code, err = agq_train(capsys, tmp_path, "--set", assignment)
    assert_one_line_error(code, err, *needles)
    assert written(tmp_path) == []


@pytest.mark.parametrize(("assignment", "needles"), [
    ("ag.head=shared", ("ag.head=shared", "one_pass", "ag.design=two_pass")),
    ("ag.fused=true", ("ag.fused=true", "two_pass")),
])
def test_one_pass_refuses_two_pass_options(capsys, tmp_path, assignment, needles):
    code, err = agq_train(capsys, tmp_path, "--set", "ag.design=one_pass", "--set", assignment)
    assert_one_line_error(code, err, *needles)
    assert written(tmp_path) == []


def test_ag_in_pretraining_needs_pretraining(capsys, tmp_path):
    code, err = agq_train(capsys, tmp_path, "--set", "ag.pretrain=true", "--set", "train.pretrain_epochs=0")
    assert_one_line_error(code, err, "ag.pretrain=true", "train.pretrain_epochs=0")
    assert written(tmp_path) == []


def test_missing_config_file(capsys, tmp_path):
    code = main(["train", "--config", str(tmp_path / "nope.yaml")])
    assert_one_line_error(code, capsys.readouterr().err, "config file not found")


def test_missing_data_folder(capsys, tmp_path):
    code, err = agq_train(capsys, tmp_path, "--set", "data.dataset=imagefolder",
                          "--set", f"data.root={tmp_path / 'images'}")
    assert_one_line_error(code, err, "data folder", "images/train not found")
    assert written(tmp_path) == []


def test_mnist_checksum_mismatch(capsys, tmp_path):
    cache = data.mnist_file(tmp_path / "data")
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"\x1f\x8b not the MNIST pickle")
    code, err = agq_train(capsys, tmp_path, "--set", "data.dataset=mnist",
                          "--set", f"data.root={tmp_path / 'data'}", "--set", "model.image_size=28")
    assert_one_line_error(code, err, "sha256", "does not match", str(cache))
    assert written(tmp_path) == []


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A finished one-epoch run whose last.pt later commands try to resume."""
    tmp_path = tmp_path_factory.mktemp("run")
    args = ["train", "--config", CONFIG, "--no-progress", "--set", f"train.output_dir={tmp_path / 'runs'}",
            "--set", "train.pretrain_epochs=1", "--set", "train.epochs=0", "--set", "data.limit_train=256"]
    assert main(args) == 0
    return tmp_path, args


def test_resume_with_another_model_config(capsys, pretrained_run):
    tmp_path, args = pretrained_run
    last = tmp_path / "runs" / "digits_tiny" / "last.pt"
    before = last.read_bytes()
    capsys.readouterr()
    code = main([*args, "--resume", "--set", "model.widths=[16, 8]"])
    assert_one_line_error(code, capsys.readouterr().err, "cannot resume", "model.widths=[16, 16]", "[16, 8]")
    assert last.read_bytes() == before


def test_resume_of_a_finished_run_rewrites_the_same_checkpoint(capsys, pretrained_run):
    tmp_path, args = pretrained_run
    final = tmp_path / "runs" / "digits_tiny" / "checkpoint.pt"
    from agq.training.checkpoint import load_checkpoint

    before = load_checkpoint(final)
    assert main([*args, "--resume"]) == 0
    after = load_checkpoint(final)
    assert after["meta"] == before["meta"]
    assert after["model"].keys() == before["model"].keys()
    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items())


def test_resume_from_a_corrupt_checkpoint(capsys, tmp_path):
    last = tmp_path / "runs" / "digits_tiny" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 cut off in the middle")
    code, err = agq_train(capsys, tmp_path, "--resume")
    assert_one_line_error(code, err, "corrupt", str(last))
    assert written(tmp_path) == ["digits_tiny/last.pt"]


def test_resume_without_a_checkpoint(capsys, tmp_path):
    code, err = agq_train(capsys, tmp_path, "--resume")
    assert_one_line_error(code, err, "cannot resume", "last.pt not found")
    assert written(tmp_path) == []
