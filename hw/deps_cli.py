"""``agq deps``: fetch FINN's external dependencies into $FINN_DEPS, as ``finn deps update`` does."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("deps", help="fetch FINN's dependencies (finn-hlslib, nlohmann/json, board "
                            "files) into $FINN_DEPS", description=__doc__)
    parser.add_argument("--dest", type=Path, default=None, help="target folder (default: FINN's $FINN_DEPS)")
    parser.add_argument("--definitions", type=Path, default=None,
                        help="dependency definitions YAML (default: FINN's external_dependencies.yaml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agq.hw.finn_deps import fetch
    from agq.hw.finn_env import finn_paths, use_build_dir

    with tempfile.TemporaryDirectory() as scratch:
        use_build_dir(Path(scratch))  # FINN's settings without ~/.finn; nothing is built here
        dest = args.dest if args.dest is not None else finn_paths()["FINN_DEPS"]
        fetched = fetch(dest, args.definitions)
    done = f"fetched {', '.join(fetched)}" if fetched else "all up to date"
    print(f"FINN dependencies in {dest}: {done}")
    return 0
