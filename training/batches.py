"""Batches from in-memory uint8 images, in an order fixed by (seed, epoch, rank) alone.

Because nothing about the order depends on what ran before, a resumed run replays exactly the batches
the interrupted run would have seen, and no sampler or generator state has to be saved.
``DistributedSampler`` provides the seeded per-epoch shuffle and its split over processes (one process
is the case ``num_replicas=1``); augmentation draws from a generator seeded from the same triple.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from agq.training.augment import augment
from agq.training.data import ImageSet
from agq.training.distributed import Cluster
from torch.utils.data.distributed import DistributedSampler

from agq.errors import AgqError


class TrainBatches:
    """One epoch's training batches for this process. ``batch_size`` is the global batch over processes."""

    def __init__(self, data: ImageSet, batch_size: int, dataset: str, augment_images: bool, seed: int,
                 cluster: Cluster) -> None:
        if batch_size % cluster.world:
            raise AgqError(f"config data.batch_size={batch_size}: must be divisible by the "
                           f"{cluster.world} training processes")
        self.images = torch.tensor(data.images)
        self.labels = torch.tensor(data.labels)
        self.local_batch = batch_size // cluster.world
        self.dataset, self.augment, self.seed, self.cluster = dataset, augment_images, seed, cluster
        # drop_last keeps every process at the same number of equally sized batches (DDP needs equal
        # step counts; BatchNorm cannot train on a batch of one).
        self.sampler = DistributedSampler(range(len(self.labels)), num_replicas=cluster.world,
                                          rank=cluster.rank, shuffle=True, seed=seed, drop_last=True)
        if len(self) == 0:
            raise AgqError(f"config data.batch_size={batch_size}: larger than the {len(self.labels)} "
                           "training images")

    def __len__(self) -> int:
        return self.sampler.num_samples // self.local_batch

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(float images 0..255 on the device, labels) for global epoch number ``epoch``."""
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        state = np.random.SeedSequence([self.seed, epoch, self.cluster.rank]).generate_state(2)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        for i in range(len(self)):
            index = order[i * self.local_batch:(i + 1) * self.local_batch]
            images = self.images[index]
            if self.augment:
                images = augment(images, self.dataset, generator)
            yield to_input(images, self.cluster.device), self.labels[index].to(self.cluster.device)


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The model's input: the raw pixel values 0..255 as floats, no normalisation."""
    return images.to(device).float()


def eval_batches(
    data: ImageSet, batch_size: int, cluster: Cluster
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This process's share of an evaluation set (every ``world``-th image), in fixed order."""
    images = torch.tensor(data.images[cluster.rank::cluster.world])
    labels = torch.tensor(data.labels[cluster.rank::cluster.world])
    for start in range(0, len(labels), batch_size):
        yield (to_input(images[start:start + batch_size], cluster.device),
               labels[start:start + batch_size].to(cluster.device))
