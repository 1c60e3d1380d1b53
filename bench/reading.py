"""Where a cross-setting reading (convergence, across) lands: its JSON and its README, committed together
so that a crash never leaves a README describing numbers the JSON does not hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agq.io import commit_files, json_bytes


def write(out: Path, json_name: str, data: Any, title: str, md: str) -> None:
    """``json_name`` (``data``) and README.md (``title`` over ``md``) into ``out``, together."""
    commit_files(out, {json_name: json_bytes(data, indent=1),
                       "README.md": f"# agq benchmark: {title}\n\n{md}\n".encode()})
