"""``agq bench [--only PART|report|status|convergence|across|borrow] [--seeds N] [--first-seed S] [--quick]
[--from-runs DIR] [--settings A,B] [--pair A:ROW B:ROW ... [--pool]] [--borrow ROW=SETTING:ROW ...]``.

accuracy: every row of the table x seeds (bench/rows.py), resumable; cost: time and memory per step;
zero_grad: low-bit weights without gradient, per clamp (reads the accuracy runs); bn_sensitivity (only
with --only): each fine-tuned F's test top-1 under other BN statistics (reads the accuracy runs; with
--rows, only the jobs that --rows, --seeds and --first-seed choose; runs scored before keep their
scores); hw: FINN estimates and RTL-simulation cycles of the default model; report: only rebuild
README.md and the tables from the results present (e.g. while the accuracy part is still running);
status: which accuracy jobs are recorded, running, stopped part-way or waiting, and the training left
(reads only); convergence: accuracy against fine-tuning length across the result folders of
``--settings`` (bench/convergence.py); across: a row of one setting against a row of another, seed by
seed (bench/across.py); borrow: read a row of this setting from another setting's records of the same runs,
then rebuild the report (bench/borrow.py). Results: bench/results/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PARTS = ("accuracy", "cost", "zero_grad", "hw")
RESULTS = Path("bench/results")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmark accuracy (paper's Table 6 at CPU scale), cost, hardware",
                            description=__doc__)
    parser.add_argument("--only", choices=(*PARTS, "bn_sensitivity", "report", "status", "convergence",
                                           "across", "borrow"),
                        help="run one part, or only rebuild the report (default: every part)")
    parser.add_argument("--settings", help="--only convergence: comma-separated result folders (a name "
                        "under bench/results or a path) of settings that differ only in fine-tuning epochs")
    parser.add_argument("--pair", nargs=2, action="append", metavar=("A:ROW", "B:ROW"),
                        help="--only across: a - b, each a results folder (or a name under bench/results) "
                        "and a row, e.g. mnist_deep26_96_log:residual mnist_deep26_96:residual; repeatable")
    parser.add_argument("--pool", action="store_true",
                        help="--only across: also read the pairs as one comparison, each seed from the one "
                        "pair that has it (seeds run again elsewhere, in folders of their own)")
    parser.add_argument("--borrow", action="append", metavar="ROW=SETTING:ROW",
                        help="--only borrow: read this setting's ROW from another setting's records of the "
                        "same runs, e.g. plain=mnist_deep26_96_log:plain_2x (bench/borrow.py); repeatable")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the main table (default 5)")
    parser.add_argument("--ablation-seeds", type=int, default=5,
                        help="seeds of the ablation rows (default 5)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds count from here (default 0), e.g. --first-seed 4 --seeds 1: seed 4 alone")
    parser.add_argument("--rows", help="comma-separated subset of rows (default: all; see bench/rows.py)")
    parser.add_argument("--workers", type=int, default=2, help="training processes at a time (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1,000 images, 1+2 epochs, 1 seed, results in bench/results/quick")
    parser.add_argument("--from-runs", type=Path, metavar="DIR",
                        help="only tabulate the `agq train` run folders under DIR (e.g. GPU CIFAR-100 runs)")
    parser.add_argument("--config", type=Path, help="base config of the accuracy rows, a file or a packaged "
                        "name (default bench/mnist_deep; e.g. cifar100_resnet18_plain on a GPU)")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results, with --config "
                        "bench/results/<its name>, with --quick bench/results/quick; --only convergence and "
                        "across: bench/results/convergence and bench/results/across, each holding one "
                        "reading, which only the same inputs may replace)")
    parser.add_argument("--cost-rounds", type=int, default=3, help="interleaved rounds of the cost part")
    parser.add_argument("--cost-steps", type=int, default=5, help="timed steps per method and round")
    parser.add_argument("--cost-batch", type=int, default=64, help="batch of the cost part (default 64)")
    parser.add_argument("--hw-model", default="mnist_plain_ag",
                        help="model whose build/<name>/Pynq-Z2 the hw part reads (default: %(default)s)")
    parser.set_defaults(func=run)


def _runs_folder(config: Path) -> Path:
    """The one folder the accuracy part trains in (train.output_dir): zero_grad and bn_sensitivity read its
    trainer states there."""
    from agq.training.config import load_config

    return Path(load_config(config).train.output_dir)


def run(args: argparse.Namespace) -> int:
    from agq.bench import accuracy, borrow, report
    from agq.bench.rows import row

    from agq.errors import AgqError
    from agq.io import atomic_write_bytes

    counts = (args.seeds, args.workers, args.cost_rounds, args.cost_steps, args.cost_batch)
    if min(counts) < 1 or args.ablation_seeds < 0 or args.first_seed < 0:
        raise AgqError("--seeds/--workers/--cost-* must be >= 1 and --ablation-seeds/--first-seed >= 0")
    rows = args.rows.split(",") if args.rows else None
    for name in rows or []:
        row(name)  # an unknown row stops here, before anything runs
    if args.config is not None:  # a missing or broken config stops here, before its results folder is made
        from agq.training.config import load_config

        load_config(args.config)
    config = args.config or accuracy.BASE_CONFIG
    if args.only == "convergence":
        from agq.bench.convergence import write

        if not args.settings:
            raise AgqError("--only convergence needs --settings A,B,... (result folders to compare)")
        names = args.settings.split(",")
        folders = {n: Path(n) if Path(n).exists() else RESULTS / n for n in names}
        print(write(folders, args.out or RESULTS / "convergence"))
        return 0
    if args.only == "across":
        from agq.bench.across import write as write_across

        if not args.pair:
            raise AgqError("--only across needs --pair A:ROW B:ROW (one or more)")
        print(write_across(args.pair, RESULTS, args.out or RESULTS / "across", args.pool))
        return 0
    if args.from_runs is not None:
        from agq.bench.fill_table import records_from_runs

        out = args.out or args.from_runs
        out.mkdir(parents=True, exist_ok=True)
        md = report.write_accuracy(records_from_runs(args.from_runs), out, f"runs under {args.from_runs}")
        atomic_write_bytes(out / "README.md", md.encode())
        print(md)
        return 0
    # another base config gets its own folder, so that its records never mix with the MNIST ones
    default = RESULTS / ("quick" if args.quick else args.config.stem if args.config else "")
    out = args.out or default
    records = out / "runs"
    parts = [] if args.only in ("report", "borrow") else [args.only] if args.only else list(PARTS)
    extra = accuracy.QUICK if args.quick else []
    seeds, ablation = (1, 0) if args.quick else (args.seeds, args.ablation_seeds)
    todo = accuracy.jobs(seeds, ablation, rows, args.first_seed)
    if args.borrow and args.only != "borrow":
        raise AgqError("--borrow is read only by --only borrow")
    if args.only == "borrow":
        if not args.borrow:
            raise AgqError("--only borrow needs --borrow ROW=SETTING:ROW (one or more)")
        borrow.declare(out, config, args.borrow, RESULTS)
    if "accuracy" in parts or args.only == "status":
        borrow.check_rows(out, [job.row for job in todo])
    if args.only == "status":
        from agq.bench import status

        runner = accuracy.Runner(records, extra, config)
        print(status.render(*status.statuses(runner, todo), args.workers, out))
        return 0
    if "accuracy" in parts:
        accuracy.run_all(records, extra, todo, args.workers, config)
    if "cost" in parts:
        from agq.bench.cost import run_cost

        steps, rounds = (2, 1) if args.quick else (args.cost_steps, args.cost_rounds)
        run_cost(args.cost_batch, steps, rounds, out / "cost.json")
    from agq.bench import bn_sensitivity, zero_grad  # report imports both anyway

    if "zero_grad" in parts and not args.quick:  # its fixed cases (bench/zero_grad.py)
        report.write_json(out / "zero_grad.json", zero_grad.measure(_runs_folder(config)))
    if "bn_sensitivity" in parts and not args.quick:  # merges into the scores its file already holds
        chosen = {job.key for job in todo if job.row != accuracy.PRETRAIN} if args.rows else None
        path = out / "bn_sensitivity.json"
        report.write_json(path, bn_sensitivity.measure(_runs_folder(config), chosen, previous=path))
    if "hw" in parts:
        report.write_hardware(out, args.hw_model, build_missing=not args.quick)
    path = report.write_readme(out, records, config)
    print(path.read_text())
    print(f"agq bench: wrote {path}")
    return 0
