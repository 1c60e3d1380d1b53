"""agq build: the default model compiles to an all-RTL, integer-only partition with HDL and estimates,
and every model or input FINN cannot make all-RTL integer hardware fails with the right reason."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from agq.export.qonnx import to_qonnx
from agq.hw.build import build_accelerator
from agq.hw.config import HwConfig, load_hw_config
from agq.training.config import ModelConfig, load_config
from agq.training.models import build_model
from agq.training.quant import act_quant, weight_quant
from brevitas.nn import QuantConv2d, QuantLinear, QuantReLU
from onnx import TensorProto, helper
from torch import nn

from agq.cli import main
from agq.errors import AgqError

SHAPE = (1, 1, 28, 28)
# Written out by hand (not read from hw/steps.py): FINN's steps by their names in FINN, agq's in between;
# the default config folds with agq's search (target_fps: max) instead of FINN's fixed-target step.
EXPECTED_STEPS = [
    "step_qonnx_to_finn", "step_tidy_up", "step_streamline", "step_round_thresholds", "step_convert_to_hw",
    "step_output_scale_to_host", "step_check_mapped", "step_minimize_bit_width_initial",
    "step_create_dataflow_partition", "step_integer_certificate", "step_prefer_rtl", "step_specialize_layers",
    "step_all_rtl_check", "step_max_fps_folding", "step_apply_folding_config", "step_minimize_bit_width",
    "step_generate_estimate_reports", "step_check_budget", "step_hw_codegen", "step_rtlsim_partition",
]


def export(module: nn.Module, folder: Path) -> Path:
    """QONNX of ``module`` after a few training-mode passes (non-trivial BN statistics and scales)."""
    torch.manual_seed(0)
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(torch.randint(0, 256, (8, *SHAPE[1:])).float())
    module.eval()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    to_qonnx(module, SHAPE).save(str(path))
    return path


class Tiny(nn.Module):
    """Stem conv, one 2-bit conv, FC; optionally global average pooling or full-range 2-bit weights."""

    def __init__(self, pool: bool = False, narrow: bool = True) -> None:
        super().__init__()
        low = weight_quant(2, wide=False)
        if not narrow:
            low = low.let(narrow_range=False)
        self.stem = QuantConv2d(1, 8, 3, stride=2, padding=1, bias=False, weight_quant=weight_quant(16, True))
        self.bn1, self.act1 = nn.BatchNorm2d(8), QuantReLU(act_quant=act_quant(2, 2.0))
        self.conv = QuantConv2d(8, 8, 3, stride=2, padding=1, bias=False, weight_quant=low)
        self.bn2, self.act2 = nn.BatchNorm2d(8), QuantReLU(act_quant=act_quant(2, 2.0))
        self.pool = nn.AdaptiveAvgPool2d(1) if pool else nn.Identity()
        self.fc = QuantLinear(8 if pool else 8 * 7 * 7, 10, bias=False, weight_quant=weight_quant(16, True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.bn2(self.conv(self.act1(self.bn1(self.stem(x))))))
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.fixture(scope="module")
def default_model(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = load_config("configs/mnist_plain_ag.yaml")
    return export(build_model(cfg.model), tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def default_build(default_model):
    build_dir = build_accelerator(default_model, allow_missing_vivado=True, progress=False)
    return build_dir, json.loads((build_dir / "report.json").read_text())


def load(path: Path):
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(str(path))


def test_default_model_builds_to_an_all_rtl_partition_with_hdl(default_model, default_build):
    from finn.util.fpgadataflow import is_rtl_node
    from qonnx.custom_op.registry import getCustomOp

    build_dir, _ = default_build
    assert build_dir == default_model.parent / "Pynq-Z2"
    partition = load(build_dir / "partition_hdl.onnx")
    ops = [n.op_type for n in partition.graph.node]
    assert all(is_rtl_node(n) for n in partition.graph.node), ops
    assert {"MVAU_rtl", "Thresholding_rtl", "ConvolutionInputGenerator_rtl", "FMPadding_rtl",
            "StreamingFIFO_rtl", "StreamingDataWidthConverter_rtl"} <= set(ops)
    assert ops.count("MVAU_rtl") == 8  # stem, six 2-bit convs, FC: found by walking the graph
    for node in partition.graph.node:
        folder = Path(getCustomOp(node).get_nodeattr("code_gen_dir_ipgen"))
        assert folder.is_relative_to(build_dir / "finn_tmp")
        assert any(f.suffix in {".v", ".sv"} for f in folder.iterdir()), node.name
    parent = load(build_dir / "parent.onnx")
    sdp = [n for n in parent.graph.node if n.op_type == "StreamingDataflowPartition"]
    assert len(sdp) == 1
    assert getCustomOp(sdp[0]).get_nodeattr("model") == str(build_dir / "partition_hdl.onnx")
    fifos = json.loads((build_dir / "report" / "fifo_sizing.json").read_text())["fifo_depths"]
    assert len(fifos) == ops.count("StreamingFIFO_rtl") and set(fifos.values()) == {HwConfig().fifo_depth}
    # build.log: each step's header once, numbered, in order, each closed by its own "done" line
    log = (build_dir / "build.log").read_text()
    headers = re.findall(r"^=== \[(\d+)\] (\S+) ===$", log, re.MULTILINE)
    assert headers == [(str(i + 1), name) for i, name in enumerate(EXPECTED_STEPS)]
    assert re.findall(r"^--- (\S+) done in [0-9.]+ s$", log, re.MULTILINE) == EXPECTED_STEPS
    report = json.loads((build_dir / "report.json").read_text())
    assert [step["name"] for step in report["steps"]] == EXPECTED_STEPS
    saved = sorted(p.name for p in (build_dir / "intermediate_models").glob("[0-9][0-9]_step_*.onnx"))
    assert saved == [f"{i + 1:02d}_{name}.onnx" for i, name in enumerate(EXPECTED_STEPS)]


def test_certificate_lists_integer_partition_and_host_scale(default_build):
    _, report = default_build
    cert = report["certificate"]
    assert cert["integer_only"] is True
    assert cert["partition_nodes"] == len(cert["partition"]) > 0
    for node in cert["partition"]:
        assert node["float"] == []
        for tensor in [*node["inputs"], *node["outputs"]]:
            assert tensor["datatype"].startswith(("INT", "UINT")), (node["name"], tensor)
    mvau = [n for n in cert["partition"] if n["op_type"] == "MVAU_rtl"]
    assert mvau[0]["inputs"][0]["datatype"] == "UINT8"  # the raw image feeds the stem directly
    assert {n["inputs"][1]["role"] for n in mvau} == {"weights"}
    host = {n["op_type"] for n in report["host_nodes"]}
    assert "Mul" in host  # the logit scale stays on the host
    assert report["output_scale"] > 0


def test_report_holds_estimates_within_the_board(default_build):
    _, report = default_build
    est = report["estimates"]
    assert set(est["total"]) == {"LUT", "BRAM_18K", "URAM", "DSP"}
    for layer in est["layers"].values():
        assert set(layer) == {"LUT", "BRAM_18K", "URAM", "DSP", "cycles"} and layer["cycles"] > 0
    assert est["total"]["DSP"] == sum(layer["DSP"] for layer in est["layers"].values())
    assert est["max_cycles"] == max(layer["cycles"] for layer in est["layers"].values())
    assert est["clock_mhz"] == 100.0
    assert est["fps"] == pytest.approx(100e6 / est["max_cycles"])
    assert est["fps"] >= est["target_fps"]
    assert est["latency_ms"] == pytest.approx(est["critical_path_cycles"] * 1e-5)
    assert all(0 < share <= 0.8 for share in est["board_share"].values())
    assert report["board"]["part"] == "xc7z020clg400-1"
    assert report["status"] == "no_vivado"



def test_no_vivado_stops_with_exit_3_and_reuses_finished_steps(default_model, default_build, monkeypatch,
                                                               capsys):
    build_dir, _ = default_build
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # no vivado, whatever the machine has
    code = main(["build", "--model", str(default_model)])  # captured stderr is no terminal: no bar
    err = capsys.readouterr().err
    assert code == 3
    *steps, message = err.strip().splitlines()
    n = len(EXPECTED_STEPS)
    assert steps == [f"[{i + 1:2d}/{n}] {name:<36} reused" for i, name in enumerate(EXPECTED_STEPS)]
    assert message.startswith("agq build: error: Stopped before the Vivado steps.")
    assert "Vivado 2022.2 or 2024.2" in message and "Pynq-Z2 board files" in message
    assert str(build_dir / "partition_hdl.onnx") in message
    assert f"agq build --model {default_model} --board Pynq-Z2" in message
    report = json.loads((build_dir / "report.json").read_text())
    assert all(step["reused"] for step in report["steps"])
    assert main(["build", "--model", str(default_model), "--no-progress", "--allow-missing-vivado"]) == 0
    assert "Stopped before the Vivado steps." in capsys.readouterr().out


def test_float_operation_in_partition_fails_the_certificate(tmp_path):
    residual = build_model(ModelConfig(arch="residual", stem_channels=8, widths=[8], depths=[1], strides=[1]))
    with pytest.raises(AgqError, match="integer-only certificate failed") as err:
        build_accelerator(export(residual, tmp_path), allow_missing_vivado=True, progress=False)
    assert "ElementwiseAdd" in str(err.value) and "FLOAT32" in str(err.value)
    cert = json.loads((tmp_path / "Pynq-Z2" / "report" / "integer_certificate.json").read_text())
    assert cert["integer_only"] is False
    report = json.loads((tmp_path / "Pynq-Z2" / "report.json").read_text())
    assert report["status"] == "failed" and report["error"] == str(err.value)
    assert report["steps"][-1]["name"] == "step_create_dataflow_partition"


def test_integer_annotated_parameter_with_fractions_is_float(default_build):
    from agq.hw.certificate import certificate

    build_dir, _ = default_build
    partition, parent = load(build_dir / "partition_hdl.onnx"), load(build_dir / "parent.onnx")
    mvau = next(n for n in partition.graph.node if n.op_type == "MVAU_rtl")
    weights = partition.get_initializer(mvau.input[1])
    partition.set_initializer(mvau.input[1], (weights * 0.5).astype(np.float32))
    cert = certificate(partition, parent)
    assert not cert["integer_only"]
    assert [n["name"] for n in cert["partition"] if n["float"]] == [mvau.name]


def test_global_pooling_is_refused(tmp_path):
    with pytest.raises(AgqError, match="global pooling has only an HLS layer") as err:
        build_accelerator(export(Tiny(pool=True), tmp_path), allow_missing_vivado=True, progress=False,
                          all_rtl=True)
    assert "strided convolution" in str(err.value)


def test_full_range_2bit_weights_fall_back_to_hls(tmp_path):
    with pytest.raises(AgqError, match="all-RTL check failed") as err:
        build_accelerator(export(Tiny(narrow=False), tmp_path), allow_missing_vivado=True, progress=False,
                          all_rtl=True)
    assert "MVAU_hls" in str(err.value) and "full-range INT2" in str(err.value)
    assert "narrow_range=True" in str(err.value)


def test_unreachable_target_and_oversized_folding_fail_with_figures(default_model, tmp_path):
    with pytest.raises(AgqError, match=r"folding misses the target: 1000000 frames/s needs <= 100 cycles"):
        build_accelerator(default_model, out_dir=tmp_path / "fast", allow_missing_vivado=True,
                          config=HwConfig(target_fps=1_000_000), progress=False)
    with pytest.raises(AgqError, match=r"does not fit Pynq-Z2 .* DSP \d+ of 220"):
        build_accelerator(default_model, out_dir=tmp_path / "small", allow_missing_vivado=True,
                          config=HwConfig(target_fps=20_000, max_utilization=0.05), progress=False)


def test_unknown_board_lists_the_known_ones(default_model):
    with pytest.raises(AgqError, match="unknown board 'Pynq-Z9'") as err:
        build_accelerator(default_model, board="Pynq-Z9")
    assert "Pynq-Z2" in str(err.value) and "ZCU104" in str(err.value) and "U250" in str(err.value)


def test_bad_input_files_give_one_line_errors(tmp_path, capsys):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx model\xff" * 8)
    plain = tmp_path / "plain.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])),
              str(plain))
    missing = tmp_path / "nope.onnx"
    cases = {garbage: "is not an ONNX model", plain: "is not a QONNX model", missing: "not found"}
    for path, expected in cases.items():
        assert main(["build", "--model", str(path), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err


def test_hw_config_is_validated(tmp_path):
    assert load_hw_config() == HwConfig()  # configs/hw/default.yaml states the defaults
    bad = tmp_path / "hw.yaml"
    bad.write_text("target_fps: 1000\nclock: 5\n")
    with pytest.raises(AgqError, match="unknown key clock"):
        load_hw_config(bad)
    bad.write_text("target_fps: fast\n")
    with pytest.raises(AgqError, match="target_fps='fast': must be >= 1 or \"max\""):
        load_hw_config(bad)


def test_an_error_inside_a_finn_step_is_one_line_with_the_traceback_in_the_log(default_build, tmp_path):
    from agq.hw.runner import StepRunner

    build_dir, _ = default_build

    def step_explodes(model, cfg):
        raise ValueError("deep inside FINN\nsecond line")

    with (tmp_path / "build.log").open("w") as log:
        runner = StepRunner(tmp_path, cfg=None, base_key="k", log=log, progress=False)
        with pytest.raises(AgqError) as err:
            runner.run([step_explodes], load(build_dir / "parent.onnx"))
    assert str(err.value).startswith("step_explodes failed: ValueError: deep inside FINN (traceback in")
    assert "\n" not in str(err.value)
    assert 'raise ValueError("deep inside FINN' in (tmp_path / "build.log").read_text()


def test_the_build_is_exactly_the_expected_steps(tmp_path, monkeypatch):
    from agq.hw import finn_env

    for name in ("FINN_BUILD_DIR", "FINN_SETTINGS"):  # use_build_dir sets them: restored after the test
        monkeypatch.setenv(name, os.environ.get(name, ""))
    finn_env.use_build_dir(tmp_path)  # FINN's settings, as a build makes them, before importing its steps
    finn_env.finn_steps()
    from agq.hw.steps import build_steps

    assert [step.__name__ for step in build_steps(max_fps=True)] == EXPECTED_STEPS
    fixed = ["step_target_fps_parallelization" if n == "step_max_fps_folding" else n for n in EXPECTED_STEPS]
    assert [step.__name__ for step in build_steps(max_fps=False)] == fixed


def toy_steps(names, calls, fail=""):
    """Cheap stand-ins for build steps: each records its call (and ``fail`` raises, like a killed build)."""
    def make(name):
        def step(model, cfg):
            if name == fail:
                raise RuntimeError("killed")
            calls.append(name)
            return model
        step.__name__ = name
        return step
    return [make(name) for name in names]


def run_toy(build_dir, key, names, fail=""):
    """(steps that ran, reuse flag per step) of one StepRunner run of the toy steps."""
    from agq.hw.runner import StepRunner
    from qonnx.core.modelwrapper import ModelWrapper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = ModelWrapper(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                                             [x], [y])))
    calls = []
    with (build_dir / "build.log").open("a") as log:
        runner = StepRunner(build_dir, cfg=None, base_key=key, log=log, progress=False)
        runner.run(toy_steps(names, calls, fail), model)
    return calls, [r["reused"] for r in runner.records]


def test_step_cache_reuses_what_is_unchanged_and_reruns_from_the_first_change(tmp_path):
    steps = ["step_a", "step_b", "step_c", "step_d"]
    assert run_toy(tmp_path, "k1", steps) == (steps, [False] * 4)
    assert run_toy(tmp_path, "k1", steps) == ([], [True] * 4)  # unchanged: everything reused
    # another config or model (another base key): everything reruns
    assert run_toy(tmp_path, "k2", steps) == (steps, [False] * 4)
    # a step inserted: the steps before it are reused, it and every later step rerun
    inserted = ["step_a", "step_b", "step_x", "step_c", "step_d"]
    assert run_toy(tmp_path, "k2", inserted) == (["step_x", "step_c", "step_d"], [True, True] + [False] * 3)
    # a build killed in step_c: the next run reuses step_a and step_b only
    with pytest.raises(AgqError, match="step_c failed: RuntimeError: killed"):
        run_toy(tmp_path, "k3", steps, fail="step_c")
    assert run_toy(tmp_path, "k3", steps) == (["step_c", "step_d"], [True, True, False, False])
    # a lost intermediate model: reuse stops before the step that wrote it
    (tmp_path / "intermediate_models" / "02_step_b.onnx").unlink()
    assert run_toy(tmp_path, "k3", steps) == (["step_b", "step_c", "step_d"], [True, False, False, False])


def test_build_key_changes_with_the_model_and_every_hw_setting(default_model, tmp_path):
    from agq.hw.boards import resolve_board
    from agq.hw.build import base_key

    proto = onnx.load(str(default_model))
    board, out = resolve_board("Pynq-Z2"), tmp_path / "out"

    def key(model=proto, cfg=None, **kw):
        return base_key(model, cfg or HwConfig(), kw.get("board", board), kw.get("build_dir", out),
                        kw.get("all_rtl", True))

    assert key() == key(onnx.load(str(default_model)), HwConfig())  # unchanged: the same key, reused
    changed = onnx.load(str(default_model))
    weights = next(t for t in changed.graph.initializer if t.float_data or t.raw_data)
    weights.raw_data = bytes(weights.raw_data[:-1]) + bytes([weights.raw_data[-1] ^ 1])
    folding = tmp_path / "folding.json"
    folding.write_text("{}")
    with_folding = key(cfg=HwConfig(folding_config=str(folding)))
    others = [key(changed), key(cfg=HwConfig(fifo_depth=16)), key(cfg=HwConfig(clock_ns=5.0)),
              key(cfg=HwConfig(target_fps=1000)), key(board=resolve_board("ZCU104")),
              key(build_dir=tmp_path / "elsewhere"), key(all_rtl=False), with_folding]
    assert len({key(), *others}) == len(others) + 1
    folding.write_text('{"Defaults": {}}')  # the folding file's content counts, not only its name
    assert key(cfg=HwConfig(folding_config=str(folding))) != with_folding
