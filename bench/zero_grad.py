"""Which low-bit weights get no gradient: Brevitas' plain clamp against its straight-through clamp.

Brevitas solves a learned-scale weight quantizer (``PARAMETER_FROM_STATS``) to ``TensorClamp``, whose
backward is zero for every weight beyond the clamp, so such a weight can never move back into range.
For F at the start of fine-tuning (the shared pre-training of seed 0, scales initialised as fine-tuning
does) and for F after fine-tuning (the plain row of seed 0), this counts per low-bit layer the share of
weights whose gradient on one batch of 256 training images is exactly zero, with each clamp
(``model.weight_clamp``). Reads the accuracy benchmark's run folders.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from agq.errors import AgqError

BATCH = 256
CASES = {"start of fine-tuning (after pre-training)": "pretrain_plain_s0/last.pt",
         "after fine-tuning (plain row, STE clamp)": "plain_s0/checkpoint.pt"}


def zero_gradient_shares(checkpoint: Path) -> dict[str, dict[str, float]]:
    """{clamp: {layer: share of weights with an exactly zero gradient}} for the F in ``checkpoint``."""
    import torch
    import torch.nn.functional as tf
    from agq.training.checkpoint import load_checkpoint
    from agq.training.config import config_from_dict
    from agq.training.data import load_splits
    from agq.training.models import build_model
    from agq.training.objective import init_weight_scales

    payload = load_checkpoint(checkpoint)
    cfg = config_from_dict(payload["config"])
    train = load_splits(cfg.data).train
    x = torch.from_numpy(train.images[:BATCH]).float()
    y = torch.from_numpy(train.labels[:BATCH])
    out: dict[str, dict[str, float]] = {}
    for clamp in ("clamp", "ste"):
        torch.manual_seed(0)
        model = build_model(dataclasses.replace(cfg.model, weight_clamp=clamp)).train()
        model.load_state_dict(payload["model"], strict=False)  # pre-training has no weight scales yet
        init_weight_scales(model)  # no-op where the checkpoint holds them
        tf.cross_entropy(model(x), y).backward()
        out[clamp] = {f"block{i}.layer{j}": float((layer.conv.weight.grad == 0).float().mean())
                      for i, block in enumerate(model.blocks) for j, layer in enumerate(block.layers)}
    return out


def measure(runs: Path) -> dict[str, Any]:
    """Both cases of :data:`CASES` from the benchmark's run folder ``runs`` (runs/bench)."""
    result = {}
    for label, rel in CASES.items():
        path = runs / rel
        if not path.is_file():
            raise AgqError(f"zero-gradient part needs {path}: run `agq bench --only accuracy` first")
        shares = zero_gradient_shares(path)
        result[label] = {"checkpoint": rel, "per_layer": shares,
                         "mean": {c: sum(v.values()) / len(v) for c, v in shares.items()}}
    return {"batch": BATCH, "cases": result}


def markdown(report: dict[str, Any]) -> str:
    lines = ["## Low-bit weights with an exactly zero gradient (share per layer, one batch of "
             f"{report['batch']})", "",
             "| F | plain clamp (Brevitas' default): mean, min-max over layers | straight-through clamp |",
             "|---|---|---|"]
    for label, case in report["cases"].items():
        cells = []
        for clamp in ("clamp", "ste"):
            low, high = min(case["per_layer"][clamp].values()), max(case["per_layer"][clamp].values())
            cells.append(f"{100 * case['mean'][clamp]:.1f} % ({100 * low:.1f}-{100 * high:.1f})")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines.append("\nPer-layer values: zero_grad.json. agq uses the straight-through clamp "
                 "(`model.weight_clamp: ste`, training/quant.py).")
    return "\n".join(lines) + "\n"
