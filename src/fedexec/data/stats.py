"""Execution statistics: per operator, what ran and what it made.

The executor fills one :class:`OperatorStats` per physical operator as tasks
finish: task counts, output rows/bytes/blocks, and the wall and CPU time each
task measured *inside* itself (``BlockExecStats``), plus the operator's span in
the driver (first launch to last completion). ``DatasetStats.to_string()`` is
what ``Dataset.stats()`` returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .block import BlockMetadata

__all__ = ["DatasetStats", "OperatorStats"]


@dataclass
class OperatorStats:
    """What one operator did in a run."""

    name: str
    tasks: int = 0
    blocks: int = 0
    rows: int = 0
    bytes: int = 0
    task_wall_s: float = 0.0
    task_cpu_s: float = 0.0
    max_task_wall_s: float = 0.0
    actors: int = 0
    first_start: float | None = None
    last_end: float | None = None

    def task_started(self) -> None:
        """Note a launch (the operator's span starts at the first)."""
        if self.first_start is None:
            self.first_start = time.time()

    def task_finished(self, metas: list[BlockMetadata]) -> None:
        """Add a finished task and the metadata of the blocks it made."""
        self.tasks += 1
        self.last_end = time.time()
        for meta in metas:
            self.blocks += 1
            self.rows += meta.num_rows or 0
            self.bytes += meta.size_bytes or 0
        stats = next((m.exec_stats for m in metas if m.exec_stats is not None), None)
        if stats is not None:
            self.task_wall_s += stats.wall_s
            self.task_cpu_s += stats.cpu_s
            self.max_task_wall_s = max(self.max_task_wall_s, stats.wall_s)

    def outputs(self, metas: list[BlockMetadata]) -> None:
        """Count blocks an operator passed on without a task of its own."""
        for meta in metas:
            self.blocks += 1
            self.rows += meta.num_rows or 0
            self.bytes += meta.size_bytes or 0
        self.last_end = time.time()

    @property
    def wall_s(self) -> float:
        """Seconds from the operator's first launch to its last completion."""
        if self.first_start is None or self.last_end is None:
            return 0.0
        return max(0.0, self.last_end - self.first_start)


@dataclass
class DatasetStats:
    """The stats of one run of a dataset."""

    operators: list[OperatorStats] = field(default_factory=list)
    start: float = field(default_factory=time.time)
    end: float | None = None
    memory_budget: int = 0
    peak_memory_usage: int = 0
    backend: str = ""

    @property
    def wall_s(self) -> float:
        """The run's wall time (so far)."""
        return (self.end or time.time()) - self.start

    def to_string(self) -> str:
        """The human-readable report (see ``Dataset.stats()``)."""
        lines = []
        for i, op in enumerate(self.operators, 1):
            lines.append(f"Operator {i} {op.name}: {op.tasks} tasks executed, {op.blocks} "
                         f"blocks produced in {op.wall_s:.2f}s")
            if op.tasks:
                mean = op.task_wall_s / op.tasks
                lines.append(f"* Remote wall time: {mean:.3f}s mean, {op.max_task_wall_s:.3f}s "
                             f"max, {op.task_wall_s:.3f}s total")
                lines.append(f"* Remote cpu time: {op.task_cpu_s:.3f}s total")
            if op.actors:
                lines.append(f"* Actors: {op.actors}")
            lines.append(f"* Output rows: {op.rows}")
            lines.append(f"* Output size: {format_bytes(op.bytes)}")
            lines.append("")
        lines.append(f"Dataset run on {self.backend or '?'}: {self.wall_s:.2f}s wall time, "
                     f"peak memory use {format_bytes(self.peak_memory_usage)} of a "
                     f"{format_bytes(self.memory_budget)} budget")
        return "\n".join(lines)


def format_bytes(n: float) -> str:
    """``n`` bytes in B/KiB/MiB/GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - the loop always returns
