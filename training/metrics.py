"""Accuracy of a model's logits, and the per-epoch metrics files of a run (CSV, JSON, PNG plot).

Every file is written whole and atomically, so a run killed at any moment leaves the previous epoch's
complete files behind.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from agq.training.batches import eval_batches
from agq.training.data import ImageSet
from agq.training.distributed import Cluster

from agq.io import atomic_write_bytes

Logits = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@torch.no_grad()
def accuracy(logits_of: Logits, data: ImageSet, batch_size: int, cluster: Cluster) -> dict[str, float]:
    """Top-1 and top-5 in percent of every output of ``logits_of`` (``F``, ``H`` ...) over ``data``.

    Each process scores its share; the counts are summed over processes.
    """
    correct: dict[str, list[float]] = {}
    seen = 0
    for x, y in eval_batches(data, batch_size, cluster):
        seen += len(y)
        for name, logits in logits_of(x).items():
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices == y[:, None]
            counts = correct.setdefault(name, [0.0, 0.0])
            counts[0] += float(top[:, 0].sum())
            counts[1] += float(top.any(dim=1).sum())
    names = sorted(correct)
    totals = cluster.all_sum([c for name in names for c in correct[name]] + [float(seen)])
    n = totals.pop()
    return {f"{name}_top{k}": 100.0 * totals[2 * i + j] / n
            for i, name in enumerate(names) for j, k in enumerate((1, 5))}


class MetricsLog:
    """Rows of per-epoch metrics, rewritten to ``metrics.csv``, ``metrics.json`` and ``metrics.png``."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.rows: list[dict[str, Any]] = []

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.write()

    def write(self) -> None:
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.run_dir / "metrics.csv", text.getvalue().encode())
        atomic_write_bytes(self.run_dir / "metrics.json", (json.dumps(self.rows, indent=1) + "\n").encode())
        atomic_write_bytes(self.run_dir / "metrics.png", self._plot())

    def _plot(self) -> bytes:
        # A bare Figure renders to PNG without pyplot, so the process's matplotlib backend is left alone.
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 3.5), layout="constrained")
        loss_ax, acc_ax = fig.subplots(1, 2)
        x = [row["global_epoch"] for row in self.rows]
        loss_ax.plot(x, [row["train_loss"] for row in self.rows], marker="o")
        loss_ax.set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss")
        for key in ("test_F_top1", "val_F_top1", "test_H_top1"):
            points = [(row["global_epoch"], row[key]) for row in self.rows if row.get(key) is not None]
            if points:
                acc_ax.plot(*zip(*points, strict=True), marker="o", label=key)
        pretrain = [row["global_epoch"] for row in self.rows if row["phase"] == "pretrain"]
        for ax in (loss_ax, acc_ax):
            if pretrain:
                ax.axvspan(0.5, max(pretrain) + 0.5, color="0.92", label="_full precision")
        acc_ax.set(xlabel="epoch", ylabel="top-1 %", title="accuracy (shaded: full-precision pre-training)")
        acc_ax.legend(fontsize="small")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()
