"""What every image source shares: the in-memory image set and the checksum gate for downloaded files.

A source module (``training/data.py`` for MNIST and digits, ``training/cifar.py``,
``training/image_folder.py``) turns a published dataset into a :class:`Source` of raw uint8 arrays.
Files that get unpickled come from the internet, and unpickling runs code: :func:`verified_file` checks
their sha256 *before* anyone reads them, and caches a download only once it passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agq.errors import AgqError
from agq.io import atomic_write_bytes, bytes_sha256


@dataclass(frozen=True)
class ImageSet:
    """Raw uint8 images (N, C, H, W) and their int64 labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray | slice) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Source:
    """A dataset as published: its training pool, its test split, class names, and (MNIST) a valid split."""

    train: ImageSet
    test: ImageSet
    classes: list[str]
    valid: ImageSet | None = None


def check_sha256(data: bytes, expected: str, what: str, remedy: str) -> None:
    """Refuse ``data`` (one line naming ``what``) unless its sha256 is ``expected``."""
    digest = bytes_sha256(data)
    if digest != expected:
        raise AgqError(f"{what}: sha256 {digest[:16]}... does not match the expected {expected[:16]}...; "
                       f"{remedy}")


def verified_file(path: Path, sha256: str, fetch: Callable[[Path], bytes] | None = None) -> bytes:
    """The bytes of ``path`` once their sha256 is checked.

    A missing file is fetched with ``fetch(path)`` (which raises :class:`AgqError` when it cannot), checked,
    then cached at ``path`` atomically; without ``fetch`` a missing file is an error.
    """
    if path.is_file():
        data = path.read_bytes()
        remedy = "delete it to fetch it again" if fetch else "not the official file"
        check_sha256(data, sha256, f"data file {path}", remedy)
        return data
    if fetch is None:
        raise AgqError(f"data file {path} not found")
    data = fetch(path)
    check_sha256(data, sha256, f"data fetched for {path}", "not cached")
    atomic_write_bytes(path, data)
    return data
