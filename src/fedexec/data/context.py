"""``DataContext``: the settings of ``fedexec.data`` for this process.

One mutable instance per process (``DataContext.get_current()``), read when a
dataset *runs*, not when it is built: each run takes a frozen copy
(``DataContext.snapshot()``), so changing a setting during a run affects only the
next one. Nothing here is read at import time.

Which executor a run uses (``resolve_executor``): inside a task or actor, the
runtime running it (so a dataset built in a driver and consumed in a task uses
that task's runtime); else ``DataContext.executor`` when set; else
``fedexec.current_executor()`` (the default executor, created on first use).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import fedexec
from fedexec.util import inside_task

__all__ = ["DataContext"]

MiB = 1024 * 1024


@dataclass
class DataContext:
    """Settings of ``fedexec.data`` (as ``ray.data.DataContext``).

    Attributes:
        executor: the executor datasets of this process run on outside tasks;
            None (the default) uses ``fedexec.current_executor()``. Inside a task,
            the task's runtime is always used.
        target_max_block_size: a read task whose estimated output exceeds this
            many bytes returns several blocks of about this size.
        memory_budget_bytes: the bytes of blocks a run may hold produced but not
            yet consumed (None: ``memory_budget_fraction`` of the cluster's
            ``object_store_memory``, else of its ``memory``).
        memory_budget_fraction: see ``memory_budget_bytes``.
        max_tasks_in_flight_per_operator: tasks one operator may have running
            (None: twice the cluster's CPUs, at least 2).
        max_tasks_in_flight_per_actor: calls one actor of an actor pool may have
            queued or running.
        stall_timeout_s: a run in which no task finished and nothing was
            consumed for this long raises ``DataStallError`` naming what waits.
        enable_progress_bars: show one bar per running operator when stderr is
            a terminal.
        default_batch_size: ``map_batches``' ``batch_size`` when not given.
        read_parallelism: default number of read tasks (-1: automatic: twice the
            CPUs, more when the data exceeds ``target_max_block_size`` per task).
    """

    executor: fedexec.Executor | None = None
    target_max_block_size: int = 128 * MiB
    memory_budget_bytes: int | None = None
    memory_budget_fraction: float = 0.5
    max_tasks_in_flight_per_operator: int | None = None
    max_tasks_in_flight_per_actor: int = 2
    stall_timeout_s: float = 600.0
    enable_progress_bars: bool = True
    default_batch_size: int = 4096
    read_parallelism: int = -1
    #: Lends actor-pool actors across runs (``DatasetPipeline``; see ``actor_pool.py``).
    _actor_lender: Any = None

    _current: ClassVar[DataContext | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get_current(cls) -> DataContext:
        """The process's context (created with the defaults on first use)."""
        with cls._lock:
            if cls._current is None:
                cls._current = cls()
            return cls._current

    @classmethod
    def _set_current(cls, context: DataContext | None) -> None:
        """Replace the process's context (None: back to the defaults)."""
        with cls._lock:
            cls._current = context

    def snapshot(self) -> DataContext:
        """A copy of these settings for one run (the executor is shared, not copied)."""
        snap = copy.copy(self)
        return snap

    def resolve_executor(self) -> fedexec.Executor:
        """The executor a run started now uses (see the module docstring)."""
        if not inside_task() and self.executor is not None:
            return self.executor
        return fedexec.current_executor()

    def memory_budget(self, resources: dict[str, Any]) -> int:
        """The run's memory budget in bytes for a cluster with ``resources``."""
        if self.memory_budget_bytes is not None:
            return int(self.memory_budget_bytes)
        total = resources.get("object_store_memory") or resources.get("memory") or 2 << 30
        return max(1, int(float(total) * self.memory_budget_fraction))

    def tasks_in_flight_cap(self, resources: dict[str, Any]) -> int:
        """How many tasks one operator may have running at once."""
        if self.max_tasks_in_flight_per_operator is not None:
            return max(1, int(self.max_tasks_in_flight_per_operator))
        return max(2, 2 * int(resources.get("CPU", 1) or 1))

    def default_parallelism(self, resources: dict[str, Any],
                            estimated_bytes: int | None = None) -> int:
        """The number of read tasks when the user asked for -1."""
        if self.read_parallelism > 0:
            return self.read_parallelism
        n = max(2, 2 * int(resources.get("CPU", 1) or 1))
        if estimated_bytes:
            n = max(n, -(-estimated_bytes // self.target_max_block_size))
        return n
