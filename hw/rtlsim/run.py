"""``simulate``: images through the cycle-level RTL simulation of a build, against its references.

The references are FINN's Python execution of the same partition (always), PyTorch's integer logits
(models agq exported: their checkpoint is known) and the user's expected outputs (``--expected``).
The images are agq's test split of the model's data set, or the user's own (``--inputs``; needed for a
model agq did not train). The simulator processes run while this process computes the references, so
on two cores they cost little extra wall time.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from agq.hw.rtlsim.build_info import BuildInfo, read_build
from agq.hw.rtlsim.drive import ChunkedRun, ChunkResult, unpack_outputs, words_per_image
from agq.hw.rtlsim.report import write_report

from agq.errors import AgqError
from agq.progress import bar as progress_bar

# Longest time without any AXI-stream handshake that is still progress: a layer never computes a whole
# frame without moving a stream, so FINN's per-layer cycle estimate bounds it; floor for tiny designs.
WATCHDOG_FLOOR = 10_000
# A run longer than this many times FINN's estimate per image (plus latency) is a livelock, not slow.
MAX_CYCLES_FACTOR = 50
MAX_DIAGNOSED = 20
DEFAULT_IMAGES = 100


class _TorchReference:
    """PyTorch's exact integer logits of an agq model, and the diagnosis of every image that differs."""

    def __init__(self, model: Any, raw: np.ndarray) -> None:
        from agq.export.layers import trace_quant_layers
        from agq.export.reference import torch_logits

        self.model, self.raw = model, raw
        self.layers = trace_quant_layers(model, (1, *raw.shape[1:]))
        self.exact, self.floats = torch_logits(model, raw)

    def compare(self, hw: np.ndarray, finn_out: np.ndarray, finn_equal: np.ndarray, finn: Any,
                inputs: np.ndarray, output_scale: float) -> tuple[dict[str, Any], bool]:
        """(the report's PyTorch counts and differences, whether only float ties differ)."""
        from agq.hw.rtlsim.references import explain_difference

        torch_equal = (hw == self.exact).all(axis=1)
        rounded_equal = (hw == np.round(self.floats.astype(np.float64) / output_scale)).all(axis=1)
        differences = []
        for i in np.flatnonzero(~torch_equal)[:MAX_DIAGNOSED]:
            if finn_equal[i]:  # the RTL computes what FINN's graph computes: where does that leave PyTorch?
                tie, cause = explain_difference(self.model, self.layers, finn, self.raw[i : i + 1],
                                                inputs[i : i + 1])
            else:
                tie = False
                agree = "agrees" if np.array_equal(finn_out[i], self.exact[i]) else "does not agree either"
                cause = (f"the RTL simulation differs from FINN's Python execution of the same partition "
                         f"(FINN gives {finn_out[i].tolist()}, which {agree} with PyTorch): an RTL, "
                         "stitching or memory-file fault, not float rounding")
            differences.append({
                "image": int(i), "float_tie": tie, "cause": cause,
                "hardware": hw[i].tolist(), "pytorch": self.exact[i].tolist(),
            })
        undiagnosed = int((~torch_equal).sum()) - len(differences)
        result = {
            "pytorch": int(torch_equal.sum()),
            "pytorch_float_ties": sum(d["float_tie"] for d in differences),
            "pytorch_rounded_float_logits": int(rounded_equal.sum()),
            "differences": differences,
            "undiagnosed_differences": undiagnosed,
        }
        return result, undiagnosed == 0 and all(d["float_tie"] for d in differences)


def _steady_state(chunks: list[ChunkResult], out_words: int) -> float | None:
    """Mean cycles between consecutive images' last output words, over every chunk with 2+ images."""
    spans = gaps = 0
    for chunk in chunks:
        if chunk.images >= 2:
            done = chunk.cycles[out_words - 1 :: out_words]
            spans += done[-1] - done[0]
            gaps += len(done) - 1
    return spans / gaps if gaps else None


