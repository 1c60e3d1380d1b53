"""report.md: the build as a FINN user reads it, and the folding file to edit for the next build.

One table per layer (FINN's analytical LUT/BRAM/URAM/DSP and cycles, with the layer's PE/SIMD from
the folding FINN applied), the totals against the board and ``max_utilization``, the frame rate and
its bottleneck, and, where Vivado ran, FINN's post-synthesis and out-of-context results. FINN's
analytical model has no flip-flop estimate, so FF is shown only from Vivado's reports.

The folding FINN chose is copied beside the report as ``folding_config.json``: edit PE/SIMD there,
point ``folding_config`` of a hardware config at it and build again (see :data:`FOLDING_LOOP`).

:class:`BuildReport` is report.json, what ``agq build`` hands to ``agq rtlsim`` and the benchmarks: it
records the sha256 of the files a reader uses (the partition and its parent graph), and
:meth:`BuildReport.read` checks them, so a partition changed after the report (an interrupted or
concurrent build, an edit) is one line naming the file instead of a simulation of the wrong design.
report.json, report.md and the folding copy are committed together (agq.io.commit_files).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agq.hw.estimates import KINDS

from agq.errors import AgqError
from agq.io import commit_files, file_sha256, finish_commit, json_bytes, read_json

REPORT = "report.json"
BUILD_LOG = "build.log"
REPORT_FORMAT = "agq-build-report-v1"
STATUSES = ("failed", "no_vivado", "complete")
FINISHED = ("no_vivado", "complete")  # the statuses whose partition a reader may use
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


@dataclass
class BuildReport:
    """report.json. The sections FINN's and agq's steps produce stay plain data; ``None`` where the build
    did not get that far (a failed build has no partition, certificate or estimates)."""

    status: str
    model: str
    model_sha256: str
    agq_export: bool
    board: dict[str, Any]
    config: dict[str, Any]
    finn_version: str
    vivado: dict[str, Any]
    paths: dict[str, str]
    steps: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # file in the build folder -> its sha256
    error: str | None = None
    build_seconds: float | None = None
    partition: dict[str, Any] | None = None
    certificate: dict[str, Any] | None = None
    host_nodes: list[dict[str, Any]] | None = None
    output_scale: float | None = None
    estimates: dict[str, Any] | None = None
    finn_verification: dict[str, Any] | None = None
    format: str = REPORT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> BuildReport:
        """Validated report; an unknown layout or a wrong field is one line naming the file."""
        if not isinstance(data, dict) or data.get("format", REPORT_FORMAT) != REPORT_FORMAT:
            raise AgqError(f"{path} is not an agq build report ({REPORT_FORMAT}): run `agq build` again")
        legacy = "format" not in data  # written before reports recorded their outputs: nothing to check
        if data.get("status") not in STATUSES:
            raise AgqError(f"{path}: status {data.get('status')!r} is not one of {', '.join(STATUSES)}")
        names = set(cls.__dataclass_fields__)
        if data["status"] in FINISHED:
            wanted = ("partition", "estimates", "certificate") + (() if legacy else ("outputs",))
            missing = [k for k in wanted if not data.get(k)]
            if missing:
                raise AgqError(f"{path} lacks '{missing[0]}' for a finished build: run `agq build` again")
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise AgqError(f"{path} is incomplete ({exc}): run `agq build` again") from None

    @classmethod
    def read(cls, build_dir: Path) -> BuildReport:
        """The report of a finished build in ``build_dir``, its recorded outputs checked against their
        sha256 (after finishing a commit a killed build left)."""
        finish_commit(build_dir)
        path = build_dir / REPORT
        report = cls.from_dict(read_json(path, "agq build"), path)
        if report.status not in FINISHED:
            raise AgqError(f"{path} records a {report.status} build ({report.error}): run `agq build` again")
        for name, sha256 in report.outputs.items():
            file = build_dir / name
            if not file.is_file():
                raise AgqError(f"{file} (recorded in {path}) is missing: run `agq build` again")
            if file_sha256(file) != sha256:
                raise AgqError(f"{file} changed after {path} was written (its sha256 differs from the "
                               "recorded one: an interrupted or concurrent build, or an edit): run "
                               "`agq build` again")
        return report


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


def write(build_dir: Path, report: BuildReport) -> Path:
    """Commit report.json and, for a build that got its estimates, report.md and the folding copy."""
    files = {REPORT: json_bytes(report.to_dict())}
    if report.estimates is not None:
        files |= _markdown(build_dir, report)
    commit_files(build_dir, files)
    return build_dir / REPORT


def _markdown(build_dir: Path, report: BuildReport) -> dict[str, bytes]:
    """report.md (and the folding copy) from a finished build's report."""
    report_dir = build_dir / "report"
    est = report.estimates
    max_utilization = report.config["max_utilization"]
    files = {}
    source, folding = _folding(report_dir)
    board = est["board"]
    lines = [f"# agq build: {Path(report.model).name} on {board['name']} ({board['part']})", "",
             f"Status: **{report.status}**. Estimates are FINN's analytical models at "
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
        files[FOLDING_COPY] = source.read_bytes()
        lines += ["", "## Folding", "", f"`{FOLDING_COPY}` is FINN's `{source.name}`.",
                  FOLDING_LOOP.format(copy=FOLDING_COPY)]
    lines += _vivado_sections(report_dir)
    return files | {REPORT_MD: ("\n".join(lines) + "\n").encode()}

