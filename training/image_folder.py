"""Anyone's own images, read with Pillow: ``data.root`` holds ``train/`` and ``test/``, each with one
sub-folder per class (the ImageFolder layout torchvision made common, read here without torchvision).

Classes are the sub-folder names sorted, labels their positions; each class's images are its files with
an image suffix (any depth, hidden files skipped) in sorted path order, so a folder always loads in the
same order. Every image is converted to RGB (or one channel, ``data.grayscale``) and, with
``data.image_size`` N > 0, resized to N x N (Pillow's bilinear filter, which averages when it shrinks);
with 0 all images must already share one size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from agq.training.sources import ImageSet, Source
from PIL import Image

from agq.errors import AgqError

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})


def load_image_folder(root: Path, image_size: int, grayscale: bool) -> Source:
    """The ``train/`` and ``test/`` splits of an image folder and its class names."""
    folders = [root / split for split in ("train", "test")]
    for folder in folders:
        if not folder.is_dir():
            raise AgqError(f"data folder {folder} not found (imagefolder needs {root}/train/<class>/* "
                           f"and {root}/test/<class>/*)")
    classes = _classes(folders[0])
    if _classes(folders[1]) != classes:
        raise AgqError(f"data folder {root}: train/ and test/ hold different class folders")
    mode = "L" if grayscale else "RGB"
    train, test = (_read_split(folder, classes, image_size, mode) for folder in folders)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise AgqError(f"data folder {root}: train/ and test/ images have different sizes; "
                       "set data.image_size to resize them")
    return Source(train=train, test=test, classes=classes)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _classes(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p))
    if not classes:
        raise AgqError(f"data folder {folder} has no class folders")
    return classes


def _read_split(folder: Path, classes: list[str], image_size: int, mode: str) -> ImageSet:
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).rglob("*")
                       if p.suffix.lower() in SUFFIXES and _visible(p) and p.is_file())
        if not files:
            raise AgqError(f"data folder {folder / name} holds no images ({', '.join(sorted(SUFFIXES))})")
        images += [_decode(path, image_size, mode) for path in files]
        labels += [label] * len(files)
    shapes = {img.shape for img in images}
    if len(shapes) != 1:
        sizes = sorted(f"{w}x{h}" for h, w, _ in shapes)[:3]
        raise AgqError(f"data folder {folder}: images have different sizes ({', '.join(sizes)} ...); "
                       "set data.image_size to resize them")
    stacked = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
    return ImageSet(stacked, np.asarray(labels, dtype=np.int64))


def _decode(path: Path, image_size: int, mode: str) -> np.ndarray:
    """One image as uint8 (H, W, C)."""
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if image_size:
                img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError: OSError
        raise AgqError(f"image {path} cannot be read: {exc}") from None
    return pixels[:, :, None] if pixels.ndim == 2 else pixels
