"""Where a cross-setting reading (convergence, across) lands: its JSON and its README, committed together
so that a crash never leaves a README describing numbers the JSON does not hold.

A folder holds one reading: the same inputs read again (more seeds since) replace it, other inputs are
refused, so that a reading run without ``--out`` (the default folder) cannot replace the committed reading
of other settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agq.errors import AgqError
from agq.io import commit_files, json_bytes, read_earlier_json


def write(out: Path, json_name: str, data: Any, title: str, md: str, inputs: Callable[[Any], Any]) -> None:
    """``json_name`` (``data``) and README.md (``title`` over ``md``) into ``out``, together, unless
    ``out`` holds a reading whose ``inputs`` (what it read, from its JSON) differ from this one's."""
    path = out / json_name
    if path.is_file():
        earlier = read_earlier_json(path)
        try:
            before = inputs(earlier)
        except (KeyError, TypeError, AttributeError):
            raise AgqError(f"{path} is not a reading of this kind: give --out a folder of its own") from None
        now = inputs(data)
        if before != now:
            raise AgqError(f"{path} holds the reading of {before}, not of {now}: give --out a folder of its "
                           "own (the reading there is kept)")
    commit_files(out, {json_name: json_bytes(data, indent=1),
                       "README.md": f"# agq benchmark: {title}\n\n{md}\n".encode()})
