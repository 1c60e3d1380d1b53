"""How steady F's test score is from epoch to epoch, scored with BN's running averages and with BN
statistics re-estimated for the final weights (``train.bn_recalibration: every_epoch`` records both).

Why: at depth 32 (bench/results/mnist_deep32_ag, seed 4) plain and plain + AG trained with a steady loss
while their test top-1 jumped by tens of points between epochs, so a row's final score said more about
where its last epoch fell than about the method. This table shows, per record, whether re-estimated
statistics remove those jumps.
"""

from __future__ import annotations

from typing import Any

from agq.bench.rows import BY_NAME
from agq.bench.table import METRIC, epoch_values

RUNNING = f"running_bn_{METRIC}"
LAST = 10  # epochs at the end of fine-tuning over which the range (max - min) is taken


def _scores(values: list[float]) -> dict[str, float]:
    tail = values[-LAST:]
    return {"final": values[-1], "range_last": max(tail) - min(tail)}


def stability(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per record that scored both ways: final top-1 and the range over the last ``LAST`` epochs."""
    out = []
    for record in sorted(records, key=lambda r: (r["row"], int(r["seed"]))):
        running, recalibrated = epoch_values(record, metric=RUNNING), epoch_values(record)
        if running and len(running) == len(recalibrated):
            out.append({"row": record["row"], "seed": int(record["seed"]), "last_epochs": LAST,
                        "running": _scores(running), "recalibrated": _scores(recalibrated)})
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["### BN statistics: running averages against re-estimated (train.bn_recalibration)", "",
             "| method | seed | final top-1 %, running averages | final top-1 %, re-estimated | "
             f"range over the last {LAST} epochs, running | range, re-estimated |", "|---" * 6 + "|"]
    for r in rows:
        run, cal = r["running"], r["recalibrated"]
        lines.append(f"| {BY_NAME[r['row']].label} | {r['seed']} | {run['final']:.2f} | {cal['final']:.2f} | "
                     f"{run['range_last']:.2f} | {cal['range_last']:.2f} |")
    return "\n".join(lines) + "\n"
