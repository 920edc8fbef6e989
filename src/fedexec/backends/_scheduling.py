"""Resource accounting and fair FIFO dispatch: a pure state machine, no I/O.

State::

    total      {resource: amount}            what the node offers
    used       {resource: amount}            held by running items (may exceed
                                              total briefly after a blocked task
                                              takes its resources back)
    retired    {resource: base or None}      offered no more, still held (a removed
                                              placement group's share): dropped when
                                              released, giving ``base`` back as well
    queues     {shape: deque[(seq, item)]}   waiting items, FIFO per resource shape

Events in: ``enqueue(item, demand)``, ``release(demand)``, ``remove(item)``,
``retire(resource, base)``.
Actions out: ``dispatch()`` returns the items to start now, their resources
already acquired. Across shapes the oldest head that fits goes first, so a
large demand at the head of one shape does not block smaller shapes.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Hashable, Mapping
from typing import Any

__all__ = ["ResourcePool", "Scheduler", "fits"]

_EPS = 1e-9


def fits(demand: Mapping[str, float], total: Mapping[str, float]) -> bool:
    """Does ``demand`` fit in ``total`` (a node's resources, or what is free)?"""
    return all(total.get(k, 0.0) + _EPS >= v for k, v in demand.items())


class ResourcePool:
    """Amounts of named resources: ``total`` offered and ``used`` now."""

    def __init__(self, total: Mapping[str, float]):
        self.total = {k: float(v) for k, v in total.items()}
        self.used: dict[str, float] = dict.fromkeys(self.total, 0.0)
        # Retired resources still held: {key: the resource it was carved out of, or None}.
        self.retired: dict[str, str | None] = {}

    def feasible(self, demand: Mapping[str, float]) -> bool:
        """Could ``demand`` ever fit, on an idle pool?"""
        return fits(demand, self.total)

    def fits(self, demand: Mapping[str, float]) -> bool:
        """Does ``demand`` fit now?"""
        total, used = self.total, self.used
        for k, v in demand.items():
            if total.get(k, 0.0) - used.get(k, 0.0) + _EPS < v:
                return False
        return True

    def acquire(self, demand: Mapping[str, float]) -> None:
        """Take ``demand`` (even past the total: used after a blocked task resumes)."""
        for k, v in demand.items():
            self.used[k] = self.used.get(k, 0.0) + v
        if self.retired:  # a blocked task of a removed group resuming: it holds base too
            for k, v in demand.items():
                base = self.retired.get(k)
                if base is not None:
                    self.used[base] = self.used.get(base, 0.0) + v

    def release(self, demand: Mapping[str, float]) -> None:
        """Give ``demand`` back."""
        for k, v in demand.items():
            self.used[k] = max(0.0, self.used.get(k, 0.0) - v)
        if self.retired:
            self._release_retired(demand)

    def retire(self, key: str, base: str | None = None) -> None:
        """Offer no more of ``key``; drop it once its holders have released it. With
        ``base`` (the resource ``key`` was carved out of, e.g. a placement group's
        ``CPU_group_G`` out of ``CPU``), what they release goes back to ``base`` too."""
        self.total[key] = 0.0
        if self.used.get(key, 0.0) > _EPS:
            self.retired[key] = base
        else:
            self.total.pop(key, None)
            self.used.pop(key, None)

    def unretire(self, key: str) -> None:
        """Offer ``key`` again (its holders keep it; ``base`` no longer backs them)."""
        if key in self.retired:
            base = self.retired.pop(key)
            if base is not None:
                self.used[base] = max(0.0, self.used.get(base, 0.0) - self.used.get(key, 0.0))

    def _release_retired(self, demand: Mapping[str, float]) -> None:
        for k, v in demand.items():
            if k in self.retired:
                base = self.retired[k]
                if base is not None:
                    self.used[base] = max(0.0, self.used.get(base, 0.0) - v)
                if self.used.get(k, 0.0) <= _EPS:
                    del self.retired[k]
                    self.total.pop(k, None)
                    self.used.pop(k, None)

    def available(self) -> dict[str, float]:
        """What is free now (never negative)."""
        return {k: max(0.0, t - self.used.get(k, 0.0)) for k, t in self.total.items()}


class Scheduler:
    """FIFO queues per resource shape over a :class:`ResourcePool`."""

    def __init__(self, pool: ResourcePool):
        self.pool = pool
        self._queues: dict[Hashable, deque[tuple[int, Any, dict[str, float]]]] = {}
        self._seq = itertools.count()
        self._where: dict[int, Hashable] = {}  # id(item) -> shape

    def __len__(self) -> int:
        return len(self._where)

    def enqueue(self, item: Any, demand: Mapping[str, float]) -> None:
        """Queue ``item`` until ``demand`` fits."""
        shape = frozenset(demand.items())
        self._queues.setdefault(shape, deque()).append((next(self._seq), item, dict(demand)))
        self._where[id(item)] = shape

    def remove(self, item: Any) -> bool:
        """Take ``item`` out of its queue; False if it is not queued."""
        shape = self._where.pop(id(item), None)
        if shape is None:
            return False
        q = self._queues[shape]
        for entry in q:
            if entry[1] is item:
                q.remove(entry)
                break
        if not q:
            del self._queues[shape]
        return True

    def dispatch(self, limit: int | None = None) -> list[tuple[Any, dict[str, float]]]:
        """Acquire resources for, dequeue and return the items that can start now
        (at most ``limit``), oldest first."""
        started: list[tuple[Any, dict[str, float]]] = []
        while self._queues and (limit is None or len(started) < limit):
            best = None
            for shape, q in self._queues.items():
                seq, _, demand = q[0]
                if (best is None or seq < best[0]) and self.pool.fits(demand):
                    best = (seq, shape)
            if best is None:
                break
            q = self._queues[best[1]]
            _, item, demand = q.popleft()
            if not q:
                del self._queues[best[1]]
            del self._where[id(item)]
            self.pool.acquire(demand)
            started.append((item, demand))
        return started

    def fits_any(self) -> bool:
        """Would some queued item fit now?"""
        return any(self.pool.fits(q[0][2]) for q in self._queues.values())

    def count(self, shape: Hashable) -> int:
        """How many items of resource ``shape`` (a frozenset of demand items) wait."""
        q = self._queues.get(shape)
        return len(q) if q else 0

    def older_waits(self, shape: Hashable) -> bool:
        """Has an item of another shape waited longer than ``shape``'s oldest?"""
        q = self._queues.get(shape)
        if not q:
            return False
        head = q[0][0]
        return any(other[0][0] < head for s, other in self._queues.items() if s != shape)

    def take(self, shape: Hashable, n: int) -> list[Any]:
        """Dequeue up to ``n`` items of ``shape`` *without* acquiring resources (they
        run on a lease that already holds them)."""
        q = self._queues.get(shape)
        out: list[Any] = []
        while q and len(out) < n:
            _, item, _ = q.popleft()
            del self._where[id(item)]
            out.append(item)
        if q is not None and not q:
            del self._queues[shape]
        return out

    def by_shape(self) -> list[tuple[dict[str, float], list[Any]]]:
        """(demand, queued items oldest first) per resource shape: no global sort."""
        return [(q[0][2], [item for _, item, _ in q]) for q in self._queues.values() if q]

    def items(self) -> list[Any]:
        """Every queued item, oldest first."""
        entries = [e for q in self._queues.values() for e in q]
        return [item for _, item, _ in sorted(entries, key=lambda e: e[0])]
