"""Refuse a virtual environment whose torch is not the pinned CPU build (a CUDA torch costs gigabytes)."""

from __future__ import annotations

import importlib.metadata as md
import sys

EXPECTED_TORCH = "2.13.0+cpu"


def main() -> int:
    torch_version = md.version("torch")
    cuda = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].startswith("nvidia-"))
    if torch_version != EXPECTED_TORCH or cuda:
        print(f"agq: expected torch {EXPECTED_TORCH} and no nvidia-* wheels, found torch {torch_version} "
              f"and {cuda or 'none'}; remove .venv and run make again", file=sys.stderr)
        return 1
    print(f"agq: torch {torch_version}, no CUDA wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
