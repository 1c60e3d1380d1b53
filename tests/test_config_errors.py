"""Bad input to ``agq train``: one line on stderr, a non-zero exit, and no half-written file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from agq.hw.config import HwConfig, load_hw_config
from agq.training import data
from agq.training.config import ModelConfig, load_config

from agq.cli import main
from agq.config_loader import differences
from agq.errors import AgqError

CONFIG = "configs/digits_tiny.yaml"


def agq_train(capsys, tmp_path, *args: str) -> tuple[int, str]:
    """Run the real CLI; return (exit code, stderr)."""
    code = main(["train", "--config", CONFIG, "--no-progress",
                 "--set", f"train.output_dir={tmp_path / 'runs'}", *args])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str, command: str = "train") -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"agq {command}: error: "), err
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
    ("model.weight_bits=17", ("model.weight_bits=17", "2..16")),
    ("model.act_bits=0", ("model.act_bits=0", "2..16")),
    ("model.act_bits=17", ("model.act_bits=17", "2..16")),
    ("model.act_bits=1", ("model.act_bits=1", "BipolarQuant", "at least 2 bits")),
    ("model.weight_bits=1", ("model.weight_bits=1", "ternary")),
    ("model.first_last_bits=32", ("model.first_last_bits=32", "must be 16")),
    ("model.first_last_bits=8", ("model.first_last_bits=8", "must be 16", "contract")),
    ("train.lr_milestones=[0.5, .nan]", ("train.lr_milestones[1]=nan", "finite")),
    ("model.act_max_init=-.inf", ("model.act_max_init=-inf", "finite")),
    ("baseline.kd_beta=.nan", ("baseline.kd_beta=nan", "finite")),
    ("name=..", ("name='..'", "plain file name")),
    ("name=a/b", ("name='a/b'", "plain file name")),
    ("model.strides=[2, 16]", ("model.strides[1]", "blocks.1.layers.0.conv", "6x6", "stride 16")),
    ("model.strides=[16, 1]", ("model.strides[0]", "blocks.0.layers.0.conv", "10x10", "stride 16")),
    ("model.widths=[16,", ("--set model.widths", "not valid YAML")),
    ("model.widths", ("--set 'model.widths'", "key=value")),
    ("ag.lam=-0.5", ("ag.lam=-0.5", ">= 0")),
    ("ag.lam=.nan", ("ag.lam=nan", "finite")),
    ("train.lr=.inf", ("train.lr=inf", "finite")),
    ("train.seed=-1", ("train.seed=-1", ">= 0")),
    ("ag.design=three_pass", ("ag.design='three_pass'", "one_pass", "two_pass")),
    ("model.weight_clamp=round", ("model.weight_clamp='round'", "ste")),
    ("model.weight_scale=exp", ("model.weight_scale='exp'", "log")),
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
    assert_one_line_error(code, capsys.readouterr().err, "config file not found", str(tmp_path / "nope.yaml"))


def test_unknown_config_name_lists_the_packaged_ones(capsys):
    code = main(["train", "--config", "mnist_plain_agg"])
    err = capsys.readouterr().err
    assert_one_line_error(code, err, "not found: mnist_plain_agg", "digits_tiny, mnist_plain_ag")


def test_a_packaged_config_by_name_is_the_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # not the repository: the name is found in the package agq.configs
    by_name = load_config("digits_tiny")
    assert by_name == load_config(f"{Path(__file__).parent.parent}/{CONFIG}")
    assert load_config("bench/mnist_deep").name == "mnist_deep"


def test_config_that_is_a_folder(capsys, tmp_path):
    code = main(["train", "--config", str(tmp_path)])
    assert_one_line_error(code, capsys.readouterr().err, f"config file {tmp_path} is a folder")


@pytest.mark.parametrize("command", ["export", "build", "rtlsim"])
def test_a_folder_where_a_file_belongs_is_named_as_one(capsys, tmp_path, command):
    folder = tmp_path / "given"
    (folder / "report.json").mkdir(parents=True)  # rtlsim reads <build>/report.json
    args = {"export": ["--checkpoint", str(folder), "--out", str(tmp_path / "out")],
            "build": ["--model", str(folder), "--out", str(tmp_path / "out")],
            "rtlsim": ["--build", str(folder)]}[command]
    code = main([command, *args])
    assert_one_line_error(code, capsys.readouterr().err, str(folder), "is a folder, not a file",
                          command=command)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ["", "\n# only a comment\n"])
def test_empty_config_file_is_refused(capsys, tmp_path, content):
    empty = tmp_path / "empty.yaml"
    empty.write_text(content)
    code = main(["train", "--config", str(empty), "--set", f"train.output_dir={tmp_path / 'runs'}"])
    assert_one_line_error(code, capsys.readouterr().err, f"config file {empty} is empty")
    assert written(tmp_path) == []


def test_a_config_on_a_base_lists_only_its_changes(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "model:\n  widths: [8, 16]\n  depths: [1, 1]\n  strides: [1, 2]\n  act_bits: 4\ntrain:\n  lr: 0.01\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmodel:\n  act_bits: 3\n")
    cfg = load_config(tmp_path / "child.yaml", ["train.epochs=5"])
    assert (cfg.model.widths, cfg.model.act_bits, cfg.train.lr, cfg.train.epochs) == ([8, 16], 3, 0.01, 5)
    assert cfg.name == "child"
    deep, cosine = load_config("bench/mnist_deep").to_dict(), load_config("bench/mnist_cosine").to_dict()
    assert sorted(key for key, _, _ in differences(deep, cosine)) == [
        "name", "train.lr_schedule", "train.output_dir", "train.pretrain_epochs"]


@pytest.mark.parametrize(("content", "needle"), [
    ("base: missing.yaml\n", "base='missing.yaml' names no file"),
    ("base: [a]\n", "'base' must be a file name"),
    ("base: loop.yaml\n", "'base' leads back to itself"),
])
def test_a_bad_base_is_one_line(capsys, tmp_path, content, needle):
    loop = tmp_path / "loop.yaml"
    loop.write_text(content)
    code = main(["train", "--config", str(loop), "--set", f"train.output_dir={tmp_path / 'runs'}"])
    assert_one_line_error(code, capsys.readouterr().err, f"config file {loop}", needle)
    assert written(tmp_path) == []


def test_a_value_error_names_the_file(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  act_bits: 1\n")
    code = main(["train", "--config", str(bad)])
    assert_one_line_error(code, capsys.readouterr().err, "model.act_bits=1", f"(in {bad})")


@pytest.mark.parametrize(("size", "kernel"), [(size, k) for size in (1, 2, 3, 4, 5, 7, 8) for k in (1, 3, 5)])
def test_the_folding_rule_is_finns(size, kernel):
    """For every stride, the config refuses exactly the layers on which FINN's RTL sliding-window
    generator (FMPadding + ConvolutionInputGenerator_rtl, the nodes InferConvInpGen makes) asserts."""
    from finn.util.settings import initialize_dummy_settings
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    initialize_dummy_settings()
    padded = size + 2 * (kernel // 2)
    for stride in range(1, padded + 3):
        node = helper.make_node(
            "ConvolutionInputGenerator_rtl", ["x"], ["y"], domain="finn.custom_op.fpgadataflow.rtl",
            backend="fpgadataflow", ConvKernelDim=[kernel, kernel], IFMChannels=4, IFMDim=[padded, padded],
            OFMDim=[(padded - kernel) // stride + 1] * 2, SIMD=4, Stride=[stride, stride], Dilation=[1, 1],
            inputDataType="UINT2", outputDataType="UINT2", name="swg")
        swg = getCustomOp(node)
        try:
            if swg.select_impl_style() == "default":
                swg.prepare_codegen_default()
            finn_folds = True
        except AssertionError:
            finn_folds = False
        cfg = ModelConfig(image_size=size, kernel_size=kernel, widths=[4], depths=[1], strides=[stride])
        try:
            cfg.validate()
            agq_accepts = True
        except AgqError as exc:
            assert "blocks.0.layers.0.conv" in str(exc) and "model.strides[0]" in str(exc)
            agq_accepts = False
        assert agq_accepts == finn_folds, (size, kernel, stride)


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


def test_resume_of_a_checkpoint_older_than_a_config_key(capsys, pretrained_run, tmp_path):
    """A key added since the checkpoint was written takes its default instead of blocking the resume."""
    from agq.training.checkpoint import load_checkpoint, save_checkpoint

    run_root, args = pretrained_run
    old = tmp_path / "runs"
    shutil.copytree(run_root / "runs", old)
    last = old / "digits_tiny" / "last.pt"
    payload = load_checkpoint(last)
    del payload["config"]["data"]["grayscale"]
    save_checkpoint(last, payload)
    moved = [a.replace(str(run_root / "runs"), str(old)) for a in args]
    assert main([*moved, "--resume"]) == 0
    payload = load_checkpoint(last)
    payload["config"]["model"]["widths"] = [16, 8]
    save_checkpoint(last, payload)
    code = main([*moved, "--resume"])
    assert_one_line_error(code, capsys.readouterr().err, "cannot resume", "model.widths=[16, 8]")


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


@pytest.mark.parametrize(("args", "needles"), [
    (["--set", "clock=5"], ("unknown key clock", "configs/hw/default.yaml")),
    (["--set", "target_fps=[1,"], ("--set target_fps", "not valid YAML")),
    (["--set", "target_fps=true"], ("target_fps=True", "expected int or str")),
    (["--set", "ooc_synth=1"], ("ooc_synth=1", "true/false")),
    (["--set", "input_scale=.nan"], ("input_scale=nan", "finite")),
    (["--input-scale", "inf"], ("input_scale=inf", "finite")),
    (["--set", "clock_ns=-.inf"], ("clock_ns=-inf", "finite")),
    (["--config", "max_fps", "--set", "fifo_depth=1"], ("fifo_depth=1", ">= 2", "configs/hw/max_fps.yaml")),
    (["--config", "fastest"], ("config file not found: fastest", "default, max_fps")),
])
def test_bad_hw_config_is_one_line_before_the_build(capsys, tmp_path, args, needles):
    model = tmp_path / "model.onnx"  # never read: the config is checked first
    code = main(["build", "--model", str(model), "--no-progress", *args])
    assert_one_line_error(code, capsys.readouterr().err, *needles, command="build")
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [None, ""])
def test_hw_config_that_is_a_folder_or_empty(capsys, tmp_path, content):
    config = tmp_path / "hw.yaml"
    config.mkdir() if content is None else config.write_text(content)
    code = main(["build", "--model", str(tmp_path / "model.onnx"), "--config", str(config)])
    problem = "is a folder" if content is None else "is empty"
    assert_one_line_error(code, capsys.readouterr().err, f"config file {config} {problem}", command="build")


def test_hw_settings_by_packaged_name_and_set(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    folding = tmp_path / "folding.json"
    folding.write_text("{}")
    cfg = load_hw_config("max_fps", ["ooc_synth=true", "fifo_depth=8", "folding_config=folding.json"])
    assert (cfg.ooc_synth, cfg.fifo_depth, cfg.folding_config) == (True, 8, str(folding))
    assert load_hw_config() == HwConfig()


@pytest.mark.parametrize("overrides", [{}, {"arch": "residual"}, {"kernel_size": 5, "strides": [3, 2]},
                                       {"arch": "residual", "widths": [8, 8], "strides": [1, 2]}])
def test_the_config_walks_the_convs_the_model_builds(overrides):
    """The layers the validation checks are the model's own: names, input channels and sizes, FC inputs."""
    from agq.training.models import build_model
    from brevitas.nn import QuantConv2d

    cfg = ModelConfig(**{"image_size": 8, "stem_channels": 4, "widths": [8, 16], "depths": [2, 1],
                         "strides": [2, 2], **overrides})
    cfg.validate()
    net = build_model(cfg).eval()
    seen = []
    for name, module in net.named_modules():
        if isinstance(module, QuantConv2d):
            module.register_forward_hook(
                lambda m, args, out, name=name: seen.append((name, args[0].shape[1], args[0].shape[-1])))
    net(torch.zeros(1, 1, 8, 8))
    walked = [(conv.name, conv.channels, conv.in_size) for conv in cfg.conv_layers()]
    assert sorted(walked) == sorted(seen)  # a residual block runs its shortcut after its convs
    assert net.head.fc.in_features == cfg.head_inputs()


