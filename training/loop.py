"""``agq train``: full-precision pre-training of F, then quantized fine-tuning through the objective.

Phase ``pretrain``: F alone (F + H with ``ag.pretrain``), every quantizer off
(training.precision.full_precision) and, with ``train.pretrain_act_clip``, every activation clipped at
``model.act_max_init`` (the range fine-tuning quantizes), SGD with momentum at ``train.pretrain_lr`` with a
per-step cosine decay (the paper only says "pre-trained"; cosine is our choice), weight decay
``train.pretrain_weight_decay``, cross-entropy (+ lambda CE(H)). H's parameters pre-trained this way are
carried into fine-tuning.

Phase ``finetune``: the training objective (F plus AG / SSP / baseline parts, training/objective.py), Adam
at ``train.lr`` (weight decay ``train.weight_decay``), ``MultiStepLR`` dividing by 10 at the paper's
milestones 25/35 and 30/35 scaled to the epoch count, or (``train.lr_schedule: cosine``) a per-step cosine
decay to 0. Building the objective initialises Brevitas' lazily
initialised weight scales from the pre-trained weights (training.objective.init_weight_scales), so every
DDP process starts fine-tuning from the same scales whatever SSP draws first.

After every epoch: test (and validation) accuracy of F (of H too with AG), ``last.pt`` with the whole
trainer state, then one row in the metrics files. At the end ``checkpoint.pt`` holds the deployable F.

The run folder (``train.output_dir``/``name``; the name must be a plain folder name, so nothing is
written outside ``train.output_dir``) is locked for the run (agq.locks): a second ``agq train`` on it
stops at once naming the first. A fresh run in a folder that holds an earlier run keeps that run's
``checkpoint.pt``, ``last.pt`` and metrics untouched until its own first epoch has written its own
``last.pt``; only then is the old ``checkpoint.pt`` deleted. A fresh run that fails before that (a
diverging loss, a full disk) leaves the earlier run as it was.
Resuming restores weights, optimizer, scheduler, the objective's state (SSP's generator) and the global
RNGs; the data order depends on (seed, epoch, rank) only (training/batches.py), so the resumed run is
bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from agq.training.batches import TrainBatches
from agq.training.checkpoint import CHECKPOINT, LAST, CheckpointMeta, save_checkpoint
from agq.training.config import Config, ModelConfig, TrainConfig
from agq.training.data import Splits, load_splits
from agq.training.distributed import Cluster, cluster
from agq.training.metrics import MetricsLog, accuracy
from agq.training.models import QuantCNN, build_model
from agq.training.precision import clipped_activations, full_precision
from agq.training.resume import resume_state, rng_state, set_rng_state
from torch import nn
from tqdm import tqdm

from agq.errors import AgqError
from agq.locks import folder_lock
from agq.progress import bar as progress_bar

EVAL_BATCH = 500
LAZY_SCALE = "weight_quant.tensor_quant.scaling_impl.value"
Step = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def train(cfg: Config, resume: bool = False, progress: bool = True) -> Path:
    """Train ``cfg`` (or continue its interrupted run) and return the path of the final checkpoint."""
    run_folder(cfg)
    with cluster(cfg.train.device) as node, _reproducible(cfg.train, node.device), \
            folder_lock(cfg.run_dir, "config name") if node.main else nullcontext():
        return _Run(cfg, node, progress).execute(resume)


def run_folder(cfg: Config) -> Path:
    """``cfg.run_dir``, refused with the key named if it would not be a folder inside
    ``train.output_dir`` (a name of ``..``, ``.`` or with a separator; ``..`` in the output folder)."""
    name = Path(cfg.name)
    if name.name != cfg.name or cfg.name in ("", ".", "..") or "\\" in cfg.name:
        raise AgqError(f"config name={cfg.name!r}: must be a plain folder name, the run folder inside "
                       f"train.output_dir ({cfg.train.output_dir})")
    if ".." in Path(cfg.train.output_dir).parts:
        raise AgqError(f"config train.output_dir={cfg.train.output_dir!r}: '..' would put runs outside the "
                       "folder it names; give the folder without '..' (an absolute path if need be)")
    return cfg.run_dir


def finetune_milestones(epochs: int, fractions: list[float]) -> list[int]:
    """The paper's decay epochs (25 and 30 of 35) as fractions, scaled to ``epochs`` fine-tuning epochs."""
    return sorted({max(1, round(f * epochs)) for f in fractions})


