"""``target_fps: max``: the fastest FINN folding whose estimate fits the board, and what stops it.

FINN's SetFolding folds every layer just enough to meet a frame-rate target; it does not know the
board. This search asks it for ever higher targets and keeps the fastest design whose analytical
estimate (FINN's res_estimation after the same bit-width minimisation the build runs) stays within
``max_utilization`` of every board resource. The resource that the next faster design overfills is
the *binding* one; if even the most parallel folding fits, the folding itself binds (every layer at
its largest PE/SIMD, or SIMD capped by ``mvau_wwidth_max``).

The frame rates tried are integers and are turned into cycles by FINN's own rule
(``DataflowBuildConfig._resolve_cycles_per_frame``), so the build's FINN step reproduces the winner.
The binary search assumes that a faster target never needs fewer resources; SetFolding mostly
behaves so, and every folding tried is listed in the report, but a fitting design faster than a
failing one would be missed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from functools import partial

from agq.hw.boards import resolve_board
from agq.hw.estimates import KINDS
from qonnx.core.modelwrapper import ModelWrapper

from agq.errors import AgqError
from agq.io import atomic_write_bytes

SEARCH = "max_fps_search.json"


def _evaluate(model: ModelWrapper, cfg: object, fps: int, budget: dict[str, float]) -> dict:
    """Fold ``model`` for ``fps`` as the build would and estimate it: cycles, totals, over-budget kinds."""
    import finn.builder.build_dataflow_steps as finn
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    trial = dataclasses.replace(cfg, target_fps=fps)
    folded = finn.step_target_fps_parallelization(copy.deepcopy(model), trial)
    folded = finn.step_minimize_bit_width(folded, trial)
    resources = folded.analysis(partial(res_estimation, fpgapart=cfg._resolve_fpga_part()))
    max_cycles = max(folded.analysis(exp_cycles_per_layer).values())
    total = {k: sum(float(layer.get(k, 0)) for layer in resources.values()) for k in KINDS}
    over = sorted(k for k, limit in budget.items() if total[k] > limit)
    return {"target_fps": fps, "max_cycles": int(max_cycles), "total": total, "over": over}


def search(model: ModelWrapper, cfg: object) -> dict:
    """Binary search over integer frame rates for the fastest folding that fits; see the module doc."""
    board = resolve_board(cfg.board)
    if board.resources is None:
        raise AgqError(f"target_fps: max needs the board's resources, and FINN has no model of {board.name}")
    budget = {k: cfg.max_utilization * board.resources[k] for k in KINDS if board.resources.get(k)}
    clock_hz = 1e9 / cfg.synth_clk_period_ns
    tried = [_evaluate(model, cfg, int(clock_hz), budget)]  # one cycle per frame: the most parallel folding
    if not tried[0]["over"]:
        best = tried[0]
        binding = (f"folding: every layer at its largest PE/SIMD (SIMD x weight bits <= mvau_wwidth_max="
                   f"{cfg.mvau_wwidth_max}); no resource reaches {100 * cfg.max_utilization:.0f} %")
    else:
        lo, hi = 1, int(clock_hz / tried[0]["max_cycles"])  # lo fits (checked below), hi does not
        low = _evaluate(model, cfg, lo, budget)
        tried.append(low)
        if low["over"]:
            raise AgqError(f"even the most folded design overfills {board.name} "
                           f"({', '.join(low['over'])} above {100 * cfg.max_utilization:.0f} %)")
        best, failed = low, tried[0]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            trial = _evaluate(model, cfg, mid, budget)
            tried.append(trial)
            if trial["over"]:
                hi, failed = mid, trial
            else:
                lo, best = mid, trial
        shares = ", ".join(f"{k} {100 * failed['total'][k] / board.resources[k]:.0f} %"
                           for k in failed["over"])
        binding = (f"{'/'.join(failed['over'])} (the next faster folding, {failed['max_cycles']} "
                   f"cycles/frame, needs {shares} of {board.name})")
    return {"target_fps": best["target_fps"], "max_cycles": best["max_cycles"],
            "fps": clock_hz / best["max_cycles"], "total": best["total"], "binding": binding,
            "max_utilization": cfg.max_utilization, "evaluations": len(tried),
            "tried": [{k: t[k] for k in ("target_fps", "max_cycles", "over")} for t in tried]}


def step_max_fps_folding(model: ModelWrapper, cfg: object) -> ModelWrapper:
    """FINN's folding step at the highest frame rate whose estimate fits the board (``target_fps: max``);
    the search and its binding resource go to ``report/max_fps_search.json``."""
    import finn.builder.build_dataflow_steps as finn

    result = search(model, cfg)
    atomic_write_bytes(cfg.get_report_directory() / SEARCH, json.dumps(result, indent=2).encode())
    chosen = dataclasses.replace(cfg, target_fps=result["target_fps"])
    return finn.step_target_fps_parallelization(model, chosen)


def searched_target(cfg: object) -> int:
    """The frame rate the chosen folding reaches, as the build's target (read back from the search's
    report, so that a reused step still knows it)."""
    return int(json.loads((cfg.get_report_directory() / SEARCH).read_text())["fps"])
