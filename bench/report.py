"""Write the benchmark's results folder: accuracy.json, fig3.png, cost.png and README.md.

README.md is rebuilt from whatever results exist (run records, cost.json, hardware.json), so running one
part of the benchmark never drops another part's section.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from agq.bench import bn_sensitivity, bn_stability, borrow, cost, hardware, table, zero_grad

from agq.io import atomic_write_bytes
from agq.io import write_json as _write_json


def title(base: Path | str) -> str:
    """The accuracy table's title: which base config (bench/rows.py changes it per row)."""
    return f"Base config `{base}` (agq bench), test top-1 of the deployed network F"


def write_json(path: Path, data: Any) -> None:
    _write_json(path, data, indent=1)


def write_accuracy(records: list[dict[str, Any]], out: Path, heading: str) -> str:
    """accuracy.json (per row: per-seed values, mean, std; gap shares) and fig3.png; returns Markdown."""
    table.check_shared_starts(records)
    stats, pairs = table.summary(records), table.paired(records)
    gaps = {m: table.gap_recovered(records, m) for m in table.GAP_METHODS}
    pre, steady = table.pretraining(records), bn_stability.stability(records)
    write_json(out / "accuracy.json", {"title": heading, "rows": stats, "paired": pairs, "gap_closed": gaps,
                                        "pretraining": pre, "curves": table.curves(records)}
               | ({"bn_stability": steady} if steady else {}))
    png = table.fig3_png(records)
    if png is not None:
        atomic_write_bytes(out / "fig3.png", png)
    plateau = "\n" + table.pretraining_markdown(pre) if pre else ""
    stable = "\n" + bn_stability.markdown(steady) if steady else ""
    return table.markdown(stats, heading, pairs, gaps, table.setting_scale(records)) + plateau + stable


def cost_png(report: dict[str, Any]) -> bytes:
    """Bars: time and memory per step of every method, relative to plain."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = list(report["methods"])
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.subplots()
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [report["methods"][n]["time_ratio"] for n in names], 0.4,
           label="time / step")
    ax.bar([x + 0.2 for x in xs], [report["methods"][n]["memory_ratio"] for n in names], 0.4,
           label="step memory")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_xticks(list(xs), names, rotation=30, ha="right")
    ax.set(ylabel="x plain", title=f"cost of one fine-tuning step (batch {report['batch']})")
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def write_readme(out: Path, records_dir: Path, base: Path | str) -> Path:
    """README.md from every result present in ``out``."""
    own = table.load_records(records_dir) if records_dir.is_dir() else []
    found = borrow.entries(out)
    records = [*own, *borrow.load(out, found, own)]
    source = "the files in this folder" + (f" and the records its {borrow.BORROWED} names" if found else "")
    parts = ["# agq benchmark results", "",
             f"Written by `agq bench` (bench/); every number below comes from {source}."]
    if records:
        parts += ["", write_accuracy(records, out, title(base)), "![test accuracy per epoch](fig3.png)"]
        borrowed = borrow.markdown(found, records)
        parts += ["", borrowed] if borrowed else []
    cost_json = out / "cost.json"
    if cost_json.is_file():
        report = json.loads(cost_json.read_text())
        atomic_write_bytes(out / "cost.png", cost_png(report))
        parts += ["", cost.markdown(report), "![cost per step](cost.png)"]
    for name, part in (("zero_grad", zero_grad), ("bn_sensitivity", bn_sensitivity)):
        if (out / f"{name}.json").is_file():
            parts += ["", part.markdown(json.loads((out / f"{name}.json").read_text()))]
    hw_json = out / "hardware.json"
    if hw_json.is_file():
        parts += ["", hardware.markdown(json.loads(hw_json.read_text()))]
    path = out / "README.md"
    atomic_write_bytes(path, ("\n".join(parts) + "\n").encode())
    return path


def write_hardware(out: Path, name: str, build_missing: bool) -> dict[str, Any]:
    hw = hardware.collect(name=name, build_missing=build_missing)
    write_json(out / "hardware.json", hw)
    return hw
