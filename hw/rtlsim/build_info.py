"""What ``agq rtlsim`` reads from a build folder (``agq build``) and the export beside it (``agq export``).

A model agq exported has a ``model.json`` beside it, naming the checkpoint the PyTorch reference is
computed from; a model agq did not train has none, and is checked against FINN and the user's own
expected outputs only. Every file read is checked against the sha256 its writer recorded (the partition
and parent graph in report.json, the model in report.json and model.json, the checkpoint in model.json).
Every missing or inconsistent piece is one :class:`AgqError` that names the file and the command that
makes it, so that a user who skipped or interrupted a stage learns which one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agq.export.model_card import MODEL_CARD, read_card
from agq.hw.report import REPORT, BuildReport

from agq.errors import AgqError
from agq.io import file_sha256


@dataclass(frozen=True)
class BuildInfo:
    """The partition to simulate and the facts the rtlsim report compares against."""

    build_dir: Path
    partition: Path  # partition_hdl.onnx: all-RTL, HDL generated
    parent: Path  # parent.onnx: host nodes around the StreamingDataflowPartition
    model_onnx: Path  # the exported QONNX model the build compiled
    checkpoint: Path | None  # None: a model agq did not export (no PyTorch reference)
    output_scale: float | None  # None: the partition's output is the model's output
    clock_mhz: float
    finn_max_cycles: int  # FINN's estimated cycles per frame of the slowest layer
    finn_bottleneck: str
    finn_latency_cycles: int | None
    report: dict[str, Any]
    card: dict[str, Any] | None


def _card(report: BuildReport, report_path: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """(model card, checkpoint) of a model agq exported, (None, None) for a model agq did not train.
    The model, its card and the checkpoint must be the files the build and the export recorded."""
    if not report.agq_export:
        return None, None
    model_onnx = Path(report.model)
    card = read_card(model_onnx)  # checks the file against the card's sha256: compare that, not hash twice
    if card.model["sha256"] != report.model_sha256:
        raise AgqError(f"{model_onnx} changed after it was built into {report_path.parent} (its sha256 "
                       f"differs from {report_path}'s): run `agq build` again")
    checkpoint = Path(card.checkpoint["path"])
    if not checkpoint.is_file():
        raise AgqError(f"checkpoint {checkpoint} (named in {model_onnx.parent / MODEL_CARD}) not found: "
                       "the PyTorch reference needs it")
    if file_sha256(checkpoint) != card.checkpoint["sha256"]:
        raise AgqError(f"checkpoint {checkpoint} changed since it was exported to {model_onnx} (sha256 "
                       "differs from model.json): run `agq export` and `agq build` again")
    return card.to_dict(), checkpoint


def _get(data: dict[str, Any] | None, path: Path, *keys: str) -> Any:
    value: Any = data
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise AgqError(f"{path} lacks '{'.'.join(keys)}': rebuild it with `agq build`")
        value = value[key]
    return value


def read_build(build_dir: Path) -> BuildInfo:
    """Check and read a build folder: the report's recorded files, the model, its card and checkpoint."""
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise AgqError(f"build folder not found: {build_dir} (run `agq build` first)")
    report = BuildReport.read(build_dir)
    report_path = build_dir / REPORT
    partition = Path(_get(report.paths, report_path, "partition_hdl"))
    parent = Path(_get(report.paths, report_path, "parent"))
    for path in (partition, parent):
        if not path.is_file():
            raise AgqError(f"{path} (named in {report_path}) is missing: run `agq build` again")
    non_rtl = _get(report.partition, report_path, "non_rtl")
    if non_rtl:
        raise AgqError(f"{build_dir} is not an all-RTL build, Verilator cannot simulate it: " + "; ".join(
            f"{n['name']} ({n['op_type']}): {n['reason']}" for n in non_rtl))
    card, checkpoint = _card(report, report_path)
    estimates = report.estimates
    latency = estimates.get("critical_path_cycles")
    return BuildInfo(
        build_dir=build_dir,
        partition=partition,
        parent=parent,
        model_onnx=Path(report.model),
        checkpoint=checkpoint,
        output_scale=None if report.output_scale is None else float(report.output_scale),
        clock_mhz=float(_get(estimates, report_path, "clock_mhz")),
        finn_max_cycles=int(_get(estimates, report_path, "max_cycles")),
        finn_bottleneck=str(estimates.get("bottleneck", "")),
        finn_latency_cycles=int(latency) if latency is not None else None,
        report=report.to_dict(),
        card=card,
    )
