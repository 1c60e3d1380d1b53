"""``agq export``: checkpoint -> build/<name>/model.onnx + model.json, checked equal to PyTorch."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export", help="export a checkpoint's network F to QONNX, checked equal to PyTorch",
        description="Export the deployable network of a checkpoint to QONNX (model.onnx + model.json). "
                    "Stops if the 16-bit contract, the FINN deployability lint or the equality check "
                    "against PyTorch on real test images fails.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt written by agq train")
    parser.add_argument("--out", type=Path, required=True, help="output folder (model.onnx, model.json)")
    parser.add_argument("--images", type=int, default=256, help="test images for the equality check")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Brevitas warns at import about an optional CUDA kernel package that CPU export never uses.
    warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")
    from agq.export.equivalence import first_lines
    from agq.export.model_card import MODEL_CARD, read_card
    from agq.export.qonnx import EquivalenceError, export_checkpoint

    start = time.perf_counter()
    try:
        onnx_path = export_checkpoint(args.checkpoint, args.out, n_images=args.images,
                                      progress=not args.no_progress)
    except EquivalenceError as exc:
        for line in first_lines(exc.report.problems(), "not shown: nothing was written"):
            print(line, file=sys.stderr)
        raise
    eq = read_card(onnx_path).equivalence
    print(f"wrote {onnx_path} and {MODEL_CARD} in {time.perf_counter() - start:.1f} s; "
          f"equality on {eq['images']} test images: {eq['top1_equal']} top-1 equal, "
          f"{eq['int_logits_equal']} integer logits equal, "
          f"{eq['rounded_logits_equal']} round(logits / scale) equal, {eq['ties']} float ties")
    for line in first_lines(eq["differences"], f"all in {onnx_path.parent / MODEL_CARD}"):
        print(f"  {line}")
    return 0
