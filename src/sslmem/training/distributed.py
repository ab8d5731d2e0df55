"""Multi-process data parallelism (``torchrun``): process group, sharding, collectives.

``torchrun --nproc-per-node N`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment; :func:`distributed_context`
joins them into a process group (NCCL on CUDA, gloo on CPU) and tears it down afterwards if it
created it. Without those variables everything runs in one process and the collectives below are
no-ops.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from sslmem.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job.

    Attributes:
        rank: Global rank (0 in a single process).
        world_size: Number of processes.
        local_rank: Rank on this node (selects the GPU).

    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the only process that writes files and logs metrics."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    # RANK, WORLD_SIZE and LOCAL_RANK are set by the launcher (torchrun) for each process it
    # starts: they describe the process, they are not configuration, so no settings class
    # holds them (tests/test_env_reads.py allows this read).
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def context_from_env() -> DistContext:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (or the running process group).

    Raises:
        ConfigError: The variables are inconsistent.

    """
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        return DistContext(rank=rank, world_size=world, local_rank=_env_int("LOCAL_RANK", rank))
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(
            f"invalid distributed environment: RANK={rank}, WORLD_SIZE={world}",
            "launch multi-process training with torchrun, which sets both",
        )
    return DistContext(rank=rank, world_size=world, local_rank=_env_int("LOCAL_RANK", rank))


@contextlib.contextmanager
def distributed_context(device: torch.device) -> Iterator[DistContext]:
    """Join (or reuse) the process group for the duration of a training run.

    Args:
        device: The compute device; CUDA selects NCCL, anything else gloo.

    Yields:
        The process's :class:`DistContext`.

    """
    ctx = context_from_env()
    created = False
    if ctx.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            rank=ctx.rank,
            world_size=ctx.world_size,
            timeout=datetime.timedelta(minutes=30),
        )
        created = True
    try:
        yield ctx
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def resolve_rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """One GPU per process: a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` under DDP."""
    if device.type == "cuda" and ctx.enabled and device.index is None:
        device = torch.device("cuda", ctx.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def shard(indices: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's contiguous share of a global batch, like ``DistributedSampler`` per step.

    Args:
        indices: ``[B]`` with ``B`` divisible by the world size.
        ctx: This process's rank and the world size.

    Returns:
        ``[B / world_size]``.

    """
    if not ctx.enabled:
        return indices
    return indices.view(ctx.world_size, -1)[ctx.rank]


def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of ``value`` over ranks (a copy; identity in one process)."""
    if not ctx.enabled:
        return value
    out = value.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (batch-norm statistics, DINO centre) to every rank.

    DDP synchronises buffers at the start of each forward, so after the last step each rank
    holds its own statistics; this makes every rank's state identical to what rank 0 saves.
    """
    if not ctx.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in one process)."""
    if ctx.enabled:
        dist.barrier()
