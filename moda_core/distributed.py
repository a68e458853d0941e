"""Multi-process training support: the process group under ``torchrun``, sharding, reductions.

Without ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) everything here is a no-op for a
single process, so the trainer and decomposition have one code path. Under ``torchrun`` the group
uses ``nccl`` when CUDA is available and ``gloo`` otherwise; every rank holds the whole data set on
its device and takes its own strided shard of each epoch's shared permutation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def context() -> Context:
    """The current process's place in the group; initialises the group on first use under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def device_for(requested: str, ctx: Context) -> str:
    """Under torchrun with CUDA, ``auto``/``cuda`` mean this rank's own GPU."""
    if ctx.active and requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ctx.local_rank}"
    return requested


def shard_batches(order: torch.Tensor, batch_size: int, ctx: Context) -> list[torch.Tensor]:
    """This rank's batches of one epoch.

    Rank r takes ``order[r::world]`` and splits it into the same number of nearly equal batches as
    every other rank (DDP needs equal step counts), each about ``batch_size / world`` samples, so a
    step's global batch matches a single process's. Across ranks every sample appears exactly once.
    """
    shard = order[ctx.rank::ctx.world_size]
    local_batch = max(1, batch_size // ctx.world_size)
    longest = -(-len(order) // ctx.world_size)
    steps = max(1, -(-longest // local_batch))
    steps = min(steps, len(order) // ctx.world_size or 1)  # no rank may get an empty batch
    return list(torch.tensor_split(shard, steps))


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op for one process); returns it."""
    if ctx.active:
        if tensor.device.type == "cpu" and dist.get_backend() == "nccl":
            moved = tensor.cuda()
            dist.all_reduce(moved)
            tensor.copy_(moved.cpu())
        else:
            dist.all_reduce(tensor)
    return tensor


def broadcast_object(obj: T, ctx: Context) -> T:
    """Rank 0's ``obj`` (picklable) on every rank; returns ``obj`` itself for one process."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()
