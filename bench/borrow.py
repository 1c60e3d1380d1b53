"""A row of one setting read from another setting's records, where that setting already ran this row's run.

Plan (11)'s plain row (192 fine-tuning epochs) is plan (9)'s plain_2x: the same run from the same pre-trained
start, so it is run once and recorded in plan (9)'s folder. Without it the longer setting's own report has no
plain row, so neither the setting's outcome nor any row's share of the gap could be read there. A results
folder's ``borrowed.json`` names, per borrowed row, the folder (relative to the results folder) and row its
records come from and each record's sha256 (under its file name, so the seeds are the records'); the report
reads them from there under this setting's row name, next to the folder's own records.

Borrowing checks once that every record is the run this setting's row would be: its config equal to the one
the row gets here (bar the run's name and its run folder), one record per seed, and beside it a record of this
folder that started from the same pre-trained network (same pre-training history), on the same machine and
training code. Every reading checks the hashes, so a source record changed since is an error rather than
another number under an old name, and a record of the folder's own under a borrowed row's name is an error
rather than one of the two silently hiding the other."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agq.bench import across, table
from agq.bench.accuracy import MACHINE_KEYS, Job, Runner
from agq.bench.rows import row

from agq.errors import AgqError
from agq.io import atomic_write_bytes, bytes_sha256, json_bytes, read_json

BORROWED = "borrowed.json"
PLACES = ("name", "train.output_dir")  # differ between the two settings' runs of one row and seed
Records = list[dict[str, Any]]


def parse(spec: str) -> tuple[str, str]:
    """``ROW=SETTING:ROW`` -> (this setting's row, the source side)."""
    name, sep, source = spec.partition("=")
    if not sep or not name or not source:
        raise AgqError(f"--borrow {spec!r}: expected ROW=SETTING:ROW, e.g. "
                       "plain=mnist_deep26_96_log:plain_2x")
    row(name)  # an unknown row is one line naming the known ones
    return name, source


def _valid(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("setting"), str)
            and isinstance(entry.get("row"), str) and isinstance(entry.get("records"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in entry["records"].items()))


def entries(out: Path) -> dict[str, dict[str, Any]]:
    """The folder's borrowed rows as ``borrowed.json`` holds them (none without the file)."""
    path = out / BORROWED
    if not path.is_file():
        return {}
    data = read_json(path, "agq bench --only borrow")
    if not isinstance(data, dict) or not all(_valid(e) for e in data.values()):
        raise AgqError(f"{path}: expected {{ROW: {{setting, row, records}}}}; borrow again with "
                       "agq bench --only borrow")
    return data


def _read(out: Path, name: str, entry: dict[str, Any], own: Records) -> Records:
    """Row ``name``'s borrowed records, each hash checked; ``own`` (the folder's records) may hold none
    of that row."""
    if any(r["row"] == name for r in own):
        raise AgqError(f"{out / 'runs'} has records of row {name}, which {out / BORROWED} borrows: "
                       "move one of the two away")
    found = []
    for file, sha in entry["records"].items():
        path = Path(os.path.normpath(out / entry["setting"] / "runs" / file))
        data = path.read_bytes() if path.is_file() else None
        if data is None or bytes_sha256(data) != sha:
            state = "is not found" if data is None else "changed since it was borrowed (sha256 differs)"
            raise AgqError(f"{out / BORROWED}: borrowed record {path} {state}; borrow row {name} again "
                           "with agq bench --only borrow")
        found.append({**json.loads(data), "row": name})
    return found


def load(out: Path, found: dict[str, dict[str, Any]], own: Records) -> Records:
    """The records of the borrowed rows ``found`` (:func:`entries`) under this setting's row names."""
    return [r for name, entry in found.items() for r in _read(out, name, entry, own)]


def check_rows(out: Path, rows: list[str]) -> None:
    """A borrowed row is not run here: its records would be counted twice under one name."""
    borrowed = sorted(set(entries(out)) & set(rows))
    if borrowed:
        raise AgqError(f"row {borrowed[0]} is borrowed ({out / BORROWED}): leave it out of --rows")


def _machine_and_code(record: dict[str, Any]) -> tuple[tuple[Any, ...], Any]:
    env = record.get("environment", {})
    return tuple(env.get(k) for k in MACHINE_KEYS), record.get("training_code_sha256")


def _check(spec: str, name: str, files: list[tuple[Path, dict[str, Any]]], own: Records,
           runner: Runner) -> None:
    """Each source record is row ``name``'s run here (see the module docstring), else one line."""
    seeds: dict[int, Path] = {}
    for path, record in files:
        seed = record["seed"]  # a whole number (table.record_files)
        if seed in seeds:
            raise AgqError(f"--borrow {spec}: {seeds[seed]} and {path} are both seed {seed}")
        seeds[seed] = path
        if not isinstance(record.get("config"), dict):
            raise AgqError(f"--borrow {spec}: {path} has no config (what it ran is unknown)")
        bad = runner.first_difference(Job(name, seed), record["config"], str(path), ignore=PLACES)
        if bad:
            key, there, here = bad
            raise AgqError(f"--borrow {spec}: {path} is not the run row {name} is here: config key {key} is "
                           f"{there!r} there, {here!r} here")
        beside = [r for r in own if r["seed"] == seed
                  and table.pretraining_of(r) == row(name).pretrain]
        if not beside:
            raise AgqError(f"--borrow {spec}: {runner.records} has no record started from the "
                           f"{row(name).pretrain} pre-training of seed {seed} to check {path} against")
        mine, theirs = _machine_and_code(beside[0]), _machine_and_code(record)
        for where, said in (("the beside record", mine), (str(path), theirs)):
            if None in (*said[0], said[1]):
                raise AgqError(f"--borrow {spec}: {where} of seed {seed} does not say which machine and "
                               "training code ran it")
        if mine != theirs:
            what = "machine" if mine[0] != theirs[0] else "training code"
            raise AgqError(f"--borrow {spec}: {path} ran on another {what} than {runner.records}'s records")


def declare(out: Path, base: Path, specs: list[str], results: Path) -> dict[str, Any]:
    """Borrow each of ``specs`` (``ROW=SETTING:ROW``) into ``out``: check every finished source record, then
    write ``borrowed.json`` with their hashes once (an earlier entry of a row replaced, others kept);
    nothing is written when any check fails."""
    own = table.load_records(out / "runs") if (out / "runs").is_dir() else []
    runner = Runner(out / "runs", [], base)
    borrowed, relabelled, labels = entries(out), [], []
    names = [parse(spec)[0] for spec in specs]
    if len(set(names)) < len(names):
        raise AgqError(f"--borrow: row {next(n for n in names if names.count(n) > 1)} is given twice")
    for name, entry in borrowed.items():  # the rows kept must still read, or the report would not
        if name not in names:
            kept = _read(out, name, entry, own)
            relabelled += kept
            labels += [f"{entry['setting']}: {entry['row']}_s{r['seed']}" for r in kept]
    for spec in specs:
        name, source = parse(spec)
        _, folder, source_row = across.parse(source, results, "--borrow")
        files = [(p, r) for p, r in table.record_files(folder / "runs")
                 if r["row"] == source_row and table.final_value(r) is not None]
        if not files:
            raise AgqError(f"--borrow {spec}: no finished record of row {source_row} in {folder / 'runs'}")
        if any(r["row"] == name for r in own):
            raise AgqError(f"--borrow {spec}: {out / 'runs'} has records of row {name} of its own")
        _check(spec, name, files, own, runner)
        hashes = {}
        for path, record in files:  # the hash of the bytes that were checked
            data = path.read_bytes()
            if json.loads(data) != record:
                raise AgqError(f"--borrow {spec}: {path} changed while it was checked; borrow again")
            hashes[path.name] = bytes_sha256(data)
        borrowed[name] = {"setting": os.path.relpath(folder, out), "row": source_row, "records": hashes}
        relabelled += [{**r, "row": name} for _, r in files]
        labels += [f"{folder.name}: {p.stem}" for p, _ in files]
    table.check_shared_starts([*own, *relabelled], [*(f"{r['row']}_s{r['seed']}" for r in own), *labels])
    atomic_write_bytes(out / BORROWED, json_bytes(borrowed, indent=1))
    return borrowed


def markdown(found: dict[str, dict[str, Any]], records: Records) -> str | None:
    """The report's line naming where each borrowed row of ``found`` comes from, with the seeds of its
    ``records`` (None when nothing is borrowed)."""
    if not found:
        return None
    seeds = {name: sorted(r["seed"] for r in records if r["row"] == name) for name in found}
    parts = [f"{name} = the records of {e['row']} in {e['setting']} (relative to this folder; seeds "
             f"{', '.join(map(str, seeds[name]))})" for name, e in found.items()]
    return ("Borrowed rows: " + "; ".join(parts) + ". Each record was checked, when borrowed, to be the run "
            "that row is here (the same config bar its name and run folder, the same machine, training code "
            f"and pre-trained network as this folder's records of its seed); its sha256 in {BORROWED} is "
            "checked at every reading.")
