"""Checkpoint files: the contract between ``agq train`` and every later stage.

A checkpoint is a ``torch.save`` dict:

* ``format``: ``"agq-checkpoint-v1"``
* ``config``: the run's :class:`training.config.Config` as plain data
* ``model``: the deployable F's ``state_dict`` (no AG / KD / auxiliary-head parameter)
* ``meta``: ``dataset``, ``classes`` (names), ``epoch``, ``phase`` (``pretrain`` / ``finetune``),
  ``metrics`` (the last evaluated test metrics of F: ``test_top1`` ... in percent)
* ``trainer``: everything ``--resume`` needs (optimizer, scheduler, RNG states, the training objective's
  state); absent in files written for deployment only.

Files are written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from agq.training.config import Config, config_from_dict
from agq.training.models import QuantCNN, build_model

from agq.errors import AgqError
from agq.io import atomic_write_bytes

FORMAT = "agq-checkpoint-v1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a checkpoint dict (``format`` is filled in)."""
    import io

    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and sanity-check a checkpoint; any problem is one :class:`AgqError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AgqError(f"checkpoint not found: {path} (run 'make train' first, or pass --checkpoint)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AgqError(f"checkpoint {path} is corrupt or not a torch file: {first_line}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AgqError(f"checkpoint {path} is not an agq checkpoint (expected format {FORMAT})")
    for key in ("config", "model", "meta"):
        if key not in payload:
            raise AgqError(f"checkpoint {path} lacks '{key}'")
    return payload


def _checkpoint_config(payload: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    """The validated config stored in a checkpoint."""
    try:
        return config_from_dict(payload["config"])
    except AgqError as exc:
        raise AgqError(f"checkpoint {path} holds an invalid config: {exc}") from None


def load_deployable(path: str | Path) -> tuple[Config, QuantCNN, dict[str, Any]]:
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
    return cfg, model.eval(), payload["meta"]