def test_an_accumulator_wider_than_the_dsp_is_refused():
    # by hand: the FC of a 64x64x64 map sums 2^18 products of 16-bit inputs (< 2^16) and 16-bit narrow
    # weights (|w| < 2^15): up to 2^18 * (2^16 - 1) * (2^15 - 1) < 2^49, a 49-bit magnitude + sign = 50 bits
    wide = {"image_size": 64, "widths": [64], "depths": [1], "strides": [1], "act_bits": 16,
            "weight_bits": 16}
    with pytest.raises(AgqError, match=r"model.first_last_bits=16, model.act_bits=16: layer head.fc sums "
                                       r"262144 products into up to 50 bits, more than the 48-bit"):
        ModelConfig(**wide).validate()
    ModelConfig(**{**wide, "act_bits": 8}).validate()  # 2^18 * 255 * 32767 < 2^42: 43 bits fit


def test_config_differences_name_dotted_keys_and_skip_what_may_differ():
    from agq.config_loader import differences

    old = {"name": "a", "model": {"widths": [16, 16], "bits": 2}, "ag": {"lam": 1.0}, "train": {"lr": 0.1}}
    new = {"name": "b", "model": {"widths": [16, 8], "bits": 2}, "ag": {"lam": 2.0}, "train": {"lr_x": 1}}
    assert differences(old, new) == [("name", "a", "b"), ("model.widths", [16, 16], [16, 8]),
                                     ("ag.lam", 1.0, 2.0), ("train.lr", 0.1, None), ("train.lr_x", None, 1)]
    # "ag." skips the section, "train.lr" only that key (not train.lr_x)
    assert differences(old, new, ("name", "ag.", "train.lr")) == [("model.widths", [16, 16], [16, 8]),
                                                                  ("train.lr_x", None, 1)]
