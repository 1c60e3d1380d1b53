"""Checkpoint files: the contract between ``agq train`` and every later stage.

A checkpoint's content is a ``torch.save`` dict:

* ``config``: the run's :class:`training.config.Config` as plain data
* ``model``: the deployable F's ``state_dict`` (no AG / KD / auxiliary-head parameter)
* ``meta``: :class:`CheckpointMeta` as plain data
* ``trainer``: everything ``--resume`` needs (optimizer, scheduler, RNG states, the training objective's
  state); absent in files written for deployment only.

torch checks neither the CRCs of its zip archive nor anything else on load, so a flipped bit in the
weights loads silently. The file is therefore an envelope, itself a ``torch.save`` dict ``{"format":
"agq-checkpoint-v2", "sha256": ..., "content": <the content's torch.save bytes as a uint8 tensor>}``
(a tensor, so that torch stores the bytes as they are rather than pickled as text), and
every load (resume, export, rtlsim, bench) checks the sha256 before unpickling the content. Files of the older
format ``agq-checkpoint-v1`` (the content dict itself, with no checksum) still load, unchecked.

Files are written atomically (agq.io).
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from agq.training.config import Config, config_from_dict
from agq.training.models import QuantCNN, build_model

from agq.errors import AgqError
from agq.io import atomic_write_bytes, bytes_sha256, not_a_file

FORMAT = "agq-checkpoint-v2"
LEGACY_FORMAT = "agq-checkpoint-v1"
CHECKPOINT = "checkpoint.pt"  # the final, deployable F of a run
LAST = "last.pt"  # the state after the last finished epoch, for --resume
PHASES = ("pretrain", "finetune")


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about its network besides the weights: the data it was trained on and how
    far. ``metrics`` are F's last evaluated test (and validation) metrics, ``test_top1`` ... in percent."""

    dataset: str
    classes: list[str]
    epoch: int
    phase: str
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "checkpoint") -> CheckpointMeta:
        """Validated meta; a wrong or missing field is one AgqError naming ``source`` and the field."""
        def bad(key: str, want: str) -> AgqError:
            return AgqError(f"{source}: meta.{key} must be {want}, got {data.get(key)!r}")

        if not isinstance(data, dict):
            raise AgqError(f"{source}: meta must be a mapping, got {type(data).__name__}")
        if not isinstance(data.get("dataset"), str) or not data["dataset"]:
            raise bad("dataset", "a dataset name")
        classes = data.get("classes")
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise bad("classes", "a non-empty list of class names")
        if not isinstance(data.get("epoch"), int) or data["epoch"] < 0:
            raise bad("epoch", "an epoch number >= 0")
        if data.get("phase") not in PHASES:
            raise bad("phase", " or ".join(PHASES))
        metrics = data.get("metrics", {})
        if not isinstance(metrics, dict) or not all(
                isinstance(v, int | float) and math.isfinite(v) for v in metrics.values()):
            raise bad("metrics", "a mapping of finite numbers")
        return cls(data["dataset"], list(classes), data["epoch"], data["phase"], dict(metrics))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically write a checkpoint (``config``, ``model``, ``meta``, optional ``trainer``) in its
    checksummed envelope."""
    path = Path(path)
    meta = payload["meta"]
    content = {**payload, "meta": (meta if isinstance(meta, CheckpointMeta)
                                  else CheckpointMeta.from_dict(meta, path)).to_dict()}
    content.pop("format", None)
    inner = io.BytesIO()
    torch.save(content, inner)
    data = bytearray(inner.getbuffer())
    envelope = io.BytesIO()
    torch.save({"format": FORMAT, "sha256": bytes_sha256(data),
                "content": torch.frombuffer(data, dtype=torch.uint8)}, envelope)
    atomic_write_bytes(path, envelope.getvalue())


def _torch_load(source: Path | io.BytesIO, path: Path) -> Any:
    try:
        return torch.load(source, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, ImportError, IndexError, TypeError, UnicodeDecodeError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AgqError(f"checkpoint {path} is corrupt or not a torch file: {first_line}") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint, checking its sha256; any problem is one :class:`AgqError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AgqError(f"checkpoint {not_a_file(path)}: {path} (run 'make train' first, "
                       "or pass --checkpoint)")
    payload = _torch_load(path, path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        tensor = payload.get("content")
        content = tensor.numpy().tobytes() if isinstance(tensor, torch.Tensor) else b""
        if bytes_sha256(content) != payload.get("sha256"):
            raise AgqError(f"checkpoint {path} is damaged: its content does not match its recorded sha256 "
                           "(altered or corrupted on disk); train again or restore a copy")
        payload = _torch_load(io.BytesIO(content), path)
    elif not isinstance(payload, dict) or payload.get("format") != LEGACY_FORMAT:
        raise AgqError(f"checkpoint {path} is not an agq checkpoint (expected format {FORMAT})")
    if not isinstance(payload, dict):
        raise AgqError(f"checkpoint {path} is not an agq checkpoint (its content is not a mapping)")
    for key in ("config", "model", "meta"):
        if key not in payload:
            raise AgqError(f"checkpoint {path} lacks '{key}'")
    CheckpointMeta.from_dict(payload["meta"], f"checkpoint {path}")
    return payload


def _checkpoint_config(payload: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    """The validated config stored in a checkpoint."""
    try:
        return config_from_dict(payload["config"])
    except AgqError as exc:
        raise AgqError(f"checkpoint {path} holds an invalid config: {exc}") from None


def load_deployable(path: str | Path) -> tuple[Config, QuantCNN, CheckpointMeta]:
    """(config, F in eval mode with its trained weights, meta) from a checkpoint file."""
    payload = load_checkpoint(path)
    cfg = _checkpoint_config(payload, path)
    model = build_model(cfg.model)
    try:
        model.load_state_dict(payload["model"], strict=True)
    except RuntimeError as exc:
        raise AgqError(
            f"checkpoint {path} does not fit its model config: {str(exc).splitlines()[0]}"
        ) from None
    return cfg, model.eval(), CheckpointMeta.from_dict(payload["meta"], path)
