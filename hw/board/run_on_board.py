"""Run agq's accelerator on the board: test set in, accuracy and measured frames/s out.

Runs on the board (PYNQ image, Python 3, numpy) with FINN's runtime driver, the PyPI package
``finn-plus-driver`` (see README.md beside this file). It reads the deployment folder it lies in:
``bitfile/finn-accel.bit`` (+ .hwh), ``driver/settings.json`` (FINN's driver settings) and
``host.json`` (what agq kept on the host: the input layout and the logit scale), so the same script
serves every model agq builds.

    python3 run_on_board.py --data testset.npz [--batch 100]

``testset.npz`` holds ``images`` (N images in the model's input layout, uint8, e.g. N x 1 x 28 x 28)
and ``labels`` (N integers).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from finn_plus_driver import get_driver_class

HERE = Path(__file__).resolve().parent


def load(batch: int) -> tuple:
    """The driver instance (this programs the FPGA) and agq's host-side description."""
    host = json.loads((HERE / "host.json").read_text())
    info = json.loads((HERE / "driver" / "settings.json").read_text())["driver_information"]
    info.setdefault("runtime_weight_dir", str(HERE / "driver" / "runtime_weights"))
    info["batch_size"] = batch
    driver = get_driver_class(info.pop("driver_type"))
    return driver(str(HERE / "bitfile" / "finn-accel.bit"), **info), host


def to_accelerator(images: np.ndarray, host: dict) -> np.ndarray:
    """Apply the host-side input nodes (the layout change FINN left on the host)."""
    x = images.reshape((len(images), *host["input_shape"][1:])).astype(np.float32)
    for perm in host["input_transposes"]:
        x = x.transpose(perm)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="npz with 'images' and 'labels'")
    parser.add_argument("--batch", type=int, default=100, help="images per accelerator call")
    args = parser.parse_args()
    data = np.load(args.data)
    images, labels = data["images"], data["labels"]
    accel, host = load(args.batch)
    inputs = to_accelerator(images, host)
    logits = []
    start = time.perf_counter()
    for first in range(0, len(inputs), args.batch):
        chunk = inputs[first:first + args.batch]
        accel.batch_size = len(chunk)
        logits.append(np.asarray(accel.execute(chunk)).reshape(len(chunk), -1))
    seconds = time.perf_counter() - start
    scores = np.concatenate(logits) * host["output_scale"]
    correct = int((scores.argmax(axis=1) == labels).sum())
    print(f"accuracy {correct / len(labels):.4f} ({correct}/{len(labels)} images)")
    print(f"{len(labels) / seconds:.0f} frames/s end to end (host packing + DMA + accelerator, "
          f"batch {args.batch})")
    accel.batch_size = args.batch
    print(f"FINN throughput test (accelerator only): {accel.throughput_test()}")


if __name__ == "__main__":
    main()
