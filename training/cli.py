"""``agq train --config NAME|FILE.yaml [--set key=value ...] [--resume]``."""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="pre-train F in full precision, then fine-tune it quantized",
                            description=__doc__)
    parser.add_argument("--config", required=True,
                        help="YAML config: a file, or the name of a packaged config (e.g. mnist_plain_ag)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (YAML-typed), e.g. --set train.epochs=2; repeatable")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run from runs/<name>/last.pt")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agq.training.config import load_config
    from agq.training.loop import train

    cfg = load_config(args.config, args.overrides)
    path = train(cfg, resume=args.resume, progress=args.progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"agq train: wrote {path}")
    return 0
