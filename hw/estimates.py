"""Estimates and budget: FINN's per-layer estimate reports, summed up and held against the board.

FINN's step_generate_estimate_reports writes analytical per-layer resource and cycle estimates to
``report/``. This module joins them into one table, adds the board share (resources from FINN's own
platform models) and frames/s and latency at the build clock, and fails the build when the folding
does not fit the board or does not reach the target frame rate.
"""

from __future__ import annotations

import json
from pathlib import Path

from agq.hw.boards import Board

from agq.errors import AgqError

# resource kinds reported per layer and in total (FINN's names)
KINDS = ("LUT", "BRAM_18K", "URAM", "DSP")


def _read(report_dir: Path, name: str) -> dict:
    return json.loads((report_dir / name).read_text())


def collect(report_dir: Path, board: Board, clock_ns: float, target_fps: int) -> dict:
    """One dict with per-layer and total LUT/BRAM/URAM/DSP and cycles, frames/s, latency, board share."""
    resources = _read(report_dir, "estimate_layer_resources.json")
    cycles = _read(report_dir, "estimate_layer_cycles.json")
    perf = _read(report_dir, "estimate_network_performance.json")
    layers = {
        name: {**{k: float(res.get(k, 0)) for k in KINDS}, "cycles": int(cycles.get(name, 0))}
        for name, res in resources.items() if name != "total"
    }
    total = {k: sum(layer[k] for layer in layers.values()) for k in KINDS}
    share, note = None, f"FINN has no resource model of {board.name}: board share not checked"
    if board.resources is not None:
        note = "FINN's analytical estimates (RTL MVAUs are counted in DSPs; LUTs exclude them)"
        share = {k: total[k] / board.resources[k] for k in KINDS if board.resources.get(k)}
    clock_mhz = 1e3 / clock_ns
    max_cycles = int(perf["max_cycles"])
    return {
        "layers": layers,
        "total": total,
        "board": board.to_dict(),
        "board_share": share,
        "note": note,
        "clock_mhz": clock_mhz,
        "target_fps": target_fps,
        "target_cycles_per_frame": int(1e9 / clock_ns / target_fps),
        "max_cycles": max_cycles,
        "bottleneck": perf["max_cycles_node_name"],
        "critical_path_cycles": int(perf["critical_path_cycles"]),
        "fps": 1e9 / clock_ns / max_cycles,
        "latency_ms": perf["critical_path_cycles"] * clock_ns * 1e-6,
    }


def check_budget(est: dict, max_utilization: float) -> None:
    """Fail with the figures if the folded design misses the frame-rate target or overfills the board."""
    if est["max_cycles"] > est["target_cycles_per_frame"]:
        raise AgqError(
            f"folding misses the target: {est['target_fps']} frames/s needs <= "
            f"{est['target_cycles_per_frame']} cycles/frame at {est['clock_mhz']:g} MHz, but "
            f"{est['bottleneck']} needs {est['max_cycles']} cycles ({est['fps']:.0f} frames/s); lower "
            "target_fps, raise mvau_wwidth_max (SIMD of wide-weight layers) or give a folding_config"
        )
    share = est["board_share"] or {}
    over = {k: v for k, v in share.items() if v > max_utilization}
    if over:
        board = est["board"]
        figures = ", ".join(
            f"{k} {est['total'][k]:.0f} of {board['resources'][k]} ({100 * v:.0f} %)" for k, v in over.items()
        )
        raise AgqError(
            f"folding does not fit {board['name']} ({board['part']}) within {100 * max_utilization:.0f} % "
            f"of its resources: {figures}; lower target_fps or choose a larger board"
        )
