"""What ``--resume`` needs besides weights and optimizer state: RNG states and the right to resume at all.

A run resumes only with the config it was started with. The few keys that do not change the result
(where the data lives, threads, device, output folder) may differ; any other difference, above all a
different model, is refused with the first differing key named.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from agq.training.checkpoint import load_checkpoint
from agq.training.config import Config, saved_config

from agq.config_loader import differences
from agq.errors import AgqError

MAY_DIFFER = frozenset({"data.root", "data.archive", "data.num_workers", "train.threads", "train.device",
                        "train.output_dir"})


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) global generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_state(cfg: Config, path: Path) -> dict[str, Any]:
    """The checkpoint to resume from, after checking that it belongs to this config."""
    if not path.is_file():
        raise AgqError(f"cannot resume: {path} not found (start without --resume)")
    payload = load_checkpoint(path)
    if "trainer" not in payload:
        raise AgqError(f"cannot resume from {path}: it holds no trainer state")
    saved = saved_config(payload["config"], f"cannot resume from {path}: its config is no longer valid")
    diffs = differences(saved, cfg.to_dict(), MAY_DIFFER)
    if diffs:
        key, saved, current = diffs[0]
        raise AgqError(f"cannot resume from {path}: it was trained with config {key}={saved!r}, "
                       f"this config has {current!r}")
    return payload
