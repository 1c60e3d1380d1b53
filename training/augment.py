"""Standard augmentation on uint8 batches with plain torch ops (torchvision is not needed).

Written by hand because torchvision's transforms work per image and draw from the global RNG; here a
whole batch is shifted in one indexing op and every random number comes from the caller's
``torch.Generator``, so that a seed (and a resumed run) fixes every augmented pixel.

* random shift: zero-pad by ``pad`` pixels, then crop back at a random offset per image
  (MNIST 2, digits 1, CIFAR 4, ImageFolder 1/8 of the side);
* horizontal flip with probability 1/2 for natural images (CIFAR, ImageFolder) only: digits are not
  mirror-symmetric.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

FLIP_DATASETS = frozenset({"cifar10", "cifar100", "imagefolder"})
PAD = {"mnist": 2, "digits": 1, "cifar10": 4, "cifar100": 4}


def shift_pad(dataset: str, size: int) -> int:
    """How many pixels an image may be shifted by."""
    return PAD.get(dataset, max(1, size // 8))


def augment(images: torch.Tensor, dataset: str, generator: torch.Generator) -> torch.Tensor:
    """Randomly shifted (and, for natural images, flipped) copy of a uint8 batch (B, C, H, W)."""
    batch, channels, height, width = images.shape
    pad = shift_pad(dataset, min(height, width))
    padded = nnf.pad(images, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, batch, 1), generator=generator)
    rows = (dy + torch.arange(height))[:, None, :, None]
    cols = (dx + torch.arange(width))[:, None, None, :]
    out = padded[torch.arange(batch)[:, None, None, None], torch.arange(channels)[None, :, None, None],
                 rows, cols]
    if dataset in FLIP_DATASETS:
        flip = torch.rand(batch, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out
