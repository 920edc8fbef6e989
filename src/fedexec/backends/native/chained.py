"""Leased tasks that take another leased task's result (a chain), the worker's side:
the results its leased tasks made, kept a while for the tasks sent behind them.

A driver sends a task whose ref arguments are results of its own leased tasks
straight to a leased worker too (leases.py, "Chains"): a result it has already is
sent with the task (the entry itself); one not come yet is named by its id, and
the task goes to the worker that makes it, behind the task making it. That worker
runs them in order, so when the task starts, the result it names was made here
moments ago: ``MadeHere`` has it, and no process hop is on the chain's path (the
hub would take each link to the node manager and back).

A result no longer kept (more than ``_MAX_KEPT`` entries or ``_MAX_BYTES`` of inline
data came since) is not an error: the task goes back to its driver
(LEASE_HANDBACK), which sends it through the node manager, by then knowing that
result (its LEASE_DONE went first on the same link).
"""

from __future__ import annotations

import collections
from typing import Any

from .protocol import Kind

__all__ = ["MadeHere"]

_MAX_KEPT = 4096  # result entries kept (a chain needs only the newest few)
_MAX_BYTES = 16 << 20  # of inline data kept


class MadeHere:
    """The newest result entries of the leased tasks this worker ran, by result id."""

    def __init__(self, max_kept: int = _MAX_KEPT, max_bytes: int = _MAX_BYTES) -> None:
        self._entries: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        self._bytes = 0
        self._max_kept = max_kept
        self._max_bytes = max_bytes

    def add(self, results: list[list[Any]]) -> None:
        """Keep ``results`` (entries ``[id, kind, ...]``), dropping the oldest past
        the limits."""
        entries = self._entries
        for r in results:
            old = entries.pop(r[0], None)
            if old is not None:
                self._bytes -= _size(old)
            entries[r[0]] = r
            self._bytes += _size(r)
        while entries and (len(entries) > self._max_kept or self._bytes > self._max_bytes):
            _, old = entries.popitem(last=False)
            self._bytes -= _size(old)

    def resolve(self, deps: list[Any]) -> list[list[Any]] | None:
        """The dep entries of a leased task: each is an entry sent with it, or the
        id of a result made here. None if one of those is no longer kept."""
        out = []
        for dep in deps:
            if isinstance(dep, str):
                entry = self._entries.get(dep)
                if entry is None:
                    return None
                dep = entry
            out.append(dep)
        return out

    def __len__(self) -> int:
        return len(self._entries)


def failed_dep(deps: list[list[Any]]) -> list[Any] | None:
    """The first dep entry that is an error (the task then fails with it unrun, as
    the node manager fails a task whose argument failed), or None."""
    for entry in deps:
        if entry[1] in (Kind.ERROR, Kind.FAILED):
            return entry
    return None


def _size(entry: list[Any]) -> int:
    if entry[1] == Kind.INLINE:
        return len(entry[2]) + sum(len(b) for b in entry[3]) + 64
    if entry[1] == Kind.ERROR:
        return len(entry[2]) + 64
    return 64
