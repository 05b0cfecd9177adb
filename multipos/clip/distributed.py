r"""Data-parallel setup for the CLIP training stages: join ``torchrun``'s process group.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) everything runs in one process and nothing
is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "barrier", "init_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process (``world_size = 1`` without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the process that writes files and shows progress)."""
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group set up by ``torchrun`` (env ``WORLD_SIZE > 1``), else no-op.

    ``backend`` defaults to ``"nccl"`` when CUDA is available, else ``"gloo"``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in one process)."""
    if info.world_size > 1:
        dist.barrier()