def finetune_scheduler(optimizer: torch.optim.Optimizer, tcfg: TrainConfig,
                       batches_per_epoch: int) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """Fine-tuning's learning-rate scheduler and whether it steps per batch (cosine) or per epoch (step).
    The step schedule keeps stepping per epoch so that a ``last.pt`` written before ``lr_schedule``
    existed resumes with its scheduler state as saved."""
    if tcfg.lr_schedule == "cosine":
        steps = max(1, tcfg.epochs * batches_per_epoch)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps), True
    milestones = finetune_milestones(tcfg.epochs, tcfg.lr_milestones)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=tcfg.lr_gamma), False


@contextmanager
def _reproducible(tcfg: TrainConfig, device: torch.device) -> Iterator[None]:
    """Seeds, thread count and deterministic kernels for the run; the process's settings come back after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    random.seed(tcfg.seed)
    np.random.seed(tcfg.seed)
    torch.manual_seed(tcfg.seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _load_state(module: nn.Module, state: dict[str, Any] | None) -> None:
    """Load a resumed phase's module state. Call it BEFORE building the optimizer: Brevitas' loading
    replaces its scale Parameters with new objects, which an existing optimizer would not see.

    A state saved during pre-training lacks Brevitas' lazily initialised weight scales (they enter the
    state_dict only once initialised), while a fresh model lists them as parameters; they are then
    initialised at the first quantized forward, as in an uninterrupted run. Any other missing or
    unexpected key is an error.
    """
    if state is None:
        return
    result = module.load_state_dict(state["trainer"]["module"], strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(LAZY_SCALE)]
    if missing or result.unexpected_keys:
        raise AgqError(f"checkpoint state does not fit the model: missing {missing[:3]}, "
                       f"unexpected {result.unexpected_keys[:3]}")


def _restore_trainer(state: dict[str, Any] | None, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler) -> int:
    """Optimizer, scheduler and RNG states of a resumed phase; the first epoch still to run."""
    if state is None:
        return 0
    trainer = state["trainer"]
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    set_rng_state(trainer["rng"])
    return int(trainer["epoch"])


def _check_data_fits(model: ModelConfig, splits: Splits, dataset: str) -> None:
    shape = tuple(splits.test.images.shape[1:])
    if shape != (model.in_channels, model.image_size, model.image_size):
        raise AgqError(f"config model.in_channels/image_size = {model.in_channels}/{model.image_size} do not "
                       f"fit dataset {dataset}, whose images are {'x'.join(map(str, shape))} (C x H x W)")
    if model.num_classes != len(splits.classes):
        raise AgqError(f"config model.num_classes={model.num_classes}: dataset {dataset} has "
                       f"{len(splits.classes)} classes")


class _Run:
    """One training run: data, F, the metrics log and the two phases."""

    def __init__(self, cfg: Config, node: Cluster, progress: bool) -> None:
        self.cfg, self.node, self.progress = cfg, node, progress and node.main
        self.splits = load_splits(cfg.data)
        _check_data_fits(cfg.model, self.splits, cfg.data.dataset)
        self.batches = TrainBatches(self.splits.train, cfg.data.batch_size, cfg.data.dataset,
                                    cfg.data.augment, cfg.train.seed, node)
        self.model: QuantCNN = build_model(cfg.model).to(node.device)
        self.log = MetricsLog(cfg.run_dir)
        self.last = cfg.run_dir / LAST
        self.stale_final: Path | None = None  # an earlier run's checkpoint.pt, deleted after our first epoch
        self.pretrained_ag: dict[str, Any] | None = None  # H's state after pre-training with ag.pretrain

    def execute(self, resume: bool) -> Path:
        if not self.cfg.train.epochs and not self.cfg.train.pretrain_epochs:
            raise AgqError("config train.epochs and train.pretrain_epochs are both 0: nothing to train")
        state = resume_state(self.cfg, self.last) if resume else None
        if state is None:  # a fresh run: an earlier run's final checkpoint goes once we have our own
            self.stale_final = self.cfg.run_dir / CHECKPOINT
        if state is not None:
            self.log.rows = state["trainer"]["history"]
        if state is None or state["trainer"]["phase"] == "pretrain":
            self._pretrain(state)
            state = None
        objective = self._finetune(state) if self.cfg.train.epochs else None
        return self._save_final(objective)

    # --- phases --------------------------------------------------------------------------------------

    def _pretrain(self, state: dict[str, Any] | None) -> None:
        from agq.training.objective import build_pretrain_objective

        cfg, tcfg, model = self.cfg, self.cfg.train, self.model
        with_ag = cfg.ag.enabled and cfg.ag.pretrain
        module: nn.Module = build_pretrain_objective(model, cfg).to(self.node.device) if with_ag else model
        _load_state(module, state)
        optimizer = torch.optim.SGD(module.parameters(), lr=tcfg.pretrain_lr, momentum=tcfg.momentum,
                                    weight_decay=tcfg.pretrain_weight_decay)
        steps = max(1, tcfg.pretrain_epochs * len(self.batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        start = _restore_trainer(state, optimizer, scheduler)
        net = self.node.wrap(module)

        def step(x: torch.Tensor, y: torch.Tensor, _: float) -> torch.Tensor:
            loss = net(x, y, 0.0)[0] if with_ag else nnf.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            return loss.detach()

        clip = clipped_activations(model, cfg.model.act_max_init) if tcfg.pretrain_act_clip else nullcontext()
        with full_precision(model), clip:
            for epoch in range(start, tcfg.pretrain_epochs):
                module.train()
                row = self._epoch("pretrain", epoch, tcfg.pretrain_epochs, step, optimizer)
                self.node.share_buffers(module)
                module.eval()
                row |= self._evaluate(module.evaluate if with_ag else lambda x: {"F": model(x)})
                self._end_epoch(row, module, model.state_dict(), optimizer, scheduler)
        if with_ag:
            self.pretrained_ag = module.ag.state_dict()

    def _finetune(self, state: dict[str, Any] | None) -> nn.Module:
        from agq.training.bn_recalibration import CALIBRATION_BATCHES, freeze_bn, recalibrate_bn
        from agq.training.objective import build_objective

        tcfg, model = self.cfg.train, self.model
        objective = build_objective(model, self.cfg).to(self.node.device)
        if self.pretrained_ag is not None:  # H as pre-trained with F (a resumed fine-tuning state wins)
            objective.ag.load_state_dict(self.pretrained_ag)
        _load_state(objective, state)
        optimizer = torch.optim.Adam(objective.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        scheduler, per_step = finetune_scheduler(optimizer, tcfg, len(self.batches))
        start = _restore_trainer(state, optimizer, scheduler)
        net = self.node.wrap(objective)

        def step(x: torch.Tensor, y: torch.Tensor, progress: float) -> torch.Tensor:
            loss, _ = net(x, y, progress)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_step:
                scheduler.step()
            return loss.detach()

        first_frozen = tcfg.epochs - tcfg.bn_freeze_epochs
        every = tcfg.bn_recalibration == "every_epoch"
        for epoch in range(start, tcfg.epochs):
            frozen = epoch >= first_frozen  # F trains on the fixed statistics it is evaluated with
            objective.train()
            if frozen:
                freeze_bn(objective.deployable())
            row = self._epoch("finetune", epoch, tcfg.epochs, step, optimizer)
            if not per_step:
                scheduler.step()
            self.node.share_buffers(objective)
            objective.eval()
            mixed = objective.delta(float(epoch)) > 0  # BN statistics of a mixed-precision epoch
            if every:  # what F scores with the running averages of its training batches
                row |= {f"running_bn_{k}": v for k, v in self._evaluate(objective.evaluate).items()}
            # the statistics that the frozen epochs will train on are estimated once, before the first
            freezing_next = tcfg.bn_freeze_epochs > 0 and epoch + 1 == first_frozen
            recalibrate = not frozen and (mixed or every or freezing_next)
            if recalibrate:
                recalibrate_bn(objective, objective.evaluate,
                               self.batches.epoch(self._global_epoch("finetune", epoch)), CALIBRATION_BATCHES)
                self.node.share_buffers(objective)
            row |= self._evaluate(objective.evaluate)
            if self.cfg.ssp.enabled:
                row["ssp_delta"] = objective.delta(float(epoch))  # at the start of the epoch
            if self.cfg.ssp.enabled or every or tcfg.bn_freeze_epochs:
                row["bn_recalibrated"] = recalibrate
            if tcfg.bn_freeze_epochs:
                row["bn_frozen"] = frozen
            self._end_epoch(row, objective, objective.deployable().state_dict(), optimizer, scheduler)
        return objective

    # --- one epoch ----------------------------------------------------------------------------------

    def _global_epoch(self, phase: str, epoch: int) -> int:
        return epoch + (self.cfg.train.pretrain_epochs if phase == "finetune" else 0)

    def _epoch(self, phase: str, epoch: int, epochs: int, step: Step,
               optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Train one epoch; returns the row's training part (mean loss over all processes, time)."""
        global_epoch = self._global_epoch(phase, epoch)
        lr = optimizer.param_groups[0]["lr"]
        total = torch.zeros((), dtype=torch.float64, device=self.node.device)
        n = len(self.batches)
        begin, cpu_begin = time.perf_counter(), time.process_time()
        bar = progress_bar(self.batches.epoch(global_epoch), total=n, desc=f"{phase} {epoch + 1}/{epochs}",
                           enabled=self.progress, log_line=False, leave=False, unit="batch")
        for i, (x, y) in enumerate(bar):
            loss = step(x, y, epoch + i / n)
            total += loss
            if i % 20 == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
        seconds, cpu_seconds = time.perf_counter() - begin, time.process_time() - cpu_begin
        (loss_sum,) = self.node.all_sum([float(total)])
        mean_loss = loss_sum / (n * self.node.world)
        if not math.isfinite(mean_loss):
            raise AgqError(f"training diverged in {phase} epoch {epoch + 1} (loss {mean_loss}); "
                           f"lower train.{'pretrain_lr' if phase == 'pretrain' else 'lr'}")
        return {"phase": phase, "epoch": epoch + 1, "global_epoch": global_epoch + 1, "lr": lr,
                "train_loss": mean_loss, "time_s": round(seconds, 3),
                "cpu_s": round(cpu_seconds, 3)}

    def _evaluate(self, logits_of: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> dict[str, Any]:
        begin = time.perf_counter()
        row: dict[str, Any] = {}
        for split, data in (("test", self.splits.test), ("val", self.splits.val)):
            if len(data):
                scores = accuracy(logits_of, data, EVAL_BATCH, self.node)
                row |= {f"{split}_{k}": v for k, v in scores.items()}
        row["eval_s"] = round(time.perf_counter() - begin, 3)
        return row

    # --- state ----------------------------------------------------------------------------------------

    def _meta(self, row: dict[str, Any]) -> CheckpointMeta:
        """Checkpoint meta; F's metrics lose the F (``test_F_top1`` -> ``test_top1``), H's keep theirs."""
        metrics = {k.replace("_F_", "_"): v for k, v in row.items() if k.startswith(("test_", "val_"))}
        return CheckpointMeta(dataset=self.cfg.data.dataset, classes=list(self.splits.classes),
                              epoch=row["global_epoch"], phase=row["phase"], metrics=metrics)

    def _end_epoch(self, row: dict[str, Any], module: nn.Module, model_state: dict[str, Any],
                   optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        if not self.node.main:
            return
        trainer = {"phase": row["phase"], "epoch": row["epoch"], "module": module.state_dict(),
                   "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "rng": rng_state(), "history": [*self.log.rows, row]}
        save_checkpoint(self.last, {"config": self.cfg.to_dict(), "model": model_state,
                                    "meta": self._meta(row), "trainer": trainer})
        if self.stale_final is not None:  # our own last.pt exists: the earlier run is replaced now
            self.stale_final.unlink(missing_ok=True)
            self.stale_final = None
        self.log.append(row)
        if self.progress:
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            tqdm.write(" ".join(f"{k}={v}" for k, v in shown.items()))

    def _save_final(self, objective: nn.Module | None) -> Path:
        path = self.cfg.run_dir / CHECKPOINT
        if objective is None:  # pre-training only: give F the weight scales a fine-tuned F would have
            from agq.training.objective import init_weight_scales

            init_weight_scales(self.model)
        if self.node.main:
            model = objective.deployable() if objective is not None else self.model
            save_checkpoint(path, {"config": self.cfg.to_dict(), "model": model.state_dict(),
                                   "meta": self._meta(self.log.rows[-1])})
        self.node.barrier()
        return path
