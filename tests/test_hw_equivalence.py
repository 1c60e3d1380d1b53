"""The generated hardware computes F bit for bit: a small model is trained, exported and built with agq's
own stages, FINN's RTL is stitched and simulated cycle by cycle with Verilator, and every image's
integer logits must equal FINN's Python execution and PyTorch's. Back-pressure must not change a result,
a stall must stop the run with the stream that moved last, and one flipped weight bit must be caught.

Runs in CI on two cores in a few minutes: digits_tiny trains in seconds, and the compiled simulator is
cached (~/.cache/agq/rtlsim, or $AGQ_RTLSIM_CACHE) after the first run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from agq.export.qonnx import export_checkpoint
from agq.hw.build import build_accelerator
from agq.hw.rtlsim.report import FOLDER, LOGITS
from agq.hw.rtlsim.run import simulate
from agq.training.config import load_config
from agq.training.loop import train
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from agq.errors import AgqError

CONFIG = "configs/digits_tiny.yaml"


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hw_equivalence")
    cfg = load_config(CONFIG, [f"train.output_dir={root / 'runs'}"])
    checkpoint = train(cfg, progress=False)
    model = export_checkpoint(checkpoint, root / "export")
    return build_accelerator(model, allow_missing_vivado=True, progress=False)


@pytest.fixture(scope="module")
def baseline(build_dir):
    report = simulate(build_dir, images=10_000, progress=False)  # the whole digits test split (360)
    return report, np.load(build_dir / FOLDER / LOGITS)


def assert_bit_exact(report: dict) -> None:
    """Every image equals FINN; it equals PyTorch except where a float tie is shown with both values."""
    n, exact = report["images"], report["bit_exact"]
    assert exact["finn_python"] == n, f"differs from FINN's Python execution: {exact}"
    for diff in exact["differences"]:
        print(f"image {diff['image']}: hardware {diff['hardware']} vs PyTorch {diff['pytorch']}: "
              f"{diff['cause']}")
        assert diff["float_tie"], f"image {diff['image']} differs from PyTorch and it is no float tie"
    assert exact["undiagnosed_differences"] == 0
    assert exact["pytorch"] + exact["pytorch_float_ties"] == n
    assert report["ok"]


def test_rtl_equals_finn_and_pytorch_on_every_image(build_dir, baseline):
    from agq.training.data import test_images

    report, logits = baseline
    n = len(test_images(load_config(CONFIG).data)[1])
    assert report["images"] == n
    assert logits.shape == (n, 10) and logits.dtype == np.int64
    assert len(np.unique(logits, axis=0)) > 0.8 * n, "the logits must depend on the image"
    assert_bit_exact(report)
    cycles = report["cycles"]
    assert 0 < cycles["first_output"] <= cycles["first_image"] and cycles["steady_state_per_image"] > 0
    assert_saved_verdict(build_dir, report, ok=True)


def assert_saved_verdict(build_dir: Path, report: dict, ok: bool) -> None:
    """The files on disk carry the run's verdict and counts, not just labels that name "bit-exact"."""
    saved = json.loads((build_dir / FOLDER / "report.json").read_text())
    assert saved["ok"] is ok and saved["bit_exact"] == report["bit_exact"]
    assert saved["images"] == report["images"]
    verdict = "**bit-exact**" if ok else "**NOT bit-exact**"
    assert f"Result: {verdict}" in (build_dir / FOLDER / "report.md").read_text()


@pytest.mark.parametrize("stall_prob", [0.5, 0.999])
def test_output_stalls_leave_every_result_unchanged(build_dir, baseline, stall_prob):
    reference, logits = baseline
    report = simulate(build_dir, images=40, stall_prob=stall_prob, seed=7, jobs=2, progress=False)
    assert_bit_exact(report)
    assert report["simulation"]["finn_python_cached_images"] == 40  # the baseline computed them
    assert np.array_equal(np.load(build_dir / FOLDER / LOGITS), logits[:40])
    if stall_prob > 0.99:  # ten output words take ~10,000 cycles: back-pressure slows the whole pipeline
        slowed = report["cycles"]["steady_state_per_image"]
        assert slowed > 1.5 * reference["cycles"]["steady_state_per_image"]


