"""Accuracy against fine-tuning length, across benchmark settings that differ in nothing else.

The convergence test of the benchmark: a setting's fine-tuning is converged when the compute-matched plain
row (twice the epochs) no longer gains on plain beyond noise. Settings that share network, data, seeds and
pre-training but fine-tune for 6, 12, 24 ... epochs put the plain and residual baselines on one curve per
architecture: each length is compared with the next shorter one seed by seed (both runs start from the same
pre-trained weights), and the plain-to-residual gap is given at every length both curves have.

Two more readings: plain with twice the epochs against residual (the compute-matched comparison at every
length), and how much each run's test top-1 still moves over its last ``TAIL`` epochs (the sample standard
deviation), which says how far apart two final numbers may be by chance even where the learning rate is
near zero.

A run found in two settings (the plain_2x row of one is the plain row of the next) is the same computation
on the same start, and CPU training is deterministic: such pairs must give the same number. The report
counts them and stops on a difference, so that pairing across settings is checked, not assumed.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from agq.bench import reading, table
from agq.training.config import saved_config

from agq.config_loader import differences
from agq.errors import AgqError

CURVES = {"plain": "plain", "plain_2x": "plain", "residual": "residual"}  # baseline row -> curve
# keys in which runs on these curves may differ: their length and what names, seeds and places a run
FREE = ("name", "train.epochs", "ssp.decay_epochs", "train.output_dir", "train.seed", "model.arch")
COSINE_UNUSED = ("train.lr_milestones", "train.lr_gamma")  # the step schedule's keys, unread by the cosine

TAIL = 5  # last fine-tuning epochs over which a run's spread is measured
Point = dict[int, float]  # seed -> final test top-1 of F (or a run's spread over its last TAIL epochs)
Curves = dict[str, dict[int, Point]]  # curve -> fine-tuning epochs -> Point


def collect(settings: dict[str, list[dict[str, Any]]]) -> tuple[Curves, Curves, int]:
    """{curve: {fine-tuning epochs: {seed: top-1}}} from the baseline rows of every setting's records, the
    same for each run's spread over its last TAIL epochs (runs with fewer than 2 TAIL have none), and how many
    runs two settings share (checked equal); runs of one seed must start from one pre-trained network."""
    curves: Curves = {}
    spreads: Curves = {}
    first: tuple[str, dict[str, Any]] | None = None
    shared = 0
    used: dict[str, dict[str, Any]] = {}  # where -> record: their pre-trainings must be one network per seed
    for name, records in settings.items():
        for record in records:
            curve = CURVES.get(record["row"])
            value = table.final_value(record)
            if curve is None or value is None:
                continue
            where = f"setting {name}: record {record['row']}_s{record['seed']}"
            if "config" not in record:
                raise AgqError(f"{where} has no config")
            config = saved_config(record["config"], where)
            used[where] = record
            if first is None:
                first = (name, config)
            cosine = first[1]["train"].get("lr_schedule") == config["train"].get("lr_schedule") == "cosine"
            bad = differences(first[1], config, FREE + COSINE_UNUSED if cosine else FREE)
            if bad:
                key, a, b = bad[0]
                raise AgqError(f"settings {first[0]} and {name} differ in config key {key} ({a!r} vs {b!r}): "
                               "only the fine-tuning length may differ")
            epochs = int(config["train"]["epochs"])
            points = curves.setdefault(curve, {}).setdefault(epochs, {})
            seed = int(record["seed"])
            if seed in points:
                if points[seed] != value:
                    raise AgqError(f"setting {name}: {curve} at {config['train']['epochs']} epochs, seed "
                                   f"{seed}, gives {value} but {points[seed]} in another setting (same run)")
                shared += 1
            points[seed] = value
            measured = table.epoch_values(record)
            if len(measured) >= 2 * TAIL:  # the window in the run's second half, past the quantization shock
                spread = statistics.stdev(measured[-TAIL:])
                spreads.setdefault(curve, {}).setdefault(epochs, {})[seed] = spread
    if not curves:
        raise AgqError(f"no plain, plain_2x or residual records in the settings {', '.join(settings)}")
    table.check_shared_starts(list(used.values()), list(used))
    return curves, spreads, shared


def analyse(curves: Curves, spreads: Curves) -> dict[str, Any]:
    """Per curve and length: the summary over seeds, the paired gain on the next shorter length and the
    runs' spread over their last epochs; per residual length: residual - plain at that length and plain at
    twice the epochs - residual, where plain has them."""
    out: dict[str, Any] = {"curves": {}, "gap": {}, "twice": {}}
    plain, residual = curves.get("plain", {}), curves.get("residual", {})
    for curve, lengths in curves.items():
        epochs = sorted(lengths)
        out["curves"][curve] = {
            e: {"top1": table.summarize(lengths[e]),
                "gain": table.difference(lengths[e], lengths[epochs[i - 1]]) if i else None,
                "previous": epochs[i - 1] if i else None,
                "spread": table.summarize(spreads[curve][e]) if e in spreads.get(curve, {}) else None}
            for i, e in enumerate(epochs)}
    for e in sorted(residual):
        out["gap"][e] = table.difference(residual[e], plain[e]) if e in plain else None
        out["twice"][e] = table.difference(plain[2 * e], residual[e]) if 2 * e in plain else None
    return out


def _spread(entry: dict[str, Any] | None) -> str:
    return "-" if entry is None else f"{entry['mean']:.2f} ({max(entry['values']):.2f})"


def _diff(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "- | -"
    return f"{table.cell(entry)} {table.interval(entry)} | {table.signed_values(entry)}"


def markdown(result: dict[str, Any], names: list[str], shared: int) -> str:
    lines = [f"## Fine-tuning length: settings {', '.join(f'`{n}`' for n in names)}", "",
             "Test top-1 % of F after fine-tuning for the given epochs; a gain is the paired difference to "
             "the next shorter length (same seeds, same pre-trained start), mean ± std [95 % CI]; the "
             f"spread is each run's standard deviation of test top-1 over its last {TAIL} epochs, mean "
             "(largest) over the seeds.", "",
             "| curve | epochs | top-1 % (F) | seeds | gain on the shorter length | per seed | "
             f"spread, last {TAIL} epochs |", "|---|---|---|---|---|---|---|"]
    for curve, lengths in result["curves"].items():
        for e, entry in lengths.items():
            previous = f"vs {entry['previous']}: " if entry["previous"] else ""
            lines.append(f"| {curve} | {e} | {table.cell(entry['top1'])} | {entry['top1']['n']} | "
                         f"{previous}{_diff(entry['gain'])} | {_spread(entry['spread'])} |")
    lines += ["", "| epochs (residual) | residual - plain | per seed | "
              "plain at twice the epochs - residual | per seed |", "|---|---|---|---|---|"]
    lines += [f"| {e} | {_diff(gap)} | {_diff(result['twice'][e])} |" for e, gap in result["gap"].items()]
    lines += ["", f"Runs found in two settings (checked identical): {shared}."]
    return "\n".join(lines)


def write(folders: dict[str, Path], out: Path) -> str:
    """convergence.json and README.md in ``out`` from the run records of the result ``folders`` (by the
    settings' names)."""
    settings = {}
    for name, folder in folders.items():
        if not (folder / "runs").is_dir():
            raise AgqError(f"benchmark results folder {folder} has no runs/ of records")
        settings[name] = table.load_records(folder / "runs")
    curves, spreads, shared = collect(settings)
    result = analyse(curves, spreads)
    md = markdown(result, list(settings), shared)
    data = {"settings": {n: str(f) for n, f in folders.items()}, "shared_runs": shared, **result}
    reading.write(out, "convergence.json", data, "convergence", md, lambda d: sorted(d["settings"]))
    return md
