"""Cluster membership: which nodes exist, what they offer, which are alive. Pure
state, no I/O (the node manager does the messaging), so it is tested alone.

The head holds the authoritative table: nodes join (``join``), report every
``interval`` (``heartbeat``), and are declared dead once silent for ``timeout``
(``expire``). Every change bumps a version; ``changes_since(v)`` is what the head
sends each node per tick, so an idle cluster costs one small message per node
per tick, whatever its size. Other nodes keep a replica fed by ``apply(rows)``.

Row (the wire form)::

    [node_id, address, total, available, alive, queued, beat]

``beat`` numbers a node's reports (it counts up): a replica never takes a row older
than what it holds, which the node may also have told it directly (``report``: a
node tells the peers that forwarded it work what it has free once it took that
work in, so their view of it is never older than their own forwards).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["Membership", "NodeEntry"]


class NodeEntry:
    """One node as the cluster sees it."""

    __slots__ = ("address", "alive", "available", "beat", "last_seen", "node_id", "queued",
                 "total", "version")

    def __init__(self, node_id: str, address: str, total: dict[str, float]):
        self.node_id = node_id
        self.address = address
        self.total = dict(total)
        self.available = dict(total)
        self.alive = True
        self.queued = 0
        self.last_seen = 0.0
        self.version = 0
        self.beat = 0  # the number of the report ``available`` and ``queued`` come from

    def row(self) -> list[Any]:
        return [self.node_id, self.address, self.total, self.available, self.alive,
                self.queued, self.beat]


class Membership:
    """The node table (see the module docstring)."""

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        self.nodes: dict[str, NodeEntry] = {}
        self.version = 0
        # Bumped when what the cluster could ever run changes (a node joins, dies, or
        # its total changes), not when free resources do: keys "fits no node" caches.
        self.shape_version = 0
        self._totals: tuple[int, dict[str, float]] = (-1, {})  # (shape_version, sums)

    def _touch(self, entry: NodeEntry) -> None:
        self.version += 1
        entry.version = self.version

    def join(self, node_id: str, address: str, total: dict[str, float], now: float
             ) -> NodeEntry:
        """Add (or re-add, after a head restart or a reconnect) a node."""
        entry = self.nodes.get(node_id)
        if entry is None or not entry.alive:
            entry = NodeEntry(node_id, address, total)
            self.nodes[node_id] = entry
        else:
            entry.address, entry.total = address, dict(total)
        entry.last_seen = now
        self._touch(entry)
        self.shape_version += 1
        return entry

    def heartbeat(self, node_id: str, available: dict[str, float], queued: int,
                  now: float, total: dict[str, float] | None = None, beat: int = 0) -> bool:
        """Record a node's report (``total`` changes with placement groups; ``beat``
        its number); False if the node is unknown or already dead (it must join
        again)."""
        entry = self.nodes.get(node_id)
        if entry is None or not entry.alive:
            return False
        entry.last_seen = now
        if total is not None and total != entry.total:
            entry.total = dict(total)
            self.shape_version += 1
            self._touch(entry)
        self.report(node_id, beat, available, queued)
        return True

    def report(self, node_id: str, beat: int, available: dict[str, float], queued: int
               ) -> None:
        """What a node has free as of its report ``beat``; ignored when older than
        what this table holds (a beat of 0: unnumbered, always taken)."""
        entry = self.nodes.get(node_id)
        if entry is None or (beat and beat < entry.beat):
            return
        entry.beat = max(entry.beat, beat)
        if entry.available != available or entry.queued != queued:
            entry.available = dict(available)
            entry.queued = queued
            self._touch(entry)

    def expire(self, now: float, exempt: str | None = None) -> list[str]:
        """Declare dead every node silent for longer than ``timeout``; their ids."""
        dead = []
        for entry in self.nodes.values():
            if entry.alive and entry.node_id != exempt and now - entry.last_seen > self.timeout:
                self.mark_dead(entry.node_id)
                dead.append(entry.node_id)
        return dead

    def mark_dead(self, node_id: str) -> bool:
        """Mark a node dead; False if it was not alive."""
        entry = self.nodes.get(node_id)
        if entry is None or not entry.alive:
            return False
        entry.alive = False
        entry.available = dict.fromkeys(entry.total, 0.0)
        self._touch(entry)
        self.shape_version += 1
        return True

    def changes_since(self, version: int) -> list[list[Any]]:
        """Rows of the nodes changed after ``version``."""
        return [e.row() for e in self.nodes.values() if e.version > version]

    def apply(self, rows: Iterable[list[Any]]) -> list[str]:
        """Take rows from the head (a replica); the ids of nodes that died."""
        died = []
        for node_id, address, total, available, alive, queued, *beat in rows:
            entry = self.nodes.get(node_id)
            if entry is None:
                entry = self.nodes[node_id] = NodeEntry(node_id, address, total)
                self.shape_version += 1
            elif entry.alive and not alive:
                died.append(node_id)
            if entry.alive != bool(alive) or entry.total != total:
                self.shape_version += 1
            entry.address, entry.total, entry.alive = address, dict(total), bool(alive)
            if not beat or beat[0] >= entry.beat:  # never older than a direct report
                entry.available, entry.queued = dict(available), queued
                entry.beat = max(entry.beat, beat[0] if beat else 0)
            self._touch(entry)
        return died

    def alive(self) -> list[NodeEntry]:
        """The live nodes."""
        return [e for e in self.nodes.values() if e.alive]

    def is_alive(self, node_id: str) -> bool:
        entry = self.nodes.get(node_id)
        return entry is not None and entry.alive

    def _sum(self, field: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for e in self.alive():
            for k, v in getattr(e, field).items():
                out[k] = out.get(k, 0.0) + v
        return out

    def totals(self) -> dict[str, float]:
        """Resources summed over the live nodes (kept until ``shape_version`` moves:
        the node loop asks on every turn with work queued)."""
        version, sums = self._totals
        if version != self.shape_version:
            sums = self._sum("total")
            self._totals = (self.shape_version, sums)
        return dict(sums)

    def availability(self) -> dict[str, float]:
        """Free resources summed over the live nodes (as last reported)."""
        return self._sum("available")
