"""``agq build``: compile an exported QONNX model with FINN for a board (heavy imports inside run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hw.boards import DEFAULT_BOARD


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("build", help="compile model.onnx with FINN into an all-RTL dataflow accelerator",
                            description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="exported QONNX model (agq export)")
    parser.add_argument("--board", default=DEFAULT_BOARD,
                        help=f"a board FINN knows (default {DEFAULT_BOARD})")
    parser.add_argument("--out", type=Path, default=None,
                        help="build folder (default <model folder>/<board>)")
    parser.add_argument("--config", type=Path, default=None,
                        help="hardware config YAML (default configs/hw/default.yaml)")
    parser.add_argument("--allow-missing-vivado", action="store_true",
                        help="treat a missing Vivado as the planned end of the build (exit 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _argv(args: argparse.Namespace) -> list[str]:
    """This command's own arguments, for a restart of the process."""
    argv = ["build", "--model", str(args.model), "--board", args.board]
    for flag, value in (("--out", args.out), ("--config", args.config)):
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--allow-missing-vivado", args.allow_missing_vivado),
                                   ("--no-progress", args.no_progress)) if on]
    return argv


def run(args: argparse.Namespace) -> int:
    from hw.build import build_accelerator
    from hw.finn_env import restart_with_xilinx_libraries

    restart_with_xilinx_libraries(_argv(args))  # XSim's kernel loads in-process: the loader must see it

    out = build_accelerator(args.model, board=args.board, out_dir=args.out,
                            allow_missing_vivado=args.allow_missing_vivado, config=args.config,
                            progress=not args.no_progress)
    print(f"build folder: {out}")
    return 0
