"""How steady F's test score is from epoch to epoch: for every fine-tuned record, the final top-1 and its
range over the last epochs as training scored them, and beside them the scores with BN's running averages
where the run re-estimated its statistics every epoch (``train.bn_recalibration: every_epoch`` records both).

Why: at depth 32 (bench/results/mnist_deep32_ag, seed 4) plain and plain + AG trained with a steady loss
while their test top-1 jumped by tens of points between epochs, so a row's final score said more about
where its last epoch fell than about the method. This table shows, per record, whether the final score is
a point of a steady curve, and whether re-estimated statistics remove the jumps.
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
    """Per record fine-tuned for at least ``LAST`` epochs: final top-1 and the range over the last ``LAST``
    epochs as scored in training (``scored``) and, where recorded beside it, with BN's running averages
    (``running``, else None). Shorter runs have no such window and are left out."""
    out = []
    for record in sorted(records, key=lambda r: (r["row"], int(r["seed"]))):
        scored, running = epoch_values(record), epoch_values(record, metric=RUNNING)
        if len(scored) >= LAST:
            out.append({"row": record["row"], "seed": int(record["seed"]), "last_epochs": LAST,
                        "scored": _scores(scored),
                        "running": _scores(running) if len(running) == len(scored) else None})
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["### Steadiness of the final score (bench/bn_stability.py)", "",
             "As scored in training: with BN's running averages, or with statistics re-estimated after each "
             "epoch where the run did so (`train.bn_recalibration: every_epoch`), whose running-average "
             "scores are then given beside them.", "",
             f"| method | seed | final top-1 % | range over the last {LAST} epochs | "
             "final, running averages | range, running averages |", "|---" * 6 + "|"]
    for r in rows:
        run = r["running"]
        beside = f"{run['final']:.2f} | {run['range_last']:.2f}" if run else "- | -"
        lines.append(f"| {BY_NAME[r['row']].label} | {r['seed']} | {r['scored']['final']:.2f} | "
                     f"{r['scored']['range_last']:.2f} | {beside} |")
    return "\n".join(lines) + "\n"