def test_stall_watchdog_names_the_last_stream(build_dir):
    from agq.hw import finn_env
    from agq.hw.rtlsim.build_info import read_build
    from agq.hw.rtlsim.drive import ChunkedRun
    from agq.hw.rtlsim.references import partition_inputs
    from agq.hw.rtlsim.stitch import stitch
    from agq.hw.rtlsim.verilator import compile_design
    from agq.training.data import test_images

    info = read_build(build_dir)
    finn_env.use_build_dir(build_dir)
    design = stitch(ModelWrapper(str(info.partition)))
    images, _ = test_images(load_config(CONFIG).data, 4)
    run = ChunkedRun(compile_design(design), design, partition_inputs(info.parent, images),
                     stall_prob=0.99999, seed=0, jobs=1, watchdog=2000, max_cycles_per_image=10**7)
    stalled = r"no AXI stream moved for 2000 cycles.*last stream that moved: \S+"
    with run, pytest.raises(AgqError, match=stalled):
        run.start()
        run.wait()


def test_one_flipped_weight_bit_is_caught(build_dir):
    partition = ModelWrapper(str(build_dir / "partition_hdl.onnx"))
    stem = next(n for n in partition.graph.node if n.op_type.startswith("MVAU"))
    memory = Path(getCustomOp(stem).get_nodeattr("code_gen_dir_ipgen")) / "memblock.dat"
    original = memory.read_text()
    first = original.splitlines()[0]
    # bit 8 of the word's lowest 16-bit stem weight: +-256, large enough to move activations on every
    # image, small enough for the accumulator (finn-rtllib's overflow assertion would stop the run)
    flipped = first[:-3] + format(int(first[-3], 16) ^ 0x1, "x") + first[-2:]
    memory.write_text(original.replace(first, flipped, 1))
    try:
        report = simulate(build_dir, images=10_000, progress=False)  # the whole digits test split (360)
    finally:
        memory.write_text(original)
    exact, n = report["bit_exact"], report["images"]
    assert not report["ok"]
    assert exact["finn_python"] < n and exact["pytorch"] < n
    assert exact["differences"] and not any(d["float_tie"] for d in exact["differences"])
    assert_saved_verdict(build_dir, report, ok=False)


def test_agq_rtlsim_exits_non_zero_when_not_bit_exact(build_dir, baseline, tmp_path, capsys):
    from agq.training.data import test_images

    from agq.cli import main

    images, _ = test_images(load_config(CONFIG).data, 12)
    expected = baseline[1][:12].copy()  # the hardware's integer outputs on these images
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "right.npy", expected)
    expected[5, 3] += 1
    np.save(tmp_path / "wrong.npy", expected)
    command = ["rtlsim", "--build", str(build_dir), "--inputs", str(tmp_path / "images.npy"), "--no-progress",
               "--expected"]

    assert main([*command, str(tmp_path / "right.npy")]) == 0
    assert main([*command, str(tmp_path / "wrong.npy")]) == AgqError.exit_code
    assert "agq rtlsim: error: the RTL simulation is not bit-exact" in capsys.readouterr().err
    saved = json.loads((build_dir / FOLDER / "report.json").read_text())
    assert saved["ok"] is False and saved["references"] == ["finn_python", "pytorch", "expected"]
    assert saved["bit_exact"]["expected"] == 11 and saved["bit_exact"]["expected_differing_images"] == [5]
    assert saved["bit_exact"]["finn_python"] == 12  # the hardware itself still equals FINN


def test_simulator_key_covers_every_optimisation_flag(monkeypatch):
    from agq.hw.rtlsim import verilator

    files = {"agq_top.sv": "module agq_top; endmodule", "tb.cpp": "int main() {}"}
    key = verilator.simulator_key(files, "verilator 5.48.0", set())
    assert verilator.simulator_key(files, "verilator 5.48.0", set()) == key
    flags = verilator.build_flags()
    assert {"-O3", "fast", "OPT_FAST=-O2"} <= set(flags)
    monkeypatch.setattr(verilator, "MAKE_OPT_FLAGS", ("OPT_FAST=-O3", "OPT_SLOW=-O1", "OPT_GLOBAL=-O2"))
    o3 = verilator.simulator_key(files, "verilator 5.48.0", set())
    monkeypatch.setattr(verilator, "CXX_FLAGS", verilator.CXX_FLAGS + " -march=native")
    native = verilator.simulator_key(files, "verilator 5.48.0", set())
    monkeypatch.setattr(verilator, "VERILATOR_FLAGS", tuple(f for f in flags if f != "-O3"))
    verilator_o0 = verilator.simulator_key(files, "verilator 5.48.0", set())
    assert len({key, o3, native, verilator_o0}) == 4


