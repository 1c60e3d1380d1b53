"""CIFAR-10 and CIFAR-100 from their official python-pickle archives, without torchvision.

The archive (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``) is read from ``data.archive`` when
set, else from ``data.root``/<archive name> (where torchvision puts it too), downloaded from the
official URL when missing. Its sha256 is checked before any member is unpickled (training/sources.py);
the members are read from the archive in memory, never extracted, so a member name cannot write
outside the cache. Each batch is a pickled dict with bytes keys: ``b"data"`` (N x 3072 uint8, the red,
green, then blue 32 x 32 planes) and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100, whose
coarse labels are not used). The training pool is the batches in their published order.

The sha256 values are the ones torchvision's (prototype) dataset loaders and Keras check for these URLs;
the files' own page publishes md5 only (c58f3010... and eb9058c3...).
"""

from __future__ import annotations

import io
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from agq.training.sources import ImageSet, Source, verified_file

from agq.errors import AgqError

SIDE = 32


@dataclass(frozen=True)
class Archive:
    """One official archive: where it comes from, its checksum, and the members agq reads."""

    file: str
    url: str
    sha256: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    labels_key: bytes
    names_key: bytes
    num_classes: int


ARCHIVES = {
    "cifar10": Archive(
        file="cifar-10-python.tar.gz", url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        folder="cifar-10-batches-py", train=tuple(f"data_batch_{i}" for i in range(1, 6)), test="test_batch",
        meta="batches.meta", labels_key=b"labels", names_key=b"label_names", num_classes=10),
    "cifar100": Archive(
        file="cifar-100-python.tar.gz", url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        folder="cifar-100-python", train=("train",), test="test",
        meta="meta", labels_key=b"fine_labels", names_key=b"fine_label_names", num_classes=100),
}


def load_cifar(dataset: str, root: Path, archive: str) -> Source:
    """The training pool, test split and class names of ``cifar10`` / ``cifar100``."""
    spec = ARCHIVES[dataset]
    if archive:
        path = Path(archive).expanduser()
        if path.is_dir():
            raise AgqError(f"config data.archive={archive}: a folder; point it at the official {spec.file} "
                           "itself (an unpacked copy cannot be checked against the published sha256)")
        data = verified_file(path, spec.sha256)
    else:
        path = root / spec.file
        data = verified_file(path, spec.sha256, partial(_download, spec.url))
    members = _read_members(path, data, spec)
    train = [_batch(members[name], path, name, spec) for name in spec.train]
    test = _batch(members[spec.test], path, spec.test, spec)
    return Source(train=ImageSet(np.concatenate([part.images for part in train]),
                                 np.concatenate([part.labels for part in train])),
                  test=test, classes=_class_names(members[spec.meta], path, spec))


def _download(url: str, path: Path) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.read()
    except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors
        raise AgqError(f"data file {path} is missing and downloading {url} failed ({exc}); put the official "
                       "archive there or set data.archive to a copy of it") from None


def _read_members(path: Path, data: bytes, spec: Archive) -> dict[str, Any]:
    """Every member agq needs, unpickled with ``encoding="bytes"`` (the files are Python 2 pickles).

    One pass over the stream: the archive stores its members in no particular order, and seeking back in
    a gzip stream would decompress it again."""
    wanted = {f"{spec.folder}/{name}": name for name in (*spec.train, spec.test, spec.meta)}
    members = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                handle = tar.extractfile(member) if name and member.isfile() else None
                if handle is not None:
                    members[name] = _unpickle(handle.read(), path, member.name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AgqError(f"archive {path} cannot be read as a .tar.gz: {exc}") from None
    missing = [member for member, name in wanted.items() if name not in members]
    if missing:
        raise AgqError(f"archive {path} has no file {missing[0]}: not the official {spec.file}")
    return members


def _unpickle(payload: bytes, path: Path, member: str) -> Any:
    try:
        return pickle.loads(payload, encoding="bytes")
    except Exception as exc:  # a corrupt pickle can raise nearly any exception type
        raise AgqError(f"archive {path}: {member} is not a readable pickle ({type(exc).__name__})") from None


def _batch(batch: Any, path: Path, name: str, spec: Archive) -> ImageSet:
    """Images (N, 3, 32, 32) and labels of one batch dict, checked for shape, type and label range."""
    where = f"archive {path}: {spec.folder}/{name}"
    if not isinstance(batch, dict) or b"data" not in batch or spec.labels_key not in batch:
        raise AgqError(f"{where} is not a dict with keys b'data' and {spec.labels_key!r}")
    pixels = batch[b"data"]
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 2
            and pixels.shape[1] == 3 * SIDE * SIDE and len(pixels) > 0):
        raise AgqError(f"{where}: b'data' is not an N x {3 * SIDE * SIDE} uint8 array")
    labels = np.asarray(batch[spec.labels_key])
    if (labels.shape != (len(pixels),) or labels.dtype.kind not in "iu"
            or labels.min() < 0 or labels.max() >= spec.num_classes):
        raise AgqError(f"{where}: {spec.labels_key!r} is not one label in 0..{spec.num_classes - 1} "
                       "per image")
    return ImageSet(pixels.reshape(-1, 3, SIDE, SIDE), labels.astype(np.int64))


def _class_names(meta: Any, path: Path, spec: Archive) -> list[str]:
    names = meta.get(spec.names_key) if isinstance(meta, dict) else None
    if (not isinstance(names, list) or len(names) != spec.num_classes
            or not all(isinstance(n, bytes) for n in names)):
        raise AgqError(f"archive {path}: {spec.folder}/{spec.meta} has no list of {spec.num_classes} "
                       f"{spec.names_key!r}")
    return [n.decode("utf-8", errors="replace") for n in names]
