"""Where a long benchmark stands: each job recorded, running, stopped part-way or waiting, and about how
much training is left.

A depth-26 setting runs for tens of core-hours across sessions; its workers' log has a line per epoch of the
jobs running, but no overview of all of them and of the training left. This reads what the benchmark keeps
anyway (records, each run's ``last.pt``, the claims, the benchmark's lock) and writes nothing, so it is safe
beside a running benchmark. The estimate is each job's own seconds per epoch so far, else its row's recorded
mean, else the mean of its row's jobs under way (a new setting's first runs), all measured beside the other
workers; it ignores start-up and the last job's tail.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from agq.bench.accuracy import PRETRAIN, Job, Runner, own_state

from agq.locks import holder

RECORDED, RUNNING, STOPPED, WAITING, NOT_NEEDED = "recorded", "running", "stopped", "waiting", "not needed"


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: str
    done: int  # epochs of the job's own phase finished
    total: int
    top1: float | None  # F's test top-1 after its last finished epoch
    epoch_s: float | None  # seconds per epoch (training + evaluation), its own; None before its first


def _phase(job: Job) -> str:
    return "pretrain" if job.row == PRETRAIN else "finetune"


def _status(runner: Runner, job: Job, todo: list[Job], live: bool) -> JobStatus:
    from agq.io import read_json

    cfg = runner.config(job)
    total = cfg.train.pretrain_epochs if job.row == PRETRAIN else cfg.train.epochs
    needed, state = runner.needed(job, todo), WAITING
    if runner.record_path(job).is_file() and (not needed or runner.done(job)):
        history = read_json(runner.record_path(job), "agq bench --only status").get("history", [])
        state = RECORDED
    else:
        own = own_state(cfg)  # a fine-tuning not begun holds the pre-training's epochs only
        history = own.get("trainer", {}).get("history", []) if own else []
    epochs = [e for e in history if e.get("phase") == _phase(job)]
    if state != RECORDED:
        claimed = (runner.claims / job.key).is_file()
        state = (NOT_NEEDED if not needed else RUNNING if live and claimed
                 else STOPPED if epochs else WAITING)
    top1 = epochs[-1].get("test_F_top1") if epochs else None
    seconds = statistics.fmean(e["time_s"] + e["eval_s"] for e in epochs) if epochs else None
    return JobStatus(job, state, len(epochs), total, top1, seconds)


def statuses(runner: Runner, todo: list[Job]) -> tuple[list[JobStatus], str | None]:
    """Every job of ``todo`` in the benchmark's order, and who runs the benchmark now (None: nobody)."""
    running = holder(Path(runner.base.train.output_dir))
    return [_status(runner, job, todo, running is not None) for job in todo], running


def left_seconds(jobs: list[JobStatus]) -> tuple[float, int]:
    """Seconds of training left (each unfinished job's epochs at its own pace, else at the mean pace of
    its row's recorded runs, else of its row's runs under way) and how many unfinished jobs have none of
    these, so no estimate."""
    recorded: dict[tuple[str, str], list[float]] = {}
    under_way: dict[tuple[str, str], list[float]] = {}
    for s in jobs:
        if s.epoch_s is not None and s.state != NOT_NEEDED:
            paces = recorded if s.state == RECORDED else under_way
            paces.setdefault((s.job.row, s.job.pre), []).append(s.epoch_s)
    seconds, unknown = 0.0, 0
    for s in jobs:
        if s.state in (RECORDED, NOT_NEEDED) or s.done >= s.total:
            continue
        row = recorded.get((s.job.row, s.job.pre)) or under_way.get((s.job.row, s.job.pre))
        pace = s.epoch_s if s.epoch_s is not None else statistics.fmean(row) if row else None
        if pace is None:
            unknown += 1
        else:
            seconds += pace * (s.total - s.done)
    return seconds, unknown


def render(jobs: list[JobStatus], running: str | None, workers: int, where: Path) -> str:
    """One line per unfinished job, a count of the others, and the training left."""
    counts = {state: sum(s.state == state for s in jobs) for state in (RECORDED, NOT_NEEDED)}
    skipped = counts[NOT_NEEDED]
    head = f"{where}: {counts[RECORDED]} of {len(jobs)} jobs recorded"
    if skipped:
        head += f", {skipped} pre-training{'s' * (skipped != 1)} not needed (no row left to start from it)"
    lines = [head + (f"; benchmark running: {running}" if running else "; no benchmark running")]
    for s in jobs:
        if s.state in (RECORDED, NOT_NEEDED):
            continue
        text = f"  {s.state:<8} {s.job.key:<28} epoch {s.done}/{s.total}"
        if s.top1 is not None:
            text += f", test top-1 {s.top1:.2f} %"
        if s.epoch_s is not None:
            text += f", {s.epoch_s:.1f} s per epoch"
        lines.append(text)
    seconds, unknown = left_seconds(jobs)
    if seconds or unknown:
        hours = seconds / 3600
        text = f"left: about {hours:.1f} core-hours ({hours / workers:.1f} h on {workers} workers)"
        plus = f", plus {unknown} job{'s' * (unknown != 1)} of rows not timed yet" if unknown else ""
        lines.append(text + plus)
    else:
        lines.append("left: nothing")
    return "\n".join(lines)
