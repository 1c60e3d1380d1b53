"""``agq rtlsim``: images through the Verilator simulation of a build's RTL, bit-exact or an error.

Images: agq's test split for a model agq exported, or your own raw uint8 images (--inputs, for any
build); references: FINN's Python execution always, PyTorch for agq's models, --expected when given.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "rtlsim", help="simulate a build's RTL with Verilator on test images, check it bit-exact",
        description=__doc__,
    )
    parser.add_argument("--build", type=Path, required=True, help="build folder written by agq build")
    parser.add_argument("--images", type=int, default=None,
                        help="images to simulate (default 100 test images, or all of --inputs)")
    parser.add_argument("--inputs", type=Path, default=None,
                        help="raw uint8 images (.npy, N x the model's input shape), not agq's test split")
    parser.add_argument("--expected", type=Path, default=None,
                        help="the model's outputs on --inputs (.npy, N rows), compared with the hardware")
    parser.add_argument("--stall-prob", type=float, default=0.0,
                        help="probability that the output's TREADY is held low in a cycle (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stall pattern (default 0)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="parallel simulator processes (default: one per CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agq.hw.rtlsim.report import FOLDER, summary
    from agq.hw.rtlsim.run import simulate

    from agq.errors import AgqError

    report = simulate(args.build, images=args.images, stall_prob=args.stall_prob, seed=args.seed,
                      inputs=args.inputs, expected=args.expected, jobs=args.jobs,
                      progress=not args.no_progress)
    print(summary(report))
    print(f"report: {args.build / FOLDER / 'report.md'}")
    if not report["ok"]:
        raise AgqError(f"the RTL simulation is not bit-exact (see {args.build / FOLDER / 'report.md'})")
    return 0
