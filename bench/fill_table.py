"""Records from a user's own ``agq train`` run folders (e.g. the CIFAR-100 configs on a GPU).

Each folder under DIR that holds ``metrics.json`` and a checkpoint (``checkpoint.pt`` or ``last.pt``)
becomes one record. Its table row is read from its config: architecture, AG, SSP and baseline switches;
a plain run with more fine-tuning epochs than the others is the compute-matched row. The weight-scale
domain is read as in ``agq bench``'s settings: the domain the runs share is the base every row takes, and
only where linear and log runs are mixed do the log ones map to the ``*_log`` rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agq.bench.rows import PRETRAINED_ONLY, ROWS, Row

from agq.errors import AgqError


def signature(cfg: dict[str, Any]) -> tuple[Any, ...]:
    """What tells the rows apart, from a config dict (settings of switched-off parts do not count)."""
    ag, ssp, base = cfg["ag"], cfg["ssp"], cfg["baseline"]
    ag_keys = ("design", "granularity", "head", "copy_bn", "pretrain")
    return (cfg["model"]["arch"], cfg["model"]["weight_bits"], cfg["model"]["act_bits"],
            cfg["model"].get("weight_scale", "linear"),  # configs saved before the key: linear
            tuple(ag.get(k) for k in ag_keys) if ag["enabled"] else None,
            (ssp["fragment"], ssp["weights_activations"]) if ssp["enabled"] else None,
            base["kd"], base["aux_losses"])


def _row_signature(r: Row, scale: str) -> tuple[Any, ...]:
    from agq.training.config import Config

    cfg = Config().to_dict()  # a fresh deep copy
    cfg["ag"]["enabled"] = cfg["ssp"]["enabled"] = False  # the base of every row: plain, nothing added
    cfg["model"]["weight_scale"] = scale
    for key, value in r.overrides.items():
        section, leaf = key.split(".")
        cfg[section][leaf] = value
    return signature(cfg)


def base_scale(cfgs: list[dict[str, Any]]) -> str:
    """The weight-scale domain every row takes: linear unless no run is linear."""
    domains = {cfg["model"].get("weight_scale", "linear") for cfg in cfgs}
    return "log" if domains == {"log"} else "linear"


def row_of(cfg: dict[str, Any], base_epochs: int, scale: str = "linear") -> str:
    """The row a run belongs to (the first in table order, where a log base makes ``plain`` and
    ``plain_log`` one computation); runs that fit no row are an error naming the differing switches."""
    factor = cfg["train"]["epochs"] // base_epochs if base_epochs else 1
    sig = signature(cfg)
    for r in ROWS:
        if r.name not in PRETRAINED_ONLY and _row_signature(r, scale) == sig and r.epoch_factor == factor:
            return r.name
    raise AgqError(f"run {cfg['name']!r} fits no benchmark row (arch/AG/SSP/baseline = {sig}, "
                   f"{cfg['train']['epochs']} fine-tuning epochs vs {base_epochs})")


def records_from_runs(folder: Path) -> list[dict[str, Any]]:
    """One record per run folder under ``folder`` (see the module docstring)."""
    from agq.training.checkpoint import load_checkpoint

    runs = []
    for metrics in sorted(folder.glob("*/metrics.json")):
        candidates = (metrics.parent / "checkpoint.pt", metrics.parent / "last.pt")
        ckpt = next((p for p in candidates if p.is_file()), None)
        if ckpt is None:
            raise AgqError(f"run folder {metrics.parent} has metrics.json but no checkpoint.pt or last.pt")
        runs.append((load_checkpoint(ckpt)["config"], json.loads(metrics.read_text())))
    if not runs:
        raise AgqError(f"no run folders with metrics.json under {folder}")
    base_epochs = min((cfg["train"]["epochs"] for cfg, _ in runs if cfg["train"]["epochs"]), default=0)
    scale = base_scale([cfg for cfg, _ in runs])
    return [{"row": row_of(cfg, base_epochs, scale), "arch": cfg["model"]["arch"],
             "seed": cfg["train"]["seed"], "config": cfg, "history": history}
            for cfg, history in runs if cfg["train"]["epochs"]]
