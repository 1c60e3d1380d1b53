"""What ``agq rtlsim`` reads from a build folder (``agq build``) and the export beside it (``agq export``).

A model agq exported has a ``model.json`` beside it, naming the checkpoint the PyTorch reference is
computed from; a model agq did not train has none, and is checked against FINN and the user's own
expected outputs only. Every missing or inconsistent piece is one :class:`AgqError` that names the file
and the command that makes it, so that a user who skipped a stage learns which one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agq.errors import AgqError
from agq.io import file_sha256

BUILD_REPORT = "report.json"
MODEL_CARD = "model.json"


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


def _read_json(path: Path, made_by: str) -> dict[str, Any]:
    if not path.is_file():
        raise AgqError(f"{path} not found: run `{made_by}` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AgqError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); "
                       f"run `{made_by}` again") from None


def _get(data: dict[str, Any], path: Path, *keys: str) -> Any:
    value: Any = data
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise AgqError(f"{path} lacks '{'.'.join(keys)}': written by an older agq? rebuild it")
        value = value[key]
    return value


def _card(model_onnx: Path, report: dict[str, Any]) -> tuple[dict[str, Any] | None, Path | None]:
    """(model card, checkpoint) of a model agq exported, (None, None) for a model agq did not train."""
    card_path = model_onnx.parent / MODEL_CARD
    if not report.get("agq_export"):
        return None, None
    card = _read_json(card_path, "agq export")
    checkpoint = Path(_get(card, card_path, "checkpoint", "path"))
    if not checkpoint.is_file():
        raise AgqError(f"checkpoint {checkpoint} (named in {card_path}) not found: the PyTorch reference "
                       "needs it")
    if file_sha256(checkpoint) != _get(card, card_path, "checkpoint", "sha256"):
        raise AgqError(f"checkpoint {checkpoint} changed since it was exported to {model_onnx} (sha256 "
                       "differs from model.json): run `agq export` and `agq build` again")
    return card, checkpoint


def read_build(build_dir: Path) -> BuildInfo:
    """Check and read a build folder; the checkpoint must be the one the model was exported from."""
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise AgqError(f"build folder not found: {build_dir} (run `agq build` first)")
    report_path = build_dir / BUILD_REPORT
    report = _read_json(report_path, "agq build")
    partition = Path(_get(report, report_path, "paths", "partition_hdl"))
    parent = Path(_get(report, report_path, "paths", "parent"))
    for path in (partition, parent):
        if not path.is_file():
            raise AgqError(f"{path} (named in {report_path}) is missing: run `agq build` again")
    non_rtl = _get(report, report_path, "partition", "non_rtl")
    if non_rtl:
        raise AgqError(f"{build_dir} is not an all-RTL build, Verilator cannot simulate it: " + "; ".join(
            f"{n['name']} ({n['op_type']}): {n['reason']}" for n in non_rtl))
    model_onnx = Path(_get(report, report_path, "model"))
    card, checkpoint = _card(model_onnx, report)
    estimates = _get(report, report_path, "estimates")
    latency = estimates.get("critical_path_cycles")
    return BuildInfo(
        build_dir=build_dir,
        partition=partition,
        parent=parent,
        model_onnx=model_onnx,
        checkpoint=checkpoint,
        output_scale=None if (scale := _get(report, report_path, "output_scale")) is None else float(scale),
        clock_mhz=float(_get(report, report_path, "estimates", "clock_mhz")),
        finn_max_cycles=int(_get(report, report_path, "estimates", "max_cycles")),
        finn_bottleneck=str(estimates.get("bottleneck", "")),
        finn_latency_cycles=int(latency) if latency is not None else None,
        report=report,
        card=card,
    )
