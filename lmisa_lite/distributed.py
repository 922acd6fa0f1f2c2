"""Data-parallel training under ``torchrun``: the process group, wrapping networks, and sharing state.

A run launched without ``torchrun`` (``WORLD_SIZE`` unset or 1) is a plain single process and none of this
does anything. Under ``torchrun --nproc_per_node N`` each process trains on its own batches, gradients are
averaged by DistributedDataParallel (gloo on CPU, NCCL on CUDA) and rank 0 alone writes files.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import distributed as dist
from torch import nn


@dataclass
class ProcessGroup:
    """Process-group facts of this run: a plain single process unless launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created: bool = False  # init_distributed created the group, so the caller also destroys it

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, validates and reports."""
        return self.rank == 0


def init_distributed(device: torch.device) -> ProcessGroup:
    """Join (or create, from torchrun's environment) the process group; a single process needs none.

    Args:
        device: The training device; CUDA runs use NCCL, CPU runs gloo.

    Returns:
        The :class:`ProcessGroup` facts; ``created`` says whether this call created the group.
    """
    initialised = dist.is_available() and dist.is_initialized()
    if not initialised and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessGroup()
    created = False
    if not initialised:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), local_rank, created)


def wrap(module: nn.Module | None, group: ProcessGroup, device: torch.device) -> nn.Module | None:
    """``module`` in DistributedDataParallel when the group has several processes, else as it is."""
    if module is None or not group.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module | None) -> nn.Module | None:
    """The plain module inside a DistributedDataParallel wrapper (or ``module`` itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def mean_over_processes(values: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Average a tensor over the processes (in place); a single process returns it unchanged."""
    if group.enabled:
        dist.all_reduce(values)
        values /= group.world_size
    return values


def broadcast_buffers(modules: Iterable[nn.Module | None], group: ProcessGroup) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every process."""
    if not group.enabled:
        return
    for module in [m for m in modules if m is not None]:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)
