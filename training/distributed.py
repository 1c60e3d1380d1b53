"""One process or many: the same ``agq train`` runs alone or under ``torchrun`` (DistributedDataParallel).

torchrun announces itself through ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; without them the run is a single
process and nothing here touches ``torch.distributed``. The backend is NCCL on CUDA and gloo on CPU.
Only rank 0 writes files and shows progress bars (:attr:`Cluster.main`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from agq.errors import AgqError


@dataclass(frozen=True)
class Cluster:
    """This process's place among the training processes, and the device it computes on."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64, so counts stay exact)."""
        if self.world == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` itself alone; a DDP wrapper across processes.

        ``find_unused_parameters``: full-precision pre-training leaves every quantizer scale without a
        gradient, and SSP leaves the scales of the fragments it runs in full precision unused.
        """
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def share_buffers(self, module: nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm running statistics).

        DDP syncs gradients, and buffers only at the start of each forward: after the last training step
        every process holds the running statistics of its own last batch. Evaluation and the saved
        checkpoint must see one network, rank 0's.
        """
        if self.world > 1:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _device(requested: str, local_rank: int) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise AgqError("config train.device=cuda: no CUDA device is available (use auto or cpu)")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


@contextmanager
def cluster(requested_device: str) -> Iterator[Cluster]:
    """Join the process group torchrun set up (if any) for the duration of a run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = _device(requested_device, int(os.environ.get("LOCAL_RANK", "0")))
    if world == 1:
        yield Cluster(0, 1, device)
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    try:
        yield Cluster(rank, world, device)
    finally:
        dist.destroy_process_group()
