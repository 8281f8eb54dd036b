"""Who am I in a multi-process launch (torchrun / accelerate / deepspeed), and a barrier.

The launchers all export RANK, WORLD_SIZE and LOCAL_RANK; nothing else is needed to
shard work.  A process group is created only when a barrier is asked for.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def local_device() -> torch.device:
    """This process's GPU (LOCAL_RANK) when CUDA is present, else the CPU.

    LOCAL_RANK wraps over the GPUs this process sees: launchers that narrow
    CUDA_VISIBLE_DEVICES to one GPU per rank (VLMEvalKit's run.py) leave it cuda:0.
    """
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def device_for(device: str | torch.device | None = None) -> torch.device:
    """`device` as given, checked here (a GPU this machine does not have is a ValueError saying so, not
    torch's driver error at the first tensor), or, for None, this process's own (`local_device`)."""
    if device is None:
        return local_device()
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r}: {err}; give cuda, cuda:N or cpu") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available here (no GPU driver, or a CPU-only "
                             "torch); use the CPU (cpu)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine shows {torch.cuda.device_count()} GPU(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return resolved


def shard(items: Sequence[T], rank_: int | None = None, world: int | None = None) -> list[T]:
    """This rank's share: every world-th item from position rank (disjoint, covering all)."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    if not 0 <= r < w:
        raise ValueError(f"rank {r} is outside a world of {w} processes")
    return list(items[r::w])


def barrier() -> None:
    """Wait for every rank (no-op in a single process); gloo, so it needs no GPU."""
    if world_size() == 1:
        return
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
