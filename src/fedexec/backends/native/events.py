"""The event stream: every node reports its task, actor and object transitions to
the head in batches; the head keeps them in bounded memory. :class:`EventStream` is
a component of :class:`~.node.NodeManager` (the node's buffer and the head's side);
the head's store is :class:`EventLog`, pure state.

Batches, never a message per event: a node buffers events and sends them (EVENTS)
every ``_FLUSH_S`` seconds, or at once when ``_FLUSH_AT`` are waiting. Events::

    ["T", task_id, name, state, job_id, actor_id, worker_pid, end_time]  a task ended
          (state FINISHED or FAILED), reported by the node that ran it (or failed it)
    ["A", actor_id, class, name, namespace, state, job_id, pid, restarts, time]
    ["O", created, freed]    objects completed and freed on the node since the last batch
    ["P", row]               a placement group asked of the node changed (its list row,
          state PENDING, CREATED or REMOVED)

The head keeps the last ``max_finished_tasks`` finished tasks in detail (older ones
are evicted) and counts every finished task by (name, state), evicted or not; the
latest state of every actor (dead ones past ``max_dead_actors`` evicted) and every
placement group (removed ones past ``max_dead_actors`` evicted); object
totals per node; and the last ``_NODE_EVENTS`` node transitions (join, death).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .placement_groups import pg_row
from .protocol import Op

if TYPE_CHECKING:
    from .persistence import HeadPersistence

__all__ = ["EventLog", "EventStream", "EventsNode"]

_FLUSH_S = 0.5     # seconds a node's events wait at most before they go to the head
_FLUSH_AT = 1000   # events that make a batch go at once
_BUFFER_MAX = 100_000  # events a node keeps while the head is unreachable (then drops)
_NODE_EVENTS = 1000
_MAX_NAMES = 10_000    # distinct (name, state) counts; more are counted as "(other)"

_TASK_FIELDS = ("task_id", "name", "state", "job_id", "actor_id", "worker_pid", "end_time",
                "node_id")
_ACTOR_FIELDS = ("actor_id", "class", "name", "namespace", "state", "job_id", "pid",
                 "restarts", "time", "node_id")


class EventLog:
    """What the head keeps of the event stream (see the module docstring)."""

    def __init__(self, max_finished_tasks: int = 10_000, max_dead_actors: int = 1_000):
        self.max_tasks = max(0, int(max_finished_tasks))
        self.max_dead_actors = max(0, int(max_dead_actors))
        self.tasks: collections.OrderedDict[str, tuple[Any, ...]] = collections.OrderedDict()
        self.counts: dict[tuple[str, str], int] = {}
        self.evicted = 0
        self.actors: dict[str, tuple[Any, ...]] = {}
        self.dead_actors: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.objects: dict[str, list[int]] = {}
        self.pgs: dict[str, dict[str, Any]] = {}
        self.removed_pgs: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.nodes: collections.deque[dict[str, Any]] = collections.deque(maxlen=_NODE_EVENTS)

    def _count(self, name: str, state: str, by: int) -> None:
        key = (name, state)
        if key not in self.counts and len(self.counts) >= _MAX_NAMES:
            key = ("(other)", state)
        self.counts[key] = self.counts.get(key, 0) + by

    def record(self, node_id: str, events: list[list[Any]]) -> None:
        """Take a batch of events from ``node_id``."""
        for ev in events:
            tag = ev[0]
            if tag == "T":
                row = (*ev[1:8], node_id)
                old = self.tasks.pop(row[0], None)
                if old is not None:  # reported again (a retry, or by its origin too)
                    self._count(old[1], old[2], -1)
                self._count(row[1], row[2], 1)
                self.tasks[row[0]] = row
                while len(self.tasks) > self.max_tasks:
                    self.tasks.popitem(last=False)
                    self.evicted += 1
            elif tag == "A":
                row = (*ev[1:10], node_id)
                self.actors[row[0]] = row
                if row[4] == "DEAD":
                    self.dead_actors[row[0]] = None
                    while len(self.dead_actors) > self.max_dead_actors:
                        gone, _ = self.dead_actors.popitem(last=False)
                        self.actors.pop(gone, None)
            elif tag == "P":
                self._record_pg({**ev[1], "node_id": node_id})
            elif tag == "O":
                totals = self.objects.setdefault(node_id, [0, 0])
                totals[0] += int(ev[1])
                totals[1] += int(ev[2])

    def _record_pg(self, row: dict[str, Any]) -> None:
        pg_id = row["placement_group_id"]
        self.pgs[pg_id] = row
        if row["state"] == "REMOVED":
            self.removed_pgs[pg_id] = None
            while len(self.removed_pgs) > self.max_dead_actors:
                gone, _ = self.removed_pgs.popitem(last=False)
                self.pgs.pop(gone, None)

    def node_event(self, node_id: str, state: str, why: str = "") -> None:
        """A node joined (ALIVE) or died (DEAD: its actors are dead too)."""
        self.nodes.append({"node_id": node_id, "state": state, "why": why,
                           "time": time.time()})
        if state != "DEAD":
            return
        for row in list(self.actors.values()):
            if row[-1] == node_id and row[4] != "DEAD":
                self.record(node_id, [["A", *row[:4], "DEAD", *row[5:-1]]])
        for pg in list(self.pgs.values()):  # the groups it was asked for are gone
            if pg["node_id"] == node_id and pg["state"] != "REMOVED":
                self._record_pg({**pg, "state": "REMOVED", "time": time.time()})

    def task_rows(self) -> list[dict[str, Any]]:
        """The finished tasks kept in detail, oldest first."""
        return [dict(zip(_TASK_FIELDS, row, strict=True)) for row in self.tasks.values()]

    def actor_rows(self) -> list[dict[str, Any]]:
        return [dict(zip(_ACTOR_FIELDS, row, strict=True)) for row in self.actors.values()]

    def pg_rows(self) -> list[dict[str, Any]]:
        return list(self.pgs.values())

    def count_rows(self) -> list[dict[str, Any]]:
        """Every finished task counted by name and state (evicted ones included)."""
        return [{"name": name, "state": state, "count": n}
                for (name, state), n in self.counts.items() if n > 0]


class EventsNode(Protocol):
    """What :class:`EventStream` uses of its node manager."""

    @property
    def node_id(self) -> str: ...
    @property
    def config(self) -> Mapping[str, Any]: ...
    @property
    def actors(self) -> Mapping[str, Any]: ...
    @property
    def workers(self) -> Mapping[str, Any]: ...
    @property
    def peers(self) -> Mapping[str, Any]: ...
    @property
    def is_head(self) -> bool: ...
    @property
    def head_id(self) -> str | None: ...
    @property
    def persistence(self) -> HeadPersistence: ...

    def _send(self, cid: int, msg: list[Any]) -> None: ...
    def _job_of(self, payload: Any) -> str: ...


class EventStream:
    """The node manager's side of the event stream (see the module docstring):
    ``buffer`` holds this node's events until they go to the head; ``log`` is what
    the head keeps (every node has one; only the head's fills)."""

    def __init__(self, node: EventsNode) -> None:
        cfg = node.config
        self.node = node
        self.buffer: list[list[Any]] = []
        self.dropped = 0
        self._objects_made = 0
        self._objects_freed = 0
        self._sent_at = 0.0
        self.log = EventLog(int(cfg.get("max_finished_tasks") or 10_000),
                            int(cfg.get("max_dead_actors") or 1_000))

    def _add(self, event: list[Any]) -> None:
        if len(self.buffer) >= _BUFFER_MAX:
            self.dropped += 1
            return
        self.buffer.append(event)
        if len(self.buffer) >= _FLUSH_AT:
            self.flush()

    def object_made(self) -> None:
        self._objects_made += 1

    def object_freed(self) -> None:
        self._objects_freed += 1

    def task_ended(self, task: Any, failed: bool) -> None:
        """A task ended here (the node's ``_finish_task``)."""
        node = self.node
        if task.actor_id is not None:
            actor = node.actors.get(task.actor_id)
            job = node._job_of([actor.spec.get("runtime_env")]) if actor is not None else ""
        else:
            job = node._job_of(task.payload)
        worker = node.workers.get(task.worker or "")  # (the core's worker id; None: none)
        self.task_row(task.id, task.name, failed, job, task.actor_id or "",
                      worker.pid if worker is not None else None)

    def task_row(self, task_id: str, name: str, failed: bool, job: str, actor_id: str,
                 pid: int | None) -> None:
        """A task ended here: its row for the head's log (a leased one's too, as its
        worker said: ``LeaseDesk.on_ended``)."""
        self._add(["T", task_id, name, "FAILED" if failed else "FINISHED", job, actor_id,
                   pid, time.time()])

    def actor_changed(self, actor: Any) -> None:
        """An actor changed state."""
        pid = actor.worker.pid if actor.worker is not None else None
        self._add(["A", actor.id, actor.spec.get("class_name"), actor.name or "",
                   actor.namespace, actor.state,
                   self.node._job_of([actor.spec.get("runtime_env")]),
                   pid, actor.restarts_used, time.time()])

    def pg_changed(self, pg: dict[str, Any], removed: bool = False) -> None:
        """A placement group asked of this node changed."""
        row = pg_row(pg)
        if removed:
            row["state"] = "REMOVED"
        row["time"] = time.time()
        self._add(["P", row])

    def flush(self, now: float | None = None) -> None:
        """Send the buffered events to the head (the head records its own)."""
        node = self.node
        if self._objects_made or self._objects_freed:
            self.buffer.append(["O", self._objects_made, self._objects_freed])
            self._objects_made = self._objects_freed = 0
        self._sent_at = time.monotonic() if now is None else now
        if not self.buffer:
            return
        if node.is_head:
            self._record(node.node_id, self.buffer)
            self.buffer = []
            return
        head = node.peers.get(node.head_id or "")
        if head is None or head.link is None:
            return  # kept (up to _BUFFER_MAX) until the head is back
        batch, self.buffer = self.buffer, []
        node._send(head.id, [Op.EVENTS, batch])

    def tick(self, now: float) -> None:
        """Called every turn of the node's loop: flush every ``_FLUSH_S``."""
        if now - self._sent_at >= _FLUSH_S:
            self.flush(now)

    def _record(self, node_id: str, events: list[list[Any]]) -> None:
        self.log.record(node_id, events)
        self.node.persistence.pgs_changed(node_id, events)

    def _on_events(self, conn: Any, msg: list[Any]) -> None:
        """(Head) a batch of events from a node."""
        node_id = getattr(conn, "node_id", None)
        if node_id is not None and self.node.is_head:
            self._record(node_id, msg[1])

    def handlers(self) -> dict[int, Callable[[Any, list[Any]], None]]:
        """Its message handlers, by op (the node's dispatch table takes them)."""
        return {Op.EVENTS: self._on_events}

    def head_rows(self, kind: str) -> list[dict[str, Any]]:
        """(Head) rows the event log adds to ``fedexec list`` (others: none)."""
        if not self.node.is_head:
            return []
        if kind == "node_events":
            return list(self.log.nodes)
        rows = {"tasks": self.log.task_rows, "actors": self.log.actor_rows,
                "placement_groups": self.log.pg_rows, "task_counts": self.log.count_rows}
        if kind not in rows:
            return []
        self.flush()
        return rows[kind]()
