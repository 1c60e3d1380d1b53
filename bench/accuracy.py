"""Run the accuracy benchmark: every row x seed, resumably, each finished run saved as one JSON record.

Sharing pre-training: full-precision pre-training trains F alone and reads only the model, data and
``train.pretrain_*``/``seed`` keys, so every row of one (arch, seed) would pre-train identically. It runs
once per (arch, seed) as its own run (``train.epochs = 0``); a row that changes pre-training itself
(``ag.pretrain``) gets a pre-training of its own (``Row.pretrain``). Each row then starts from a copy of that
run's ``last.pt`` (whole trainer state: weights, RNG, history) relabelled with the row's config, and
``training.loop.train(resume=True)`` continues straight into fine-tuning. The loop's exact resume makes
this bit-identical to the row pre-training itself; :func:`_check_shareable` refuses any config difference
that pre-training would read.

Workers: ``workers`` child processes (one torch thread each) walk the same ordered job list and claim a
job by creating its claim file exclusively; a finished job is a record file, so a restarted benchmark
skips it and an interrupted run, pre-training or fine-tuning, resumes from its own ``last.pt`` (the loop's
exact resume: the same record as an uninterrupted run), before any job not begun (:func:`resume_order`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agq.bench.rows import ARCHS, PRETRAIN, PRETRAINED_ONLY, ROWS, Row, row
from agq.bench.table import differing_epoch, record_files

from agq.config_loader import differences
from agq.errors import AgqError
from agq.locks import folder_lock

BASE_CONFIG = Path("bench/mnist_deep")  # a packaged config (agq.configs), found from any folder
# config keys in which a row may differ from the pre-training run it starts from (pre-training reads none)
# (bit widths and the weight-scale domain included: pre-training runs with every quantizer disabled and
# the low-bit weight scales are created at fine-tuning's first forward; the output folder, so that a
# benchmark's runs folder can be moved or renamed with its config)
SHAREABLE = ("name", "ag.", "ssp.", "baseline.", "train.epochs", "train.lr", "train.lr_schedule",
             "train.lr_milestones", "train.lr_gamma", "train.output_dir", "model.weight_bits",
             "model.act_bits", "model.weight_scale")
# what every row resets before its own overrides; not the low-bit weight-scale domain, which a setting may
# choose for all its rows (the *_log rows set it themselves)
ROW_BASE = {"model.arch": "plain", "ag.enabled": False, "ssp.enabled": False, "baseline.kd": False,
            "baseline.aux_losses": False}
SSP_DECAY_FRACTION = 20 / 35  # the paper: delta reaches 0 at epoch 20 of 35
QUICK = ["data.limit_train=1000", "train.pretrain_epochs=1", "train.epochs=2", "train.lr_milestones=[1.0]",
         "train.output_dir=runs/bench_quick"]


@dataclass(frozen=True)
class Job:
    row: str  # a row name, or PRETRAIN
    seed: int
    pre: str = "plain"  # PRETRAIN jobs: which pre-training (bench.rows.Row.pretrain: an arch or a row)

    @property
    def key(self) -> str:
        return f"{PRETRAIN}_{self.pre}_s{self.seed}" if self.row == PRETRAIN else f"{self.row}_s{self.seed}"


def jobs(seeds: int, ablation_seeds: int, rows: list[str] | None = None, first_seed: int = 0) -> list[Job]:
    """Pre-training first, then the rows that carry the claim (``Row.core``) for every seed, then the
    other main rows, then the ablations (with their own pre-training where they need one): a benchmark
    cut short still holds as many seeds as possible of the rows that matter most. Seeds count from
    ``first_seed``, so that one seed can be run (again) alone, e.g. on a second machine."""
    chosen = [row(name) for name in rows] if rows else list(ROWS)
    runs = [r for r in chosen if r.name not in PRETRAINED_ONLY]
    shared = sorted({r.pretrain for r in chosen if r.group == "main"})
    own = sorted({r.pretrain for r in chosen if r.group == "ablation"} - set(shared))
    main = range(first_seed, first_seed + seeds)
    ablation = range(first_seed, first_seed + ablation_seeds)
    out = [Job(PRETRAIN, s, pre) for s in range(first_seed, first_seed + max(seeds, ablation_seeds))
           for pre in shared]
    for core in (True, False):
        out += [Job(r.name, s) for s in main for r in runs if r.group == "main" and r.core == core]
    out += [Job(PRETRAIN, s, pre) for s in ablation for pre in own]
    out += [Job(r.name, s) for s in ablation for r in runs if r.group == "ablation"]
    return out


def row_overrides(r: Row, seed: int, base: dict[str, Any]) -> list[str]:
    """``--set`` assignments turning the base config into row ``r`` with ``seed``; every switch a row may
    turn on is set explicitly, so any base config (e.g. one with AG on) serves."""
    epochs = base["train"]["epochs"] * r.epoch_factor
    sets = {**ROW_BASE, **r.overrides, "name": f"{r.name}_s{seed}", "train.seed": seed,
            "train.epochs": epochs, "ssp.decay_epochs": round(SSP_DECAY_FRACTION * epochs, 4)}
    return [f"{k}={json.dumps(v)}" for k, v in sets.items()]


def training_code_hash() -> str:
    """One hash of training/*.py as on disk when a record is written: records of different code differ."""
    import hashlib

    import agq.training

    digest = hashlib.sha256()
    for path in sorted(Path(agq.training.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def cpu() -> str:
    """The processor's vendor, family and model (its micro-architecture): two machines that both report
    AVX512, an earlier one and an AMD family 25 model 17, pre-trained other networks under one seed
    (2026-12-06), and a virtual machine's model name may say no more than "AMD EPYC"."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    if not {"vendor_id", "cpu family", "model"} <= fields.keys():
        return "unknown"
    return f"{fields['vendor_id']} family {fields['cpu family']} model {fields['model']}"


def environment() -> dict[str, str]:
    """What besides config and code decides a run's floating point: two pre-trainings of one seed, config
    and code differed from their first epoch on two machines (depth-32 plain, 2026-12-03), so each record
    says where it ran."""
    import platform
    from importlib.metadata import version

    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "brevitas": version("brevitas"), "numpy": version("numpy"), "machine": platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu()}


MACHINE = "machine.json"  # in train.output_dir: the machine its trainer states were made on
MACHINE_KEYS = ("cpu_capability", "cpu")  # what of environment() names the machine


def check_machine(records: Path, runs: Path) -> None:
    """One folder holds one machine's runs: another machine's floating point pre-trains another network
    under the same seed from the first epoch on (AVX2 against AVX512; two AVX512 processors), so its runs
    are not paired with these. Records name their machine (:func:`environment`; older records only the
    capability, compared alone); trainer states in ``runs`` (shared by every results folder of a setting)
    are marked with it on first use, so that a ``runs/`` that survives a change of machine is not
    continued into records that say the other machine made them."""
    from agq.io import read_json, write_json

    env = environment()
    here = {k: env[k] for k in MACHINE_KEYS}

    def other(there: Any) -> str | None:  # the first key naming another machine, as "key value"
        there = there if isinstance(there, dict) else {}
        return next((f"{k} {there[k]!r}" for k in MACHINE_KEYS if there.get(k, here[k]) != here[k]), None)

    this = ", ".join(f"{k} {v!r}" for k, v in here.items())
    for path, data in record_files(records):
        there = other(data.get("environment"))
        if there:
            raise AgqError(f"{path} was run on another machine ({there}; this one: {this}): a results folder "
                           "holds one machine's runs, so give this machine's runs another --out")
    marker = runs / MACHINE
    there = other(read_json(marker, "agq bench --only accuracy")) if marker.is_file() else None
    if there:
        raise AgqError(f"{runs} holds trainer states made on another machine ({there}; this one: {this}): "
                       "move that folder away (its runs would continue under another floating point)")
    write_json(marker, here)


def _check_shareable(pretrained: dict[str, Any], cfg: dict[str, Any]) -> None:
    from agq.training.config import saved_config

    a = saved_config(pretrained, "cannot share pre-training: its config is no longer valid")
    shareable = SHAREABLE
    if a["ag"]["enabled"] and a["ag"]["pretrain"]:  # H was pre-trained too: the row must use that H
        shareable = tuple(k for k in SHAREABLE if k != "ag.")
    bad = sorted(key for key, _, _ in differences(a, cfg, shareable))
    if bad:
        raise AgqError(f"cannot share pre-training: config key {bad[0]} differs")


class Runner:
    """Runs jobs of one benchmark (base config + extra overrides) into ``records`` (one JSON per job)."""

    def __init__(self, records: Path, extra: list[str], base: Path = BASE_CONFIG) -> None:
        from agq.training.config import load_config

        self.records, self.extra, self.base_path = records, extra, base
        self.base = load_config(base, extra)
        self.claims = Path(self.base.train.output_dir) / "claims"

    def config(self, job: Job) -> Any:
        from agq.training.config import load_config

        base = self.base.to_dict()
        if job.row == PRETRAIN:
            own = job.pre not in ARCHS  # a row's own pre-training (see Row.pretrain)
            overrides = row(job.pre).overrides if own else {"model.arch": job.pre}
            sets = [f"{k}={json.dumps(v)}" for k, v in {**ROW_BASE, **overrides}.items()]
            sets += [f"name={job.key}", f"train.seed={job.seed}", "train.epochs=0"]
        else:
            sets = row_overrides(row(job.row), job.seed, base)
        return load_config(self.base_path, [*self.extra, *sets])

    def record_path(self, job: Job) -> Path:
        return self.records / f"{job.key}.json"

    def done(self, job: Job) -> bool:
        if job.row == PRETRAIN:  # rows need its trainer state as well as its record
            return self.record_path(job).is_file() and (self.config(job).run_dir / "last.pt").is_file()
        return self.record_path(job).is_file()

    def needed(self, job: Job, todo: list[Job]) -> bool:
        """A pre-training whose rows in ``todo`` are all recorded is not run again: a fresh clone has its
        record but not its trainer state, and re-running it would cost its time for no new result."""
        if job.row != PRETRAIN:
            return True
        return any(not self.done(j) for j in todo
                   if j.row != PRETRAIN and j.seed == job.seed and row(j.row).pretrain == job.pre)

    def first_difference(self, job: Job, saved: dict[str, Any], where: str,
                         ignore: tuple[str, ...] = ("train.output_dir",)) -> tuple[str, Any, Any] | None:
        """The first config key (key, saved value, value here) in which a record's ``saved`` config differs
        from what this setting gives ``job``; run folders may move, so ``train.output_dir`` is ignored."""
        from agq.training.config import saved_config

        bad = differences(saved_config(saved, where), self.config(job).to_dict(), ignore=ignore)
        return bad[0] if bad else None

    def check_record(self, job: Job) -> None:
        """A record run under another config (the setting's YAML edited since) would be counted as this
        setting's result, and overwriting it would lose a finished run: the user decides. Checked once,
        by run_all before any worker starts (one benchmark at a time, so no record appears meanwhile)."""
        from agq.io import read_json

        path = self.record_path(job)
        if not path.is_file():
            return
        data = read_json(path, "agq bench --only accuracy")
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            raise AgqError(f"{path} is not a benchmark record (no config); move it away")
        bad = self.first_difference(job, data["config"], str(path))
        if bad:
            key, old, new = bad
            raise AgqError(f"{path} was run with {key}={old!r}, the config now gives {new!r}: "
                           "move the record away to run it again, or restore the config")

    def _check_rerun(self, job: Job, run_dir: Path, history: list[dict[str, Any]]) -> None:
        """A pre-training runs again where its record survived but its trainer state did not (a fresh
        clone holds bench/results, not runs/). The rows already recorded started from the old network, so
        the new rows are paired with them only if the re-run is that same network: else its state is
        removed (no row may start from it) and the record kept."""
        from agq.io import read_json

        path = self.record_path(job)
        if not path.is_file():
            return
        epoch = differing_epoch(read_json(path, "agq bench --only accuracy").get("history", []), history)
        if epoch is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise AgqError(f"{path}: pre-training run again (its trainer state was gone) differs from the "
                           f"record at epoch {epoch}, so rows started from the two are not paired: move "
                           f"this setting's records of {job.pre} seed {job.seed} away to run them again")

    def claim(self, job: Job) -> bool:
        self.claims.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(self.claims / job.key, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def run(self, job: Job, progress: bool = False) -> dict[str, Any]:
        from agq.training.checkpoint import load_checkpoint, save_checkpoint
        from agq.training.loop import train

        from agq.io import write_json

        cfg = self.config(job)
        begin = time.perf_counter()
        last = cfg.run_dir / "last.pt"
        own = own_state(cfg) is not None
        if job.row == PRETRAIN:
            if not own:  # nothing of this run to continue: start clean
                shutil.rmtree(cfg.run_dir, ignore_errors=True)
            train(cfg, resume=own, progress=progress)
        else:
            pre = Job(PRETRAIN, job.seed, row(job.row).pretrain)
            while not self.done(pre):  # another worker is pre-training it
                time.sleep(5)
            if not own:  # start from the shared pre-training (see the module docstring)
                payload = load_checkpoint(self.config(pre).run_dir / "last.pt")
                _check_shareable(payload["config"], cfg.to_dict())
                payload["config"] = cfg.to_dict()
                save_checkpoint(last, payload)
            train(cfg, resume=True, progress=progress)
        history = json.loads((cfg.run_dir / "metrics.json").read_text())
        if job.row == PRETRAIN:
            self._check_rerun(job, cfg.run_dir, history)
        final = {k: v for k, v in history[-1].items() if k.startswith("test_")}
        record = {"row": job.row, "arch": cfg.model.arch, "seed": job.seed, "config": cfg.to_dict(),
                  "pretrain": job.pre if job.row == PRETRAIN else row(job.row).pretrain,
                  "history": history, "final": final, "wall_s": round(time.perf_counter() - begin, 1),
                  "epochs_s": epochs_seconds(history, "pretrain" if job.row == PRETRAIN else "finetune"),
                  "training_code_sha256": training_code_hash(), "environment": environment()}
        write_json(self.record_path(job), record, indent=1)
        return record


def own_state(cfg: Any) -> dict[str, Any] | None:
    """The run's ``last.pt`` if it holds this run's config (a run to continue; a fine-tuning's is first
    the relabelled pre-training), else None: none yet, or another run's stale state."""
    from agq.training.checkpoint import load_checkpoint
    from agq.training.config import saved_config

    last = cfg.run_dir / "last.pt"
    if not last.is_file():
        return None
    payload = load_checkpoint(last)
    return payload if saved_config(payload["config"], f"run {last}") == cfg.to_dict() else None


def epochs_seconds(history: list[dict[str, Any]], phase: str) -> float:
    """Training plus evaluation seconds of the run's own epochs (``phase``), summed from its history.

    A record's ``wall_s`` is the wall time of the process that finished the run, so a run resumed in a later
    session counts only that session; its epochs' own times, kept in the trainer state across resumes,
    count every session. Neither counts loading and start-up, nor an epoch cut short and run again."""
    return round(sum(e["time_s"] + e["eval_s"] for e in history if e["phase"] == phase), 1)


def resume_order(runner: Runner, todo: list[Job]) -> list[Job]:
    """The jobs stopped part-way (own ``last.pt``) first, then the rest in their order: a benchmark
    restarted with rows or seeds added ahead of a part-trained job finishes that job before it starts a new
    one, instead of leaving it part-trained behind the new ones."""
    started = [j for j in todo if not runner.done(j) and own_state(runner.config(j)) is not None]
    return started + [j for j in todo if j not in started]


class JobLines:
    """A stream that starts each line with the worker and the job: the workers share one log, and the
    training loop's line per epoch names neither. Not a terminal, so no worker draws a progress bar."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self.stream, self.prefix, self.pending = stream, prefix, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.stream.write(f"{self.prefix}{line}\n")
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def work(records: Path, extra: list[str], todo: list[Job], worker: int, base: Path) -> None:
    """One worker: take every unfinished, unclaimed job in order, logging a line per epoch and per job."""
    import torch

    torch.set_num_threads(1)
    runner = Runner(records, extra, base)
    for job in todo:
        if runner.done(job) or not runner.needed(job, todo) or not runner.claim(job):
            continue
        prefix = f"[worker {worker}] {job.key}: "
        with (contextlib.redirect_stdout(JobLines(sys.stdout, prefix)),
              contextlib.redirect_stderr(JobLines(sys.stderr, prefix))):
            record = runner.run(job, progress=True)
        top1 = record["final"].get("test_F_top1", float("nan"))
        print(f"{prefix}test top-1 {top1:.2f} % ({record['wall_s']:.0f} s)", flush=True)


def _wait_for_workers(procs: list[subprocess.Popen]) -> list[int]:
    """Workers stop with the benchmark (Ctrl-C, SIGTERM via agq.cli, any error): left running they would
    go on training into the records beside the next benchmark started there."""
    try:
        return [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()


def run_all(records: Path, extra: list[str], todo: list[Job], workers: int, base: Path = BASE_CONFIG) -> None:
    """Start ``workers`` worker processes on ``todo`` and wait for them (stale claims are cleared first)."""
    records.mkdir(parents=True, exist_ok=True)
    runner = Runner(records, extra, base)
    for job in todo:  # a record of another config is one line here, before any worker starts
        runner.check_record(job)
    todo = resume_order(runner, todo)
    claims = runner.claims
    # one benchmark per train.output_dir: clearing the claims of one still running there would let two
    # workers train one run. agq.locks' flock, which the kernel drops with its process, rather than a pid
    # file, which took an unreaped (zombie) or reused pid for a live benchmark
    with folder_lock(claims.parent, "train.output_dir"):
        check_machine(records, claims.parent)
        shutil.rmtree(claims, ignore_errors=True)
        claims.mkdir(parents=True)
        spec = json.dumps({"records": str(records), "extra": extra, "base": str(base),
                           "todo": [[j.row, j.seed, j.pre] for j in todo]})
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, "-m", "agq.bench.accuracy", spec, str(w)], env=env)
                 for w in range(workers)]
        codes = _wait_for_workers(procs)
    if any(codes):
        raise AgqError(f"benchmark worker failed (exit codes {codes})")


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    try:
        work(Path(spec["records"]), spec["extra"], [Job(*j) for j in spec["todo"]], int(sys.argv[2]),
             Path(spec["base"]))
    except AgqError as exc:  # one line in the benchmark's log; run_all then names the failed worker
        sys.exit(f"agq bench worker {sys.argv[2]}: {exc}")
