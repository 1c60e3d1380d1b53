"""FINN's Python outputs of a partition, computed once per partition and image and kept on disk.

FINN's Python execution takes tens of milliseconds per MNIST image on agq's partitions: on the 10,000
test images more CPU time than the RTL simulation it checks. Its result depends only on the partition
file (weights and thresholds are its initializers; the Python mode reads no memory file), on FINN's and
qonnx's versions and on the image. So it is cached: one file per partition key (a hash of those),
``<rtlsim cache>/finn_python/<key>.npz``, whose rows are keyed by the sha256 of each partition input.
A run computes only the images the file lacks and adds them (an atomic replace: two runs at once can
lose one's new rows, never mix a wrong one in). A file that does not load is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agq.io import atomic_write_bytes

FOLDER = "finn_python"
_VERSIONED = ("finn-plus", "qonnx")


def partition_key(partition: Path) -> str:
    """Hash of the partition file and the versions of the packages that execute it."""
    digest = hashlib.sha256(Path(partition).read_bytes())
    for dist in _VERSIONED:
        digest.update(f"\0{dist}={importlib.metadata.version(dist)}".encode())
    return digest.hexdigest()[:24]


def input_keys(inputs: np.ndarray) -> list[bytes]:
    """sha256 of each image's partition input (as float32, C order): the row key."""
    rows = np.ascontiguousarray(inputs, dtype=np.float32).reshape(len(inputs), -1)
    return [hashlib.sha256(row.tobytes()).digest() for row in rows]


class ReferenceCache:
    """The cached rows of one partition; :meth:`outputs` fills in what is missing."""

    def __init__(self, partition: Path, root: Path) -> None:
        self.path = Path(root) / FOLDER / f"{partition_key(partition)}.npz"
        self.rows: dict[bytes, np.ndarray] = self._load()
        self.hits = 0

    def _load(self) -> dict[bytes, np.ndarray]:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                keys, outputs = data["keys"], data["outputs"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return {}  # no file yet, or one a crash or a user spoiled: recompute
        if keys.ndim != 2 or keys.shape[1] != 32 or len(keys) != len(outputs):
            return {}
        return {bytes(k): row for k, row in zip(keys, outputs, strict=True)}

    def outputs(self, inputs: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Integer outputs of every image: cached rows, and ``compute(missing inputs)`` for the rest."""
        keys = input_keys(inputs)
        missing = [i for i, key in enumerate(keys) if key not in self.rows]
        self.hits = len(keys) - len(missing)
        if missing:
            fresh = compute(inputs[missing])
            self.rows.update({keys[i]: row for i, row in zip(missing, fresh, strict=True)})
            self._save()
        return np.stack([self.rows[key] for key in keys]).astype(np.int64)

    def _save(self) -> None:
        buffer = io.BytesIO()
        keys = np.frombuffer(b"".join(self.rows), dtype=np.uint8).reshape(len(self.rows), 32)
        np.savez(buffer, keys=keys, outputs=np.stack(list(self.rows.values())).astype(np.int64))
        atomic_write_bytes(self.path, buffer.getvalue())
