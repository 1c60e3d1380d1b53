"""Hardware figures of the deployed default model: FINN's estimates on Pynq-Z2 and simulated cycles.

Read from what ``make build`` and ``make rtlsim`` leave behind (build/<name>/<board>/report.json and
bench/results/rtlsim_mnist.json, written by bench.rtlsim_mnist). When the build report is missing but the
exported model exists, the build is run (``allow_missing_vivado``), and with a build but no simulation
result bench.rtlsim_mnist runs; training and export are not started from here - the section then says
which make targets produce them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agq.hw.report import REPORT, BuildReport

DEFAULT_MODEL = "mnist_plain_ag"
BOARD = "Pynq-Z2"
RTLSIM_RESULT = Path("bench/results/rtlsim_mnist.json")


RTLSIM_SHOWN = ("images", "ok", "bit_exact_pytorch", "hardware_top1", "steady_state_cycles_per_image",
                "first_image_cycles", "finn_estimate_cycles_per_image", "simulated_fps_at_clock")


def rtlsim_result(name: str) -> Path:
    """bench.rtlsim_mnist's result file for model ``name`` (its own default for the default model)."""
    return RTLSIM_RESULT if name == DEFAULT_MODEL else RTLSIM_RESULT.with_name(f"rtlsim_{name}.json")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _build_report(build_dir: Path) -> dict[str, Any] | None:
    """The finished build's report.json, its recorded outputs checked (hw.report.BuildReport.read)."""
    return BuildReport.read(build_dir).to_dict() if (build_dir / REPORT).is_file() else None


def collect(build_root: Path = Path("build"), name: str = DEFAULT_MODEL, board: str = BOARD,
            build_missing: bool = True) -> dict[str, Any]:
    """Estimates (LUT/BRAM/DSP, frames/s) and simulated cycles per image, whichever exist."""
    build_dir = build_root / name / board
    report = _build_report(build_dir)
    model = build_root / name / "model.onnx"
    if report is None and build_missing and model.is_file():
        from agq.hw.build import build_accelerator

        build_accelerator(model, board, build_dir, allow_missing_vivado=True)
        report = _build_report(build_dir)
    out: dict[str, Any] = {"model": name, "board": board, "build_report": str(build_dir / REPORT)}
    if report is None:
        out["missing"] = (f"no {build_dir / REPORT} and no {model}: run `make train export build` "
                          f"(CONFIG=configs/{name}.yaml) first")
    else:
        est = report["estimates"]
        out["estimates"] = {"LUT": est["total"]["LUT"], "BRAM_18K": est["total"]["BRAM_18K"],
                            "DSP": est["total"]["DSP"], "fps": est["fps"], "clock_mhz": est["clock_mhz"],
                            "max_cycles": est["max_cycles"], "bottleneck": est["bottleneck"],
                            "latency_ms": est["latency_ms"], "board_share": est["board_share"]}
    result = rtlsim_result(name)
    rtlsim = _read(result)
    if rtlsim is None and report is not None and build_missing:  # the RTL-simulation engineer's benchmark
        import subprocess
        import sys

        subprocess.run([sys.executable, "-m", "agq.bench.rtlsim_mnist", "--build", str(build_dir), "--out",
                        str(result)], check=False)
        rtlsim = _read(result)
    if rtlsim is not None:
        out["rtlsim"] = rtlsim
    return out


def markdown(hw: dict[str, Any]) -> str:
    lines = [f"## Hardware: {hw['model']} on {hw['board']}", ""]
    if "estimates" in hw:
        e = hw["estimates"]
        lines += ["FINN estimates (no Vivado synthesis here):", "",
                  "| LUT | BRAM18 | DSP | frames/s | clock MHz | cycles/frame (slowest layer) | latency ms |",
                  "|---|---|---|---|---|---|---|",
                  f"| {e['LUT']:.0f} | {e['BRAM_18K']:.0f} | {e['DSP']:.0f} | {e['fps']:.0f} | "
                  f"{e['clock_mhz']:.0f} | {e['max_cycles']} ({e['bottleneck']}) | {e['latency_ms']:.3f} |"]
    else:
        lines.append(hw["missing"])
    rtlsim = hw.get("rtlsim")
    if rtlsim is not None:
        shown = [k for k in RTLSIM_SHOWN if k in rtlsim]
        lines += ["", "RTL simulation (Verilator, bench.rtlsim_mnist):", "",
                  "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown),
                  "| " + " | ".join(f"{rtlsim[k]:.4g}" if isinstance(rtlsim[k], float) else str(rtlsim[k])
                                    for k in shown) + " |"]
    else:
        lines += ["", f"No RTL simulation result ({rtlsim_result(hw['model'])}); "
                  "`python -m agq.bench.rtlsim_mnist` produces the cycle count."]
    return "\n".join(lines) + "\n"
