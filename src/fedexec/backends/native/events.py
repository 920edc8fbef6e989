"""The event stream: every node reports its task, actor and object transitions to
the head in batches; the head keeps them in bounded memory. A mixin of
:class:`~.node.NodeManager` (the head's store is :class:`EventLog`, pure state).

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
from typing import Any

from .placement_groups import pg_row
from .protocol import Op

__all__ = ["EventLog", "EventStream"]

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


class EventStream:
    """The node manager's side of the event stream (see the module docstring)."""

    def _init_events(self: Any) -> None:
        cfg = self.config
        self.events: list[list[Any]] = []
        self.events_dropped = 0
        self._objects_made = 0
        self._objects_freed = 0
        self._events_sent = 0.0
        self.event_log = EventLog(int(cfg.get("max_finished_tasks") or 10_000),
                                  int(cfg.get("max_dead_actors") or 1_000))

    def _event(self: Any, event: list[Any]) -> None:
        if len(self.events) >= _BUFFER_MAX:
            self.events_dropped += 1
            return
        self.events.append(event)
        if len(self.events) >= _FLUSH_AT:
            self._flush_events()

    def _event_task(self: Any, task: Any, failed: bool) -> None:
        """A task ended here (``_finish_task``)."""
        if task.actor_id is not None:
            actor = self.actors.get(task.actor_id)
            job = self._job_of([actor.spec.get("runtime_env")]) if actor is not None else ""
        else:
            job = self._job_of(task.payload)
        worker = self.workers.get(task.worker or "")  # (the core's worker id; None: none)
        pid = worker.pid if worker is not None else None
        self._event(["T", task.id, task.name, "FAILED" if failed else "FINISHED", job,
                     task.actor_id or "", pid, time.time()])

    def _event_actor(self: Any, actor: Any) -> None:
        """An actor changed state."""
        pid = actor.worker.pid if actor.worker is not None else None
        self._event(["A", actor.id, actor.spec.get("class_name"), actor.name or "",
                     actor.namespace, actor.state, self._job_of([actor.spec.get("runtime_env")]),
                     pid, actor.restarts_used, time.time()])

    def _event_pg(self: Any, pg: dict[str, Any], removed: bool = False) -> None:
        """A placement group asked of this node changed."""
        row = pg_row(pg)
        if removed:
            row["state"] = "REMOVED"
        row["time"] = time.time()
        self._event(["P", row])

    def _flush_events(self: Any, now: float | None = None) -> None:
        """Send the buffered events to the head (the head records its own)."""
        if self._objects_made or self._objects_freed:
            self.events.append(["O", self._objects_made, self._objects_freed])
            self._objects_made = self._objects_freed = 0
        self._events_sent = time.monotonic() if now is None else now
        if not self.events:
            return
        if self.is_head:
            self.event_log.record(self.node_id, self.events)
            self._persist_pgs(self.node_id, self.events)
            self.events = []
            return
        head = self.peers.get(self.head_id or "")
        if head is None or head.link is None:
            return  # kept (up to _BUFFER_MAX) until the head is back
        batch, self.events = self.events, []
        self._send(head.id, [Op.EVENTS, batch])

    def _tick_events(self: Any, now: float) -> None:
        if now - self._events_sent >= _FLUSH_S:
            self._flush_events(now)

    def _on_events(self: Any, conn: Any, msg: list[Any]) -> None:
        """(Head) a batch of events from a node."""
        node_id = getattr(conn, "node_id", None)
        if node_id is not None and self.is_head:
            self.event_log.record(node_id, msg[1])
            self._persist_pgs(node_id, msg[1])

    def _head_rows(self: Any, kind: str) -> list[dict[str, Any]]:
        """(Head) rows the event log adds to ``fedexec list`` (others: none)."""
        if not self.is_head:
            return []
        if kind == "tasks":
            self._flush_events()
            return self.event_log.task_rows()
        if kind == "actors":
            self._flush_events()
            return self.event_log.actor_rows()
        if kind == "placement_groups":
            self._flush_events()
            return self.event_log.pg_rows()
        if kind == "task_counts":
            self._flush_events()
            return self.event_log.count_rows()
        if kind == "node_events":
            return list(self.event_log.nodes)
        return []
