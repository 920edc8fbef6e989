"""How a map operator runs: as tasks (the default) or on a pool of actors.

``map_batches(fn, concurrency=...)``: a function runs as tasks (``concurrency``
caps how many run at once); a callable class runs on an :class:`ActorPoolStrategy`
pool (``concurrency=n``: n actors; ``(min, max)``: between min and max, scaled
by the length of the operator's input queue).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ActorPoolStrategy", "TaskPoolStrategy", "compute_for"]


@dataclass(frozen=True)
class TaskPoolStrategy:
    """Run as tasks; at most ``size`` at once (None: the context's cap)."""

    size: int | None = None


@dataclass(frozen=True)
class ActorPoolStrategy:
    """Run on ``min_size``..``max_size`` actors kept for the whole run.

    Raises:
        ValueError: sizes below 1 or ``min_size > max_size``.
    """

    min_size: int = 1
    max_size: int | None = None
    max_tasks_in_flight_per_actor: int | None = None

    def __post_init__(self) -> None:
        if self.min_size < 1 or (self.max_size is not None and self.max_size < self.min_size):
            raise ValueError(f"an actor pool needs 1 <= min_size <= max_size, got "
                             f"({self.min_size}, {self.max_size})")


def compute_for(fn: Any, concurrency: Any) -> TaskPoolStrategy | ActorPoolStrategy:
    """The strategy for ``map_batches(fn, concurrency=...)``.

    Raises:
        ValueError: a malformed ``concurrency``.
    """
    is_class = isinstance(fn, type)
    if concurrency is None:
        return ActorPoolStrategy(1, None) if is_class else TaskPoolStrategy()
    if isinstance(concurrency, tuple):
        if not is_class:
            raise ValueError("concurrency=(min, max) is for callable classes (an actor pool); "
                             "for a function pass an int")
        if len(concurrency) != 2 or not all(_positive(v) for v in concurrency):
            raise ValueError(f"concurrency must be an int >= 1 or (min, max), got {concurrency!r}")
        return ActorPoolStrategy(int(concurrency[0]), int(concurrency[1]))
    if not _positive(concurrency):
        raise ValueError(f"concurrency must be an int >= 1 or (min, max), got {concurrency!r}")
    n = int(concurrency)
    return ActorPoolStrategy(n, n) if is_class else TaskPoolStrategy(n)


def _positive(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1
