"""Benchmark: the whole MNIST test set (10,000 images) through the RTL simulation of the default model.

    .venv/bin/python -m agq.bench.rtlsim_mnist [--build build/mnist_plain_ag/Pynq-Z2] [--jobs N]

Needs ``make train export build`` (the default config). Every image must be bit-exact against FINN's
Python execution and PyTorch (``hw.rtlsim.run.simulate``, one simulator process per CPU unless
``--jobs``); the simulated cycles per image, the frames/s they give at the board clock, FINN's estimate,
and the simulation's own speed (images/s, simulated cycles/s on this machine, wall seconds, and how many
of FINN's Python outputs came from the reference cache: a first run computes them, later ones reuse
them) go to bench/results/rtlsim_mnist.json, written even when the check fails
(with ``ok: false``), so that a failure is recorded, not hidden. Exit status 1 when not bit-exact.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

DEFAULT_BUILD = Path("build/mnist_plain_ag/Pynq-Z2")
RESULT = Path("bench/results/rtlsim_mnist.json")


def result_record(report: dict, wall: float) -> dict:
    """The flat figures the README and bench/hardware.py show, plus where the full report is."""
    cyc, perf, sim, exact = report["cycles"], report["performance"], report["simulation"], report["bit_exact"]
    return {
        "ok": report["ok"],
        "images": report["images"],
        "dataset": report["dataset"],
        "bit_exact_finn_python": exact["finn_python"],
        "bit_exact_pytorch": exact["pytorch"],
        "pytorch_float_ties": exact["pytorch_float_ties"],
        "hardware_top1": report["accuracy"]["top1"],
        "first_output_cycles": cyc["first_output"],
        "first_image_cycles": cyc["first_image"],
        "steady_state_cycles_per_image": cyc["steady_state_per_image"],
        "finn_estimate_cycles_per_image": perf["finn_estimate_cycles_per_image"],
        "ratio_to_finn_estimate": perf["ratio_to_finn_estimate"],
        "clock_mhz": perf["clock_mhz"],
        "simulated_fps_at_clock": perf["fps"],
        "finn_estimate_fps": perf["finn_estimate_fps"],
        "simulated_cycles_total": cyc["simulated"],
        "simulated_cycles_per_second": sim["cycles_per_second"],
        "simulated_cycles_per_cpu_second": sim["cycles_per_cpu_second"],
        "simulator_cpu_seconds": sim["simulator_cpu_seconds"],
        "simulation_images_per_second": sim["images_per_second"],
        "simulation_wall_seconds": sim["wall_seconds"],
        "simulator_build_seconds": sim["simulator_build_seconds"],
        "finn_python_cached_images": sim["finn_python_cached_images"],
        "total_wall_seconds": round(wall, 1),
        "jobs": report["jobs"],
        "verilator": sim["verilator"],
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "build_dir": report["build_dir"],
        "report": str(Path(report["build_dir"]) / "rtlsim" / "report.json"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agq.bench.rtlsim_mnist",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=DEFAULT_BUILD,
                        help=f"build folder (default {DEFAULT_BUILD})")
    parser.add_argument("--images", type=int, default=10_000, help="test images (default: all 10,000)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="parallel simulator processes (default: one per CPU)")
    parser.add_argument("--out", type=Path, default=RESULT, help=f"result file (default {RESULT})")
    args = parser.parse_args(argv)

    from agq.hw.rtlsim.report import summary
    from agq.hw.rtlsim.run import simulate

    from agq.errors import AgqError
    from agq.io import write_json

    start = time.monotonic()
    try:
        report = simulate(args.build, images=args.images, jobs=args.jobs)
    except AgqError as exc:
        print(f"bench rtlsim_mnist: error: {exc}", file=sys.stderr)
        return exc.exit_code
    record = result_record(report, time.monotonic() - start)
    write_json(args.out, record)
    print(summary(report))
    print(f"wrote {args.out} ({record['total_wall_seconds']} s in all)")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
