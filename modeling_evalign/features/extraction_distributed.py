"""Which shards of windows this process encodes, and the barriers between processes.

Multi-process extraction (``accelerate launch ... dataset_scripts/extract_features.py``): every rank lists
the shards still missing on disk, takes every ``num_processes``-th of them (round robin over the MISSING
shards, so a resumed run stays balanced), and writes its shards into the shared shard folder; rank 0
merges once all are written. Shards are fixed ranges of windows encoded in fixed batches, so the merged
files do not depend on the number of processes. Processes talk only through barriers (no gathers):
nothing but the files leaves a rank.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

DEFAULT_TIMEOUT_S = 7200  # a barrier waits while other ranks finish their last shard / rank 0 merges


def _no_barrier() -> None:
    return None


@dataclass
class ExtractionProcess:
    """This process's place among the extraction processes (default: the only one)."""

    process_index: int = 0
    num_processes: int = 1
    barrier: Callable[[], None] = field(default=_no_barrier, repr=False)
    device: torch.device | None = None

    def __post_init__(self):
        if not 0 <= self.process_index < self.num_processes:
            raise ValueError(
                f"process_index must be in [0, {self.num_processes}), got {self.process_index}"
            )

    @property
    def is_main(self) -> bool:
        return self.process_index == 0

    def take(self, pending: Sequence[int]) -> list[int]:
        """This rank's share of the pending shard numbers (``pending`` sorted, identical on every rank)."""
        return list(pending[self.process_index :: self.num_processes])


def accelerate_process(cpu: bool | None = None, timeout_s: int = DEFAULT_TIMEOUT_S) -> ExtractionProcess:
    """The process under ``accelerate launch`` (one process when run with plain ``python``).

    ``cpu=None``: CPU when ``ACCELERATE_USE_CPU`` is set or no CUDA device exists (gloo between CPU
    processes; ``accelerate launch --cpu --num_processes 2`` runs ONE process, use ``--multi_gpu`` with
    ``ACCELERATE_USE_CPU=1``).
    """
    from datetime import timedelta

    from accelerate import PartialState

    if cpu is None:
        flag = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        cpu = flag or not torch.cuda.is_available()
    state = PartialState(cpu=cpu, timeout=timedelta(seconds=timeout_s))
    return ExtractionProcess(
        process_index=state.process_index,
        num_processes=state.num_processes,
        barrier=state.wait_for_everyone,
        device=state.device,
    )