def default_jobs() -> int:
    """Simulator processes when none are asked for: one per CPU this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _validate(images: int | None, stall_prob: float, jobs: int) -> None:
    if images is not None and images < 1:
        raise AgqError(f"--images {images}: need at least one image")
    if not 0.0 <= stall_prob < 1.0:
        raise AgqError(f"--stall-prob {stall_prob}: must be in [0, 1) (1 would never accept an output)")
    if jobs < 1:
        raise AgqError(f"--jobs {jobs}: need at least one simulator process")


def _images(info: BuildInfo, cfg: Any, images: int | None, inputs: Path | None, expected: Path | None
            ) -> tuple[np.ndarray, np.ndarray | None, str, np.ndarray | None]:
    """(raw images, labels or None, where the images come from, expected integer outputs or None)."""
    from agq.hw.rtlsim.user_data import host_tail, load_expected, load_inputs
    from agq.training.data import test_images
    from qonnx.core.modelwrapper import ModelWrapper

    if inputs is None:
        if cfg is None:
            raise AgqError(f"{info.model_onnx} was not exported by agq (no matching model.json beside "
                           "it), so agq has no test images for it: give them with --inputs X.npy "
                           "[--expected Y.npy]")
        if expected is not None:
            raise AgqError("--expected needs --inputs (the images the expected outputs belong to)")
        raw, labels = test_images(cfg.data, images or DEFAULT_IMAGES)
        return raw, labels, f"{cfg.data.dataset} test split, first {len(raw)}", None
    parent = ModelWrapper(str(info.parent))
    raw = load_inputs(Path(inputs), tuple(parent.get_tensor_shape(parent.graph.input[0].name)))
    want = None
    if expected is not None:
        outputs = int(np.prod(parent.get_tensor_shape(parent.graph.output[0].name)[1:]))
        want = load_expected(Path(expected), len(raw), outputs, host_tail(parent))[:images]
    return raw[:images], None, f"--inputs {inputs}", want


def simulate(
    build_dir: Path, images: int | None = None, stall_prob: float = 0.0, seed: int = 0, *,
    inputs: Path | None = None, expected: Path | None = None, jobs: int | None = None, progress: bool = True,
    write: bool = True,
) -> dict[str, Any]:
    """Simulate images on the build's RTL; returns the report (also written when ``write``).

    The images are the first ``images`` (default 100) of the data set's test split for a model agq
    exported, or the first ``images`` (default all) of ``inputs`` (raw uint8, model input layout);
    ``expected`` holds the model's outputs on them. ``stall_prob`` is the chance that the testbench
    holds the output's TREADY low in a cycle (seeded by ``seed``). ``jobs`` simulator processes split
    the images (default: one per CPU). FINN's Python outputs are cached per partition and image
    (:mod:`hw.rtlsim.reference_cache`), so a second run on the same images only simulates. The report
    says which references were used and counts images whose integer outputs are bit-exact against each,
    and gives top-1 (when labels are known), cycles, frames/s and the simulation speed. It is written to
    ``<build>/rtlsim/report.{json,md}``, the hardware's integer outputs to
    ``<build>/rtlsim/hardware_logits.npy``.
    """
    jobs = default_jobs() if jobs is None else jobs
    _validate(images, stall_prob, jobs)
    from agq.hw import finn_env
    from agq.hw.rtlsim.reference_cache import ReferenceCache
    from agq.hw.rtlsim.references import FinnPython, partition_inputs
    from agq.hw.rtlsim.rtllib_fixes import fixed_files
    from agq.hw.rtlsim.stitch import stitch
    from agq.hw.rtlsim.verilator import cache_root, compile_design, verilator_version
    from agq.training.checkpoint import load_deployable
    from qonnx.core.modelwrapper import ModelWrapper

    info = read_build(Path(build_dir))
    finn_env.use_build_dir(info.build_dir)  # FINN's settings (finn-rtllib path) for its IPI descriptions
    cfg, model = load_deployable(info.checkpoint)[:2] if info.checkpoint else (None, None)
    raw, labels, source, want = _images(info, cfg, images, inputs, expected)
    n = len(raw)
    design = stitch(ModelWrapper(str(info.partition)))
    if progress:
        print(f"agq rtlsim: {len(design.nodes)} nodes, {len(design.streams)} streams; Verilator simulator "
              "(cached once built) ...", file=sys.stderr, flush=True)
    simulator = compile_design(design)
    inputs = partition_inputs(info.parent, raw)
    out_words = words_per_image(design.output.folded_shape)
    cycle_hint = max(info.finn_max_cycles, info.finn_latency_cycles or 0)
    bars = [progress_bar(total=n, desc=desc, unit="img", position=k, leave=True, enabled=progress)
            for k, desc in enumerate(("RTL simulation", "FINN Python"))]
    try:
        with ChunkedRun(
            simulator, design, inputs, stall_prob=stall_prob, seed=seed, jobs=jobs,
            watchdog=max(WATCHDOG_FLOOR, 2 * cycle_hint),
            max_cycles_per_image=int(MAX_CYCLES_FACTOR * cycle_hint / (1.0 - stall_prob)),
            on_image=bars[0].update,
        ) as sim_run:
            start = time.monotonic()
            sim_run.start()
            finn = FinnPython(info.partition)
            cache = ReferenceCache(info.partition, cache_root())
            finn_out = cache.outputs(inputs, lambda missing: finn.outputs(missing, on_image=bars[1].update))
            bars[1].update(cache.hits)
            bars[1].close()
            torch_ref = _TorchReference(model, raw) if model is not None else None
            chunks = sim_run.wait()
            wall = time.monotonic() - start
            cpu_seconds = sim_run.cpu_seconds
    finally:
        for bar in bars:
            bar.close()
    hw = np.concatenate([unpack_outputs(design, c.words, c.images) for c in chunks])

    finn_equal = (hw == finn_out).all(axis=1)
    bit_exact: dict[str, Any] = {
        "finn_python": int(finn_equal.sum()),
        "finn_python_differing_images": np.flatnonzero(~finn_equal)[:MAX_DIAGNOSED].tolist(),
    }
    references = ["finn_python"]
    ok = bool(finn_equal.all())
    if torch_ref is not None:
        references.append("pytorch")
        torch_result, torch_ok = torch_ref.compare(hw, finn_out, finn_equal, finn, inputs, info.output_scale)
        bit_exact.update(torch_result)
        ok = ok and torch_ok
    if want is not None:
        references.append("expected")
        expected_equal = (hw == want).all(axis=1)
        bit_exact["expected"] = int(expected_equal.sum())
        bit_exact["expected_differing_images"] = np.flatnonzero(~expected_equal)[:MAX_DIAGNOSED].tolist()
        ok = ok and bool(expected_equal.all())
    predictions = (hw * np.sign(info.output_scale or 1.0)).argmax(axis=1)
    steady = _steady_state(chunks, out_words)
    first = chunks[0]
    sim_cycles = sum(c.total_cycles for c in chunks)
    report = {
        "format": "agq-rtlsim-v1",
        "build_dir": str(info.build_dir),
        "partition": str(info.partition),
        "dataset": cfg.data.dataset if cfg else "user inputs",
        "inputs": source,
        "expected": str(expected) if expected is not None else None,
        "references": references,
        "images": n,
        "stall_prob": stall_prob,
        "seed": seed,
        "jobs": len(chunks),
        "bit_exact": bit_exact,
        "accuracy": None if labels is None else {"top1": float((predictions == labels).mean()),
                                                 "correct": int((predictions == labels).sum())},
        "cycles": {
            "first_output": first.cycles[0],
            "first_image": first.cycles[out_words - 1],
            "steady_state_per_image": steady,
            "simulated": sim_cycles,
        },
        "performance": {
            "clock_mhz": info.clock_mhz,
            "fps": info.clock_mhz * 1e6 / steady if steady else None,
            "finn_estimate_cycles_per_image": info.finn_max_cycles,
            "finn_estimate_bottleneck": info.finn_bottleneck,
            "finn_estimate_fps": info.clock_mhz * 1e6 / info.finn_max_cycles,
            "ratio_to_finn_estimate": steady / info.finn_max_cycles if steady else None,
            "finn_estimate_latency_cycles": info.finn_latency_cycles,
        },
        "simulation": {
            "verilator": verilator_version(),
            "simulator_key": simulator.key,
            "simulator_build_seconds": round(simulator.build_seconds, 2),
            "simulator_cached": simulator.build_seconds == 0.0,
            "wall_seconds": round(wall, 3),
            "cycles_per_second": sim_cycles / wall,  # all processes together, like images_per_second
            "cycles_per_cpu_second": sim_cycles / cpu_seconds if cpu_seconds > 0 else None,
            "simulator_cpu_seconds": round(cpu_seconds, 2),
            "images_per_second": n / wall,
            "nodes": len(design.nodes),
            "streams": len(design.streams),
            "rtllib_fixes": fixed_files(design.sources),
            "finn_python_cached_images": cache.hits,
        },
    }
    report["ok"] = ok
    if write:
        write_report(info.build_dir, report, hw)
    return report
