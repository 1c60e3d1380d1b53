"""A row of one setting read from another setting's records, where that setting already ran this row's run.

Plan (11)'s plain row (192 fine-tuning epochs) is plan (9)'s plain_2x: the same run from the same pre-trained
start, so it is run once and recorded in plan (9)'s folder. Without it the longer setting's own report has no
plain row, so neither the setting's outcome nor any row's share of the gap could be read there. A results
folder's ``borrowed.json`` names, per borrowed row, the folder and row its records come from and each record's
sha256; the report reads them from there under this setting's row name, next to the folder's own records.

Borrowing checks once that every record is the run this setting's row would be (its config equal to the one
the row gets here, bar the run's name and its run folder), from the same machine and training code as the
folder's own records and from the same pre-trained networks; every reading checks the hashes, so a source
record changed since is an error rather than another number under an old name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agq.bench import across, table
from agq.bench.accuracy import MACHINE_KEYS, Job, Runner
from agq.bench.rows import row

from agq.config_loader import differences
from agq.errors import AgqError
from agq.io import atomic_write_bytes, file_sha256, json_bytes, read_json

BORROWED = "borrowed.json"
PLACES = ("name", "train.output_dir")  # differ between the two settings' runs of one row and seed


def parse(spec: str) -> tuple[str, str]:
    """``ROW=SETTING:ROW`` -> (this setting's row, the source side)."""
    name, sep, source = spec.partition("=")
    if not sep or not name or not source:
        raise AgqError(f"--borrow {spec!r}: expected ROW=SETTING:ROW, e.g. "
                       "plain=mnist_deep26_96_log:plain_2x")
    row(name)  # an unknown row is one line naming the known ones
    return name, source


def entries(out: Path) -> dict[str, dict[str, Any]]:
    """The folder's borrowed rows as ``borrowed.json`` holds them (none without the file)."""
    path = out / BORROWED
    if not path.is_file():
        return {}
    data = read_json(path, "agq bench --only borrow")
    if not isinstance(data, dict) or not all(
            isinstance(e, dict) and {"setting", "row", "records"} <= set(e) for e in data.values()):
        raise AgqError(f"{path}: expected {{ROW: {{setting, row, records}}}}; borrow again with "
                       "agq bench --only borrow")
    return data


def load(out: Path) -> list[dict[str, Any]]:
    """The borrowed records under this setting's row names, each hash checked against ``borrowed.json``."""
    found = []
    for name, entry in entries(out).items():
        for file, sha in entry["records"].items():
            path = Path(entry["setting"]) / "runs" / file
            if not path.is_file() or file_sha256(path) != sha:
                state = "is gone" if not path.is_file() else "changed since it was borrowed (sha256 differs)"
                raise AgqError(f"{out / BORROWED}: borrowed record {path} {state}; borrow row {name} again "
                               "with agq bench --only borrow")
            found.append({**read_json(path, "agq bench"), "row": name,
                          "borrowed_from": f"{entry['setting']}:{entry['row']}"})
    return found


def check_rows(out: Path, rows: list[str]) -> None:
    """A borrowed row is not run here: its records would be counted twice under one name."""
    borrowed = sorted(set(entries(out)) & set(rows))
    if borrowed:
        raise AgqError(f"row {borrowed[0]} is borrowed ({out / BORROWED}): leave it out of --rows")


def _machines_and_code(records: list[dict[str, Any]]) -> tuple[set[tuple[Any, ...]], set[Any]]:
    machines = {tuple(r.get("environment", {}).get(k) for k in MACHINE_KEYS) for r in records}
    return machines, {r.get("training_code_sha256") for r in records}


def declare(out: Path, base: Path, spec: str, results: Path) -> dict[str, Any]:
    """Borrow ``spec`` (``ROW=SETTING:ROW``) into ``out``: check every finished source record and write
    ``borrowed.json`` with their hashes (an earlier entry of the row replaced, others kept); nothing is
    written when a check fails."""
    from agq.training.config import saved_config

    name, source = parse(spec)
    _, folder, source_row = across.parse(source, results, "--borrow")
    files = [(p, r) for p, r in table.record_files(folder / "runs")
             if r["row"] == source_row and table.final_value(r) is not None]
    if not files:
        raise AgqError(f"--borrow {spec}: no finished record of row {source_row} in {folder / 'runs'}")
    own = table.load_records(out / "runs") if (out / "runs").is_dir() else []
    if any(r["row"] == name for r in own):
        raise AgqError(f"--borrow {spec}: {out / 'runs'} has records of row {name} of its own")
    runner = Runner(out / "runs", [], base)
    for path, record in files:
        if not isinstance(record.get("config"), dict):
            raise AgqError(f"--borrow {spec}: {path} has no config (what it ran is unknown)")
        expected = runner.config(Job(name, int(record["seed"]))).to_dict()
        bad = differences(saved_config(record["config"], str(path)), expected, ignore=PLACES)
        if bad:
            key, there, here = bad[0]
            raise AgqError(f"--borrow {spec}: {path} is not the run row {name} is here: config key {key} is "
                           f"{there!r} there, {here!r} here")
    if own:
        machines, code = _machines_and_code(own)
        for path, record in files:
            theirs = _machines_and_code([record])
            if not theirs[0] <= machines or not theirs[1] <= code:
                what = "machine" if not theirs[0] <= machines else "training code"
                raise AgqError(f"--borrow {spec}: {path} ran on another {what} than the records in "
                               f"{out / 'runs'}")
    borrowed = {**entries(out), name: {"setting": str(folder), "row": source_row,
                                       "seeds": sorted(int(r["seed"]) for _, r in files),
                                       "records": {p.name: file_sha256(p) for p, _ in files}}}
    relabelled = [{**r, "row": name} for _, r in files]
    table.check_shared_starts([*own, *relabelled], [*(f"{r['row']}_s{r['seed']}" for r in own),
                                                    *(f"{folder.name}: {p.stem}" for p, _ in files)])
    atomic_write_bytes(out / BORROWED, json_bytes(borrowed, indent=1))
    return borrowed


def markdown(out: Path) -> str | None:
    """The report's line naming where each borrowed row comes from (None when nothing is borrowed)."""
    found = entries(out)
    if not found:
        return None
    parts = [f"{name} = the records of {e['row']} in {e['setting']} (seeds "
             f"{', '.join(map(str, e.get('seeds', [])))})"
             for name, e in found.items()]
    return ("Borrowed rows: " + "; ".join(parts) + ". Each record was checked, when borrowed, to be the run "
            "that row is here (the same config bar its name and run folder, the same machine, training code "
            f"and pre-trained network); its sha256 in {BORROWED} is checked at every reading.")
