"""``agq build``: compile an exported QONNX model with FINN for a board (heavy imports inside run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agq.hw.boards import DEFAULT_BOARD
from agq.hw.config import HwConfig, hw_config_from_dict, load_hw_config


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("build", help="compile model.onnx with FINN into an all-RTL dataflow accelerator",
                            description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="exported QONNX model (agq export)")
    parser.add_argument("--board", default=DEFAULT_BOARD,
                        help=f"a board FINN knows (default {DEFAULT_BOARD})")
    parser.add_argument("--out", type=Path, default=None,
                        help="build folder (default <model folder>/<board>)")
    parser.add_argument("--config", default=None,
                        help="hardware config: a YAML file or a packaged name, e.g. max_fps")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a hardware config value (YAML-typed), e.g. --set target_fps=1000; "
                        "repeatable")
    parser.add_argument("--input-scale", type=_number, default=None,
                        help="float-input models: raw uint8 pixel x maps to SCALE * x + OFFSET (e.g. 1/255)")
    parser.add_argument("--input-offset", type=_number, default=None,
                        help="see --input-scale (e.g. -1 for 2/255 * x - 1)")
    parser.add_argument("--inputs", type=Path, default=None,
                        help="raw uint8 images (.npy) for FINN's verification steps (foreign models)")
    parser.add_argument("--expected", type=Path, default=None,
                        help="the model's outputs on --inputs (.npy); default: qonnx executes the model")
    parser.add_argument("--allow-missing-vivado", action="store_true",
                        help="treat a missing Vivado as the planned end of the build (exit 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _number(text: str) -> float:
    """A float or a fraction ``a/b`` (1/255 is what a user knows, not its decimal expansion)."""
    num, _, den = text.partition("/")
    try:
        return float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction a/b: {text!r}") from None


def _argv(args: argparse.Namespace) -> list[str]:
    """This command's own arguments, for a restart of the process."""
    argv = ["build", "--model", str(args.model), "--board", args.board]
    for flag, value in (("--out", args.out), ("--config", args.config), ("--input-scale", args.input_scale),
                        ("--input-offset", args.input_offset), ("--inputs", args.inputs),
                        ("--expected", args.expected)):
        if value is not None:
            argv += [flag, str(value)]
    for assignment in args.overrides:
        argv += ["--set", assignment]
    argv += [flag for flag, on in (("--allow-missing-vivado", args.allow_missing_vivado),
                                   ("--no-progress", args.no_progress)) if on]
    return argv


def _config(args: argparse.Namespace) -> HwConfig:
    """The config file with the ``--set`` overrides and the input mapping options laid over it."""
    base = load_hw_config(args.config, args.overrides)
    if args.input_scale is None and args.input_offset is None:
        return base
    scale = base.input_scale if args.input_scale is None else args.input_scale
    offset = base.input_offset if args.input_offset is None else args.input_offset
    return hw_config_from_dict({**base.to_dict(), "input_scale": scale, "input_offset": offset})


def run(args: argparse.Namespace) -> int:
    config = _config(args)  # a bad config stops here, before FINN is imported
    from agq.hw.build import build_accelerator
    from agq.hw.finn_env import restart_with_xilinx_libraries

    restart_with_xilinx_libraries(_argv(args))  # XSim's kernel loads in-process: the loader must see it

    out = build_accelerator(args.model, board=args.board, out_dir=args.out,
                            allow_missing_vivado=args.allow_missing_vivado, config=config,
                            progress=not args.no_progress, inputs=args.inputs, expected=args.expected)
    print(f"build folder: {out}")
    return 0
