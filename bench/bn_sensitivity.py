"""How F's test top-1 depends on the BN statistics it is evaluated with, for each fine-tuned run.

Why: at depth 32, re-estimating BN statistics after every epoch steadied plain but not plain + AG
(bench/results/mnist_deep32_recal). This scores each run's final F (``checkpoint.pt``) with its saved
statistics, with each test batch's own statistics (BN as in training), with statistics re-estimated over
``DRAWS`` different sets of ``CALIBRATION_BATCHES`` training batches (as training/bn_recalibration.py
does), and over every training batch. A network that scores alike under all of them can be evaluated
with fixed statistics; one that does not works only with the statistics of the batch in hand. Also lists
the BN channels whose running variance is under BN's eps. Reads the accuracy benchmark's run folders.

Where the switch comes from: MNIST's blank background gives every early layer one constant value over most
of the image, so each channel's background is a point mass, and BN places it on the activation quantizer's
scale. A point mass a hair from a rounding threshold (k + 1/2 steps) flips its level for every background
pixel at once when the statistics move a little. So this also places a blank image's centre pixel, before
rounding, for every quantized ReLU: the channels within ``MARGIN`` steps of a threshold under the saved
statistics, and how many channels change level under each draw of re-estimated statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agq.errors import AgqError

DRAWS = 5
DRAW_EPOCH = 10_000  # calibration batches come from epochs no training run reaches
MARGIN = 0.05  # quantization steps: a blank-image value this close to a rounding threshold is listed


def blank_image_grid(model: Any, image: Any) -> dict[str, tuple[Any, Any, int]]:
    """Per quantized ReLU, per channel of ``image``'s centre pixel: the value before rounding in quantization
    steps (the ReLU's input over its scale), the level Brevitas' quantizer gives it (its output over the
    scale), and the quantizer's highest level."""
    import torch
    from brevitas.nn import QuantReLU

    acts = {name: m for name, m in model.named_modules() if isinstance(m, QuantReLU)}
    seen: dict[str, Any] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (i[0], o)))
             for name, m in acts.items()]
    model.eval()
    try:
        with torch.no_grad():
            model(image)
    finally:  # a failed forward must not leave hooks on the caller's model
        for hook in hooks:
            hook.remove()

    def centre(t: Any) -> Any:
        t = t[0]
        return (t[:, t.shape[-2] // 2, t.shape[-1] // 2] if t.dim() == 3 else t).flatten()

    grid = {}
    for name, m in acts.items():
        scale = m.act_quant.scale().detach()
        before, after = (centre(t) / scale for t in seen[name])
        grid[name] = before, after.round(), 2 ** int(m.act_quant.bit_width()) - 1
    return grid


def near_thresholds(grid: dict[str, tuple[Any, Any, int]]) -> dict[str, list[list[float]]]:
    """[channel, value in steps] of every channel within ``MARGIN`` of a rounding threshold k + 1/2."""
    near = {}
    for name, (values, _, top) in grid.items():
        close = (values >= 0) & (values < top) & ((values - values.floor() - 0.5).abs() < MARGIN)
        if close.any():
            near[name] = [[int(c), round(float(values[c]), 3)] for c in close.nonzero().flatten()]
    return near


def changed(a: dict[str, tuple[Any, Any, int]], b: dict[str, tuple[Any, Any, int]]) -> int:
    """How many channels have different levels in ``a`` and ``b``: over all layers, so a change's
    consequences downstream count too."""
    return sum(int((a[name][1] != b[name][1]).sum()) for name in a)


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

    blank = torch.zeros(1, cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)
    saved_grid = blank_image_grid(model, blank)

    def reestimate(epoch: int, steps: int) -> tuple[float, int]:
        """Top-1 % and blank-image level changes against the saved statistics, after re-estimating."""
        recalibrate_bn(model, model, batches.epoch(epoch), steps)
        return score(), changed(saved_grid, blank_image_grid(model, blank))

    eps = norms[0].eps if norms else 0.0
    names = {m: name for name, m in model.named_modules()}
    low = {names[m]: int((m.running_var < m.eps).sum()) for m in norms}
    saved, own = score(), score(batch_statistics=True)  # before any re-estimation replaces the statistics
    draws = [reestimate(DRAW_EPOCH + d, CALIBRATION_BATCHES) for d in range(DRAWS)]
    whole = reestimate(DRAW_EPOCH + DRAWS, len(batches))
    return {"saved": saved, "test_batch_statistics": own,
            f"reestimated_{CALIBRATION_BATCHES}_batches": [top1 for top1, _ in draws],
            "reestimated_all_batches": whole[0],
            "bn_eps": eps, "channels_with_variance_under_eps": {k: v for k, v in low.items() if v},
            "blank_image_margin_steps": MARGIN, "blank_image_near_threshold": near_thresholds(saved_grid),
            "blank_image_level_changes": [n for _, n in [*draws, whole]]}  # the draws, then all batches


def measure(runs: Path, names: set[str] | None = None, previous: Path | None = None) -> dict[str, Any]:
    """Every fine-tuned run folder under ``runs`` (those with a ``checkpoint.pt`` and no pre-training), or
    those of them named in ``names`` (the jobs ``--rows``, ``--seeds`` and ``--first-seed`` choose): one
    swinging run can be measured without the hour a whole folder takes beside running workers.

    ``previous`` is this part's file in the results folder: a run it scored keeps its score when this
    measure leaves it out, since its checkpoint may be gone by now (runs/ is not in git) and the score could
    not be made again; a run measured now replaces its entry. It is read first, so that a broken file stops
    the command before the measuring does."""
    scores = _scored_before(previous) if previous is not None and previous.exists() else {}
    found = sorted(p for p in runs.glob("*/checkpoint.pt") if not p.parent.name.startswith("pretrain")
                   and (names is None or p.parent.name in names))
    if not found:
        which = "fine-tuned runs" if names is None else f"fine-tuned runs of {', '.join(sorted(names))}"
        raise AgqError(f"BN-sensitivity part needs {which} in {runs}: run `agq bench --only accuracy` first")
    scores.update({p.parent.name: sensitivity(p) for p in found})
    return {"runs": {name: scores[name] for name in sorted(scores)}}


def _scored_before(path: Path) -> dict[str, Any]:
    from agq.io import read_earlier_json

    old = read_earlier_json(path)
    if not isinstance(old, dict) or not isinstance(old.get("runs"), dict):
        raise AgqError(f"{path} has no 'runs' table: move it away to measure again")
    return dict(old["runs"])


def markdown(report: dict[str, Any]) -> str:
    from agq.training.bn_recalibration import CALIBRATION_BATCHES

    key = f"reestimated_{CALIBRATION_BATCHES}_batches"
    lines = ["## F's test top-1 % under different BN statistics (final checkpoint)", "",
             f"| run | saved | each test batch's own | re-estimated, {DRAWS} draws of {CALIBRATION_BATCHES} "
             "batches | re-estimated, all training batches | channels with variance under eps | "
             f"blank-image channels within {MARGIN} steps of a rounding threshold (saved) | "
             "blank-image channels that change level (all layers), per re-estimation |",
             "|---" * 8 + "|"]
    for name, r in report["runs"].items():
        draws = ", ".join(f"{v:.2f}" for v in r[key])
        low = sum(r["channels_with_variance_under_eps"].values())
        near = "; ".join(f"{layer} " + ", ".join(f"ch {c} at {v:.3f}" for c, v in hits)
                         for layer, hits in r["blank_image_near_threshold"].items()) or "none"
        flips = ", ".join(str(n) for n in r["blank_image_level_changes"])
        lines.append(f"| {name} | {r['saved']:.2f} | {r['test_batch_statistics']:.2f} | {draws} | "
                     f"{r['reestimated_all_batches']:.2f} | {low} | {near} | {flips} |")
    return "\n".join(lines) + "\n"
