"""A row of one benchmark setting against a row of another, paired by seed.

A setting that changes one thing for every row (e.g. the low-bit weight-scale domain) keeps its own folder,
so that its report pairs all its rows with each other; what the change does to one row is then a
difference across two folders. Two runs of one seed are a pair only if they started from the same network:
each record carries its pre-training history, and a seed whose two histories differ (timings aside) is an
error, as within one setting (bench.table.check_shared_starts). The config keys in which the two rows
differ, bar names, seeds and places, are part of the result, so that a reader sees what was varied.

Pooled, several pairs are one comparison whose seeds were run apart: a seed run again on a machine with
other floating point (each record names its CPU capability) starts from another pre-trained network, so
its runs of both rows go to folders of their own and pair there; each seed's difference comes from the
one pair that holds it, and the pairs must vary the same keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agq.bench import reading, table
from agq.training.config import saved_config

from agq.config_loader import differences
from agq.errors import AgqError

PLACES = ("name", "train.seed", "train.output_dir")  # differ between any two runs; not what was varied


def parse(side: str, results: Path, option: str = "--pair") -> tuple[str, Path, str]:
    """``SETTING:ROW`` -> (label, results folder, row); SETTING is a folder or a name under ``results``;
    ``option`` names the argument it came from in an error."""
    setting, sep, name = side.rpartition(":")
    if not sep or not setting or not name:
        raise AgqError(f"{option} {side!r}: expected SETTING:ROW, e.g. mnist_deep26_96:residual")
    folder = Path(setting) if Path(setting).exists() else results / setting
    if not (folder / "runs").is_dir():
        raise AgqError(f"{option} {side!r}: benchmark results folder {folder} has no runs/ of records")
    return side, folder, name


Records = dict[Path, list[dict[str, Any]]]  # results folder -> its run records, read once per command


def _runs(records: Records, folder: Path, name: str) -> dict[int, dict[str, Any]]:
    runs = {int(r["seed"]): r for r in records[folder]
            if r["row"] == name and table.final_value(r) is not None}
    for seed, record in runs.items():
        if not isinstance(record.get("config"), dict):
            raise AgqError(f"record {name}_s{seed} in {folder / 'runs'} has no config "
                           "(what varied is unknown)")
    return runs


def compare(a: tuple[str, Path, str], b: tuple[str, Path, str], records: Records) -> dict[str, Any]:
    """a - b seed by seed over the seeds both have, with the config keys the two rows differ in."""
    runs = [_runs(records, folder, name) for _, folder, name in (a, b)]
    for (label, _, _), found in zip((a, b), runs, strict=True):
        if not found:
            raise AgqError(f"--pair {label}: no finished record of that row")
    seeds = sorted(set(runs[0]) & set(runs[1]))
    if not seeds:
        raise AgqError(f"--pair {a[0]} {b[0]}: no seed in common")
    varied: dict[str, list[Any]] = {}
    for seed in seeds:
        x, y = runs[0][seed], runs[1][seed]
        starts = table.pretraining_of(x), table.pretraining_of(y)
        if starts[0] != starts[1]:
            raise AgqError(f"--pair {a[0]} {b[0]}: the rows start from different pre-trainings "
                           f"({starts[0]} vs {starts[1]}); not a pair")
        epoch = table.differing_epoch(table.pretraining_history(x), table.pretraining_history(y))
        if epoch is not None:
            raise AgqError(f"--pair {a[0]} {b[0]}: seed {seed} started from different pre-trained networks "
                           f"(pre-training histories differ from epoch {epoch}); not a pair")
        configs = (saved_config(r["config"], f"{label}, seed {seed}") for r, label in ((x, a[0]), (y, b[0])))
        for key, old, new in differences(*configs, ignore=PLACES):
            varied[key] = [old, new]
    values = [{s: table.final_value(r[s]) for s in seeds} for r in runs]
    cpus = {_machine(r[s].get("environment", {})) for r in runs for s in seeds}
    return _result(a[0], b[0], varied, sorted(cpus), values)


def _machine(env: dict[str, Any]) -> str:
    """The capability, and the processor where the record names it (two AVX512 processors differ too)."""
    capability = str(env.get("cpu_capability", "-"))
    return f"{capability} ({env['cpu']})" if env.get("cpu") else capability


def _result(a: str, b: str, varied: dict[str, list[Any]], cpus: list[str],
            values: list[dict[int, float]]) -> dict[str, Any]:
    return {"a": a, "b": b, "varied": varied, "cpu_capability": cpus, "a_top1": table.summarize(values[0]),
            "b_top1": table.summarize(values[1]), "difference": table.difference(*values)}


def _rows(result: dict[str, Any]) -> tuple[str, str]:
    return result["a"].rpartition(":")[2], result["b"].rpartition(":")[2]


def pool(found: list[dict[str, Any]]) -> dict[str, Any]:
    """The pairs as one comparison: their seeds together, each seed's values from the one pair that has it."""
    first = found[0]
    values: list[dict[int, float]] = [{}, {}]
    owner: dict[int, str] = {}
    for r in found:
        label = f"{r['a']} - {r['b']}"
        if _rows(r) != _rows(first):
            raise AgqError(f"--pool: {label} compares rows {' - '.join(_rows(r))} but {first['a']} - "
                           f"{first['b']} compares {' - '.join(_rows(first))}; not one comparison")
        if r["varied"] != first["varied"]:
            raise AgqError(f"--pool: {label} varies {sorted(r['varied'])} but {first['a']} - {first['b']} "
                           f"varies {sorted(first['varied'])}; not one comparison")
        for seed in r["difference"]["seeds"]:
            if seed in owner:
                raise AgqError(f"--pool: seed {seed} is in both {owner[seed]} and {label}; "
                               "each seed counts once")
            owner[seed] = label
        for side, key in zip(values, ("a_top1", "b_top1"), strict=True):
            side.update(zip(r[key]["seeds"], r[key]["values"], strict=True))
    cpus = sorted({c for r in found for c in r["cpu_capability"]})
    return _result(" + ".join(r["a"] for r in found), " + ".join(r["b"] for r in found), first["varied"],
                   cpus, values)


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["Test top-1 % of F after fine-tuning, mean ± std over the seeds both rows have; a - b seed by "
             "seed (both runs of a seed started from the same pre-trained network, checked), mean ± std "
             "[95 % CI].", "",
             "| a | b | a top-1 % | b top-1 % | a - b | 95 % CI | per seed | seeds | CPU | "
             "config keys varied (a; b) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d = r["difference"]
        varied = "; ".join(f"{k}: {v[0]!r} vs {v[1]!r}" for k, v in r["varied"].items()) or "none"
        lines.append(f"| `{r['a']}` | `{r['b']}` | {table.cell(r['a_top1'])} | {table.cell(r['b_top1'])} | "
                     f"{table.cell(d)} | {table.interval(d)} | {table.signed_values(d)} | "
                     f"{', '.join(map(str, d['seeds']))} | {', '.join(r['cpu_capability'])} | {varied} |")
    return "\n".join(lines)


def write(pairs: list[tuple[str, str]], results: Path, out: Path, pooled: bool = False) -> str:
    """across.json and README.md in ``out`` for each (a, b) of ``pairs`` (SETTING:ROW each), and with
    ``pooled`` the pairs read as one comparison (the last line)."""
    if pooled and len(pairs) < 2:
        raise AgqError("--pool needs two or more --pair")
    sides = [(parse(a, results), parse(b, results)) for a, b in pairs]
    records: Records = {f: table.load_records(f / "runs") for pair in sides for _, f, _ in pair}
    found = [compare(a, b, records) for a, b in sides]
    data: dict[str, Any] = {"pairs": found}
    if pooled:
        data["pooled"] = pool(found)
    md = markdown([*found, *([data["pooled"]] if pooled else [])])
    reading.write(out, "across.json", data, "rows across settings", md,
                  lambda d: [[p["a"], p["b"]] for p in d["pairs"]])
    return md
