"""Task functions and actor classes the benchmarks run on every system.

They live at module level in a module of their own so that worker processes of
every system (fedexec, Ray, Dask, loky, the stdlib pool) can import them by name:
``run.py`` puts this directory on ``PYTHONPATH`` before any runtime starts.
Keep this module free of heavy imports (no numpy here): workers import it cold.
"""

from __future__ import annotations

from typing import Any


def noop() -> None:
    """A task that does nothing: measures pure per-task overhead."""
    return None


def link(x: int) -> int:
    """One link of a dependency chain: the previous link's value plus one."""
    return x + 1


def first_element(arr: Any) -> Any:
    """Touch a (large) array argument and return only its first element."""
    return arr[0]


class SyncActor:
    """An actor whose calls run one at a time on its worker."""

    def __init__(self) -> None:
        self.calls = 0

    def ping(self) -> int:
        self.calls += 1
        return self.calls


class AsyncActor:
    """An actor with an ``async def`` method (an async actor on fedexec and Ray)."""

    def __init__(self) -> None:
        self.calls = 0

    async def ping(self) -> int:
        self.calls += 1
        return self.calls
