"""Running one study on several processes (``torchrun``), and on one.

Launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables), the runner joins a process group and takes its shard of the data:
global batch ``b`` belongs to rank ``b % world_size``. Every batch draws its randomness
from its own seed, so it yields the same numbers whichever rank runs it; at the end of each
model the reducers' states are gathered and merged on rank 0, which alone writes tables,
figures and the report.

Objects are exchanged with the gloo backend (CPU), also when the models run on GPUs: only
reducer states travel, once per model, so the transport does not matter for speed.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from robustlens.errors import ConfigError

__all__ = ["World", "join_world", "leave_world"]

_TIMEOUT_ENV = "ROBUSTLENS_DIST_TIMEOUT_S"


@dataclass(frozen=True)
class World:
    """This process' place among the study's workers (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def owns(self, batch_index: int) -> bool:
        """Whether global batch ``batch_index`` is this worker's."""
        return batch_index % self.size == self.rank

    def device(self, device: torch.device) -> torch.device:
        """Each worker on a GPU machine takes the GPU of its local rank."""
        if self.distributed and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank % max(torch.cuda.device_count(), 1))
        return device

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every worker's ``obj`` on rank 0 (in rank order); ``None`` on the other ranks."""
        if not self.distributed:
            return [obj]
        out: list[Any] | None = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every worker."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def join_world() -> World:
    """Join the ``torchrun`` process group if launched by it; else a world of one.

    The group's timeout (default 6 hours: rank 0 may train a model or draw the report while
    the others wait) is set by ``$ROBUSTLENS_DIST_TIMEOUT_S``.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        try:
            seconds = float(os.environ.get(_TIMEOUT_ENV, 6 * 3600))
        except ValueError:
            raise ConfigError(f"${_TIMEOUT_ENV} must be a number of seconds; received "
                              f"{os.environ[_TIMEOUT_ENV]!r}.") from None
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=seconds))
    return World(rank=rank, size=size, local_rank=local_rank)


def leave_world(world: World) -> None:
    """Leave the process group (after the last collective)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