def test_finn_reference_cache_hits_the_same_partition_and_images_only(tmp_path):
    from agq.hw.rtlsim.reference_cache import ReferenceCache

    partition, root = tmp_path / "partition_hdl.onnx", tmp_path / "cache"
    partition.write_bytes(b"partition A")
    images = np.arange(24, dtype=np.float32).reshape(4, 6)
    computed = []

    def values(x: np.ndarray) -> np.ndarray:
        return np.stack([x.sum(axis=1), x.max(axis=1)], axis=1).astype(np.int64)

    def finn(x: np.ndarray) -> np.ndarray:
        computed.append(len(x))
        return values(x)

    assert np.array_equal(ReferenceCache(partition, root).outputs(images, finn), values(images))
    again = ReferenceCache(partition, root)  # a new run: reads the file
    assert np.array_equal(again.outputs(images, finn), values(images)) and again.hits == 4
    assert computed == [4]
    mixed = np.concatenate([images[:2], images[:2] + 100])
    assert np.array_equal(again.outputs(mixed, finn), values(mixed)) and again.hits == 2
    assert computed == [4, 2]  # only the two new images

    partition.write_bytes(b"partition B")  # a rebuilt model: nothing of A's may be reused
    changed = ReferenceCache(partition, root)
    changed.outputs(images, finn)
    assert changed.hits == 0 and computed == [4, 2, 4]

    changed.path.write_bytes(b"spoiled")  # an unreadable file is recomputed, never trusted
    spoiled = ReferenceCache(partition, root)
    assert np.array_equal(spoiled.outputs(images, finn), values(images)) and spoiled.hits == 0
    assert computed == [4, 2, 4, 4]


def test_stitch_refuses_a_layer_without_rtl(build_dir):
    from agq.hw import finn_env
    from agq.hw.rtlsim.stitch import stitch

    finn_env.use_build_dir(build_dir)
    partition = ModelWrapper(str(build_dir / "partition_hdl.onnx"))
    node = next(n for n in partition.graph.node if n.op_type == "Thresholding_rtl")
    node.op_type, node.domain = "Thresholding_hls", "finn.custom_op.fpgadataflow.hls"
    with pytest.raises(AgqError, match=rf"node {node.name} \(Thresholding_hls\) is not an RTL layer"):
        stitch(partition)


def test_a_mis_wired_top_is_refused(build_dir):
    import dataclasses
    import re

    from agq.hw import finn_env
    from agq.hw.rtlsim.stitch import stitch
    from agq.hw.rtlsim.verilator import compile_design

    finn_env.use_build_dir(build_dir)
    design = stitch(ModelWrapper(str(build_dir / "partition_hdl.onnx")))
    wire = re.search(r"wire \[(\d+):0\] (w_\w+_TDATA);", design.top_sv)
    narrow = design.top_sv.replace(wire.group(0), f"wire [{int(wire.group(1)) - 1}:0] {wire.group(2)};")
    with pytest.raises(AgqError, match=r"generated top is mis-wired: %Warning-WIDTH"):
        compile_design(dataclasses.replace(design, top_sv=narrow))


def test_finn_verifies_the_intermediate_models_against_pytorch(build_dir):
    import json

    report = json.loads((build_dir / "report.json").read_text())
    assert report["agq_export"] is True and report["partition"]["all_rtl"]
    verification = report["finn_verification"]
    assert verification["data"].startswith("PyTorch (")
    n = len(np.load(build_dir / "input.npy"))
    assert n == len(np.load(build_dir / "expected_output.npy")) > 0
    assert verification["steps"] == {step: {"passed": n, "failed": 0}
                                     for step in ("finn_onnx_python", "initial_python", "streamlined_python")}


def test_one_float_tie_rule_for_export_and_rtlsim():
    """export.reference's rule: codes one step apart and every known pre-quantization value on the
    rounding threshold up to TIE_TOLERANCE_STEPS; rtlsim knows PyTorch's value only, export both."""
    from agq.export.reference import TIE_TOLERANCE_STEPS, float_ties

    scale = 0.25
    on = 1.5 * scale  # the threshold between codes 1 and 2
    near, far = on * (1 + TIE_TOLERANCE_STEPS / 10), on + 0.3 * scale
    pytorch, hardware = np.array([2.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])
    rtlsim = (np.array([near, far, near]),)  # the third differs by two codes
    assert float_ties(pytorch, hardware, rtlsim, scale).tolist() == [True, False, False]
    both = (np.array([near, near]), np.array([near, far]))  # export: QONNX's value far from it is an error
    assert float_ties(pytorch[:2], hardware[:2], both, scale).tolist() == [True, False]
