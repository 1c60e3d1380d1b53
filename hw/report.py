"""report.md: the build as a FINN user reads it, and the folding file to edit for the next build.

One table per layer (FINN's analytical LUT/BRAM/URAM/DSP and cycles, with the layer's PE/SIMD from
the folding FINN applied), the totals against the board and ``max_utilization``, the frame rate and
its bottleneck, and, where Vivado ran, FINN's post-synthesis and out-of-context results. FINN's
analytical model has no flip-flop estimate, so FF is shown only from Vivado's reports.

The folding FINN chose is copied beside the report as ``folding_config.json``: edit PE/SIMD there,
point ``folding_config`` of a hardware config at it and build again (see :data:`FOLDING_LOOP`).
"""

from __future__ import annotations

import json
from pathlib import Path

from agq.hw.estimates import KINDS

from agq.io import atomic_write_bytes

REPORT_MD = "report.md"
FOLDING_COPY = "folding_config.json"
# FINN's folding files in its report folder: what it applied (a user's file) wins over what it chose
FOLDING_FILES = ("applied_folding_config.json", "auto_folding_config.json")
FOLDING_LOOP = """To change the folding: edit `{copy}` (PE and SIMD per layer; PE must divide the layer's
output channels, SIMD its input channels x kernel size), copy it next to a copy of
configs/hw/default.yaml, set `folding_config: {copy}` there (relative to that file) and run
`agq build --model ... --config that.yaml`. FINN applies
the file after its own folding and writes what it applied to `report/applied_folding_config.json`;
report.md then shows the new estimates (and fails the build if they miss the board or the target)."""


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _folding(report_dir: Path) -> tuple[Path | None, dict]:
    for name in FOLDING_FILES:
        data = _read(report_dir / name)
        if data is not None:
            return report_dir / name, data
    return None, {}


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _layer_table(est: dict, folding: dict) -> list[str]:
    rows = ["| layer | LUT | FF | BRAM18 | URAM | DSP | cycles | PE | SIMD |", "|---|" + "---:|" * 8]
    for name, layer in est["layers"].items():
        fold = folding.get(name, {})
        cells = [name, _num(layer["LUT"]), "—", _num(layer["BRAM_18K"]), _num(layer["URAM"]),
                 _num(layer["DSP"]), f"{layer['cycles']:,}", *(str(fold.get(k, "—")) for k in ("PE", "SIMD"))]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _totals(est: dict, max_utilization: float) -> list[str]:
    board = est["board"]
    res = board["resources"] or {}
    rows = [f"| resource | estimate | {board['name']} | share | budget ({100 * max_utilization:.0f} %) |",
            "|---|---:|---:|---:|---:|"]
    for kind in KINDS:
        total = est["total"][kind]
        have = res.get(kind)
        share = f"{100 * total / have:.1f} %" if have else "—"
        budget = f"{max_utilization * have:,.0f}" if have else "—"
        rows.append(f"| {kind} | {total:,.0f} | {_num(have)} | {share} | {budget} |")
    return rows


def _vivado_sections(report_dir: Path) -> list[str]:
    lines = []
    post = _read(report_dir / "post_synth_resources.json")
    if post:
        lines += ["", "## Vivado post-synthesis (FINN's post_synth_resources.json)", "",
                  "| block | LUT | FF | BRAM36 | BRAM18 | DSP |", "|---|---:|---:|---:|---:|---:|"]
        for name, res in post.items():
            lines.append(f"| {name} | " + " | ".join(_num(res.get(k)) for k in
                                                     ("LUT", "FF", "BRAM_36K", "BRAM_18K", "DSP")) + " |")
    ooc = _read(report_dir / "ooc_synth_and_timing.json")
    if ooc:
        lines += ["", "## Out-of-context synthesis (FINN's ooc_synth_and_timing.json)", ""]
        lines += [f"- {key}: {value}" for key, value in ooc.items() if not isinstance(value, dict)]
    return lines


def write(build_dir: Path, report: dict) -> Path:
    """Write ``report.md`` (and the folding copy) from a finished build's report.json data."""
    report_dir = build_dir / "report"
    est = report["estimates"]
    max_utilization = report["config"]["max_utilization"]
    source, folding = _folding(report_dir)
    board = est["board"]
    lines = [f"# agq build: {Path(report['model']).name} on {board['name']} ({board['part']})", "",
             f"Status: **{report['status']}**. Estimates are FINN's analytical models at "
             f"{est['clock_mhz']:g} MHz ({est['note']}); FF comes only from Vivado.", "", "## Per layer", "",
             *_layer_table(est, folding), "", "## Totals against the board", "",
             *_totals(est, max_utilization), "", "## Throughput", "",
             f"- bottleneck {est['bottleneck']}: {est['max_cycles']:,} cycles/frame = "
             f"**{est['fps']:,.0f} frames/s**; latency {est['latency_ms']:.3f} ms; "
             f"target {est['target_fps']:,} frames/s"]
    search = _read(report_dir / "max_fps_search.json")
    if search:
        lines.append(f"- `target_fps: max`: fastest folding within {100 * search['max_utilization']:.0f} % "
                     f"of the board after {search['evaluations']} foldings; binding: {search['binding']}")
    if source is not None:
        atomic_write_bytes(build_dir / FOLDING_COPY, source.read_bytes())
        lines += ["", "## Folding", "", f"`{FOLDING_COPY}` is FINN's `{source.name}`.",
                  FOLDING_LOOP.format(copy=FOLDING_COPY)]
    lines += _vivado_sections(report_dir)
    atomic_write_bytes(build_dir / REPORT_MD, ("\n".join(lines) + "\n").encode())
    return build_dir / REPORT_MD

