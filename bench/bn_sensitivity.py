"""How F's test top-1 depends on the BN statistics it is evaluated with, for each fine-tuned run.

Why: at depth 32, re-estimating BN statistics after every epoch steadied plain but not plain + AG
(bench/results/mnist_deep32_recal). This scores each run's final F (``checkpoint.pt``) with its saved
statistics, with each test batch's own statistics (BN as in training), with statistics re-estimated over
``DRAWS`` different sets of ``CALIBRATION_BATCHES`` training batches (as training/bn_recalibration.py
does), and over every training batch. A network that scores alike under all of them can be evaluated
with fixed statistics; one that does not works only with the statistics of the batch in hand. Also lists
the BN channels whose running variance is under BN's eps. Reads the accuracy benchmark's run folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agq.errors import AgqError

DRAWS = 5
DRAW_EPOCH = 10_000  # calibration batches come from epochs no training run reaches


def sensitivity(checkpoint: Path) -> dict[str, Any]:
    """The scores above (top-1 %) and the low-variance channels of the F in ``checkpoint``."""
    import torch
    from agq.training.batches import TrainBatches
    from agq.training.bn_recalibration import CALIBRATION_BATCHES, batch_norms, recalibrate_bn
    from agq.training.checkpoint import load_checkpoint
    from agq.training.config import config_from_dict
    from agq.training.data import load_splits
    from agq.training.distributed import Cluster
    from agq.training.loop import EVAL_BATCH
    from agq.training.metrics import accuracy
    from agq.training.models import build_model

    payload = load_checkpoint(checkpoint)
    cfg = config_from_dict(payload["config"])
    model = build_model(cfg.model)
    model.load_state_dict(payload["model"])
    splits, cluster = load_splits(cfg.data), Cluster(0, 1, torch.device("cpu"))
    batches = TrainBatches(splits.train, cfg.data.batch_size, cfg.data.dataset, cfg.data.augment,
                           cfg.train.seed, cluster)
    norms = batch_norms(model)

    @torch.no_grad()
    def score(batch_statistics: bool = False) -> float:
        """Top-1 % as training evaluates (its batch of 500); with batch statistics, over training's batch."""
        model.eval()
        momenta = [norm.momentum for norm in norms]
        for norm in norms if batch_statistics else []:
            norm.train()
            norm.momentum = 0.0  # normalise with the batch's statistics, keep the running ones
        batch = cfg.data.batch_size if batch_statistics else EVAL_BATCH
        top1 = accuracy(lambda x: {"F": model(x)}, splits.test, batch, cluster)["F_top1"]
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.eval()
        return top1

    def reestimate(epoch: int, steps: int) -> float:
        recalibrate_bn(model, model, batches.epoch(epoch), steps)
        return score()

    eps = norms[0].eps if norms else 0.0
    names = {m: name for name, m in model.named_modules()}
    low = {names[m]: int((m.running_var < m.eps).sum()) for m in norms}
    result = {"saved": score(), "test_batch_statistics": score(batch_statistics=True),
              f"reestimated_{CALIBRATION_BATCHES}_batches": [
                  reestimate(DRAW_EPOCH + d, CALIBRATION_BATCHES) for d in range(DRAWS)],
              "reestimated_all_batches": reestimate(DRAW_EPOCH + DRAWS, len(batches)),
              "bn_eps": eps, "channels_with_variance_under_eps": {k: v for k, v in low.items() if v}}
    return result


def measure(runs: Path) -> dict[str, Any]:
    """Every fine-tuned run folder under ``runs`` (those with a ``checkpoint.pt`` and no pre-training)."""
    found = sorted(p for p in runs.glob("*/checkpoint.pt") if not p.parent.name.startswith("pretrain"))
    if not found:
        raise AgqError(f"BN-sensitivity part needs fine-tuned runs in {runs}: run `agq bench --only accuracy`"
                       " first")
    return {"runs": {p.parent.name: sensitivity(p) for p in found}}


def markdown(report: dict[str, Any]) -> str:
    from agq.training.bn_recalibration import CALIBRATION_BATCHES

    key = f"reestimated_{CALIBRATION_BATCHES}_batches"
    lines = ["## F's test top-1 % under different BN statistics (final checkpoint)", "",
             f"| run | saved | each test batch's own | re-estimated, {DRAWS} draws of {CALIBRATION_BATCHES} "
             "batches | re-estimated, all training batches | channels with variance under eps |",
             "|---" * 6 + "|"]
    for name, r in report["runs"].items():
        draws = ", ".join(f"{v:.2f}" for v in r[key])
        low = sum(r["channels_with_variance_under_eps"].values())
        lines.append(f"| {name} | {r['saved']:.2f} | {r['test_batch_statistics']:.2f} | {draws} | "
                     f"{r['reestimated_all_batches']:.2f} | {low} |")
    return "\n".join(lines) + "\n"
