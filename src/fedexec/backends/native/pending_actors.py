"""Actors waiting for a node: made where no live node can host them yet, they wait
here (the node their creator asked, usually the head) instead of being refused.
A component the node manager owns (``NodeManager.pending``, a
:class:`PendingActorsHost`, driven through :class:`PendingNode`, what it uses of the
node: the objects' pins, its tasks, making an actor here or on a peer); its
bookkeeping is :class:`PendingActors`, pure state, tested alone.

An actor *pends* when its creation shape fits no live node but the client found
that something will make one: an autoscaler node type fits it (the client asked,
see ``client._feasible``, which decides per node, never on the cluster's summed
totals: ``spec["await_node"] == "node"``), or it runs in a placement group not
placed yet (``"group"``). An actor whose node died, with a restart left
(``max_restarts``), that no live node fits pends again on the node that placed
it when a node type the autoscaler may launch fits it (``_restart_pending``);
else it is dead for good, and its later calls raise ActorDiedError saying why.
What the autoscaler may launch a node knows from the monitor's last round
(``AUTOSCALER_REPORT``, sent to every node; stale after its ``ttl``: no
autoscaler). Then::

    CREATE_ACTOR ──▶ pending entry (its arguments pinned, its name taken at the head,
                     the handle names this node)      ──▶ STATS "pending_actors"
    ACTOR_CALL   ──▶ queued on the entry, in order          (the autoscaler launches
    a node joins / a node's total changes (Membership.shape_version moves)
                 ──▶ placed: created on that node (or here), its queued calls
                     forwarded after it, in order; the entry goes
    KILL_ACTOR, or its placement group removed
                 ──▶ the entry goes, its calls fail with ActorDiedError

Across a head restart the actors pending on other nodes stay there (still
demand); those nodes register the named and restartable ones at the head again
when they rejoin. Those pending on the head itself die with it, as its live
actors do (their creation arguments, pinned in its store, and their callers'
connections are gone).

Entry rows (STATS ``pending_actors``, ``fedexec status``)::

    {"actor_id", "class_name", "name", "shape", "waits_for": "node"|"group",
     "reason", "calls", "since"}
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .._scheduling import fits
from .actor_directory import ActorLocator, tracked
from .membership import Membership
from .protocol import Call, ErrorKind

__all__ = ["PendingActor", "PendingActors", "PendingActorsHost", "PendingNode", "largest"]


def largest(demand: Mapping[str, float],
            totals: list[dict[str, float]]) -> dict[str, float] | None:
    """Of the nodes' ``totals``, the one closest to holding ``demand`` (for an error
    that says how far off it is); None when there are none."""
    def cover(total: Mapping[str, float]) -> tuple[float, float]:
        part = sum(min(total.get(k, 0.0) / v, 1.0) for k, v in demand.items() if v > 0)
        return part, total.get("CPU", 0.0)

    return max(totals, key=cover, default=None)


def _shape(demand: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(demand.items())) + "}"


class PendingActor:
    """One actor waiting for a node (see the module docstring). ``calls`` are the
    node's call tasks, queued in arrival order."""

    __slots__ = ("actor_id", "calls", "contained", "deps", "owner", "payload", "restarts",
                 "since", "spec")

    def __init__(self, actor_id: str, spec: dict[str, Any], payload: Any, deps: list[str],
                 contained: list[str], owner: int | None, since: float):
        self.actor_id = actor_id
        self.spec = spec
        self.payload = payload
        self.deps = deps
        self.contained = contained
        self.owner = owner
        self.since = since
        self.restarts = 0  # restarts used before it pended (its node died)
        self.calls: collections.deque[Any] = collections.deque()

    @property
    def shape(self) -> dict[str, float]:
        return dict(self.spec["demand_create"])

    @property
    def waits_for(self) -> str:
        """"group" (its placement group is not placed yet) or "node" (one to be
        launched)."""
        return "group" if self.spec.get("await_node") == "group" else "node"

    def reason(self) -> str:
        what = f"actor {self.spec.get('class_name')!r} ({self.actor_id})"
        if self.waits_for == "group":
            return (f"{what} waits for its placement group to be placed: it asks for "
                    f"{_shape(self.shape)}, which no node has yet")
        return (f"{what} waits for a node to be launched: it asks for {_shape(self.shape)}, "
                "which no live node has, but an autoscaler node type does")

    def row(self) -> dict[str, Any]:
        return {"actor_id": self.actor_id, "class_name": self.spec.get("class_name"),
                "name": self.spec.get("name"), "shape": self.shape,
                "waits_for": self.waits_for, "reason": self.reason(),
                "calls": len(self.calls), "since": self.since}


class PendingActors:
    """The pending actors of a node, in creation order, and the cluster shape
    version (``Membership.shape_version``) they were last tried against: they are
    tried again only when it moved (a node joined, died or changed its total)."""

    #: how many deaths :meth:`died` remembers (the oldest are forgotten first)
    DEATHS_KEPT = 1024

    def __init__(self) -> None:
        self.entries: dict[str, PendingActor] = {}
        self.tried_version: int | None = None
        self.deaths: collections.OrderedDict[str, str] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, actor_id: object) -> bool:
        return actor_id in self.entries

    def add(self, entry: PendingActor, shape_version: int) -> None:
        """A new pending actor; it was just found to fit no node at ``shape_version``."""
        self.entries[entry.actor_id] = entry
        if self.tried_version is None:
            self.tried_version = shape_version

    def pop(self, actor_id: str) -> PendingActor | None:
        return self.entries.pop(actor_id, None)

    def due(self, shape_version: int) -> list[PendingActor]:
        """The actors to try placing again: all of them, oldest first, once per
        ``shape_version`` that differs from the one last tried; else none."""
        if not self.entries or shape_version == self.tried_version:
            return []
        self.tried_version = shape_version
        return list(self.entries.values())

    def demand(self) -> list[dict[str, float]]:
        """The shapes a node must be launched for (one per actor; not those waiting
        for their placement group: the group is the demand)."""
        return [e.shape for e in self.entries.values() if e.waits_for == "node"]

    def rows(self) -> list[dict[str, Any]]:
        return [e.row() for e in self.entries.values()]

    def died(self, actor_id: str, why: str) -> None:
        """Remember why an actor no node could host (any more) is dead, for the calls
        that reach it later."""
        self.deaths[actor_id] = why
        while len(self.deaths) > self.DEATHS_KEPT:
            self.deaths.popitem(last=False)

    def death(self, actor_id: str) -> str:
        """Why ``actor_id`` is dead, as :meth:`died` recorded it, else "it does not
        exist"."""
        return self.deaths.get(actor_id, "it does not exist")


class _Owner:
    """Stands for an actor's creator that is no longer connected (only its id is
    kept with the actor)."""

    __slots__ = ("id",)

    def __init__(self, cid: int | None):
        self.id = cid


class RemotePlacing(Protocol):
    """Placing on another node (the federation's side)."""

    def best_remote(self, demand: dict[str, float], need_room: bool) -> Any: ...
    def create_remote_actor(self, peer: Any, conn: Any, actor_id: str, spec: dict[str, Any],
                            payload: Any, deps: list[str], contained: list[str]) -> Any: ...
    def forward_call(self, task: Any, peer: Any) -> None: ...


class ActorMaking(Protocol):
    """Making an actor once it fits, and queueing its calls (``actors.ActorTable``)."""

    def create(self, conn: Any, actor_id: str, spec: dict[str, Any], payload: Any,
               deps: list[str], contained: list[str], restart: bool = False) -> Any: ...
    def make(self, conn: Any, actor_id: str, spec: dict[str, Any], payload: Any,
             deps: list[str], contained: list[str]) -> Any: ...
    def queue_call(self, task: Any) -> str | None: ...


class PendingNode(Protocol):
    """What :class:`PendingActorsHost` uses of the node manager."""

    _dirty: bool

    @property
    def members(self) -> Membership: ...
    @property
    def pool(self) -> Any: ...  # core.scheduler's ResourcePool: total, feasible()
    @property
    def locator(self) -> ActorLocator: ...
    @property
    def tasks(self) -> Mapping[str, Any]: ...
    @property
    def conns(self) -> Mapping[int, Any]: ...
    @property
    def remote_actors(self) -> Mapping[str, dict[str, Any]]: ...
    @property
    def federation(self) -> RemotePlacing: ...

    def _log(self, text: str) -> None: ...
    def _pin(self, oid: str) -> None: ...
    def _unpin(self, oid: str) -> None: ...
    def _job_of(self, payload: Any) -> str: ...
    def _fail_task(self, task: Any, kind: ErrorKind, message: str) -> None: ...
    @property
    def actor_table(self) -> ActorMaking: ...


class PendingActorsHost:
    """The node manager's side of pending actors (see the module docstring)."""

    def __init__(self, node: PendingNode,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.clock = clock
        self.table = PendingActors()
        #: the autoscaler monitor's last report (see :meth:`call_autoscaler_report`)
        self.autoscaler_report: dict[str, Any] | None = None
        self._autoscaler_reported = 0.0  # clock() when it came

    def calls(self) -> dict[int, Callable[..., Any]]:
        """Its REQUEST handlers, by call (the node's dispatch table takes them)."""
        return {Call.AUTOSCALER_REPORT: self.call_autoscaler_report}

    # ------------------------------------------------ the autoscaler's report
    def call_autoscaler_report(self, conn: Any, report: dict[str, Any]) -> bool:
        """AUTOSCALER_REPORT (a monitor's round, sent to every node by GATHER):
        ``{"cluster_name", "shapes": the node types it may launch, "ttl": seconds
        they stay valid, "decisions": its decisions with their reasons, "time"}``."""
        if not isinstance(report, dict) or not isinstance(report.get("shapes"), list):
            raise ValueError("AUTOSCALER_REPORT takes {'shapes': [...], 'ttl': s, ...}")
        self.autoscaler_report = dict(report)
        self._autoscaler_reported = self.clock()
        return True

    def launchable(self) -> list[dict[str, float]] | None:
        """The node types a running autoscaler may launch, or None when no monitor
        reported within its ``ttl`` (none runs, as far as this node knows)."""
        report = self.autoscaler_report
        if report is None or \
                self.clock() - self._autoscaler_reported > float(report.get("ttl", 0.0)):
            return None
        return [dict(shape) for shape in report["shapes"]]

    def autoscaler_stats(self) -> dict[str, Any] | None:
        """STATS ``autoscaler``: the monitor's last round as reported here
        (``cluster_name``, ``decisions``, ``age`` in seconds, ``stale``: older than
        its ttl), or None."""
        report = self.autoscaler_report
        if report is None:
            return None
        age = self.clock() - self._autoscaler_reported
        return {"cluster_name": report.get("cluster_name"),
                "decisions": list(report.get("decisions") or []), "age": age,
                "stale": age > float(report.get("ttl", 0.0))}

    def unhostable(self, demand: dict[str, float]) -> str | None:
        """Why no node can ever host ``demand``: no live node fits it, nor any node
        type the autoscaler may launch; None when one of them does."""
        totals = ([dict(e.total) for e in self.node.members.alive()]
                  or [dict(self.node.pool.total)])
        if any(fits(demand, total) for total in totals):
            return None
        shapes = self.launchable()
        if shapes is not None and any(fits(demand, shape) for shape in shapes):
            return None
        why = (" and no autoscaler runs" if shapes is None else
               f" and no node type the autoscaler may launch fits it (node types: {shapes})")
        return (f"no live node can host it: it asks for {dict(demand)}, the largest live node "
                f"has {largest(demand, totals)}{why}")

    def restart(self, owner: Any, actor_id: str, spec: dict[str, Any],
                args: list[Any], restarts: int) -> bool:
        """An actor whose node died, with a restart left, that no live node fits:
        it waits here for a node the autoscaler launches (True), or, when nothing
        can ever host it, is dead for good, saying why (False)."""
        why = self.unhostable(spec["demand_create"])
        if why is not None:
            self.node._log(f"actor {actor_id} cannot restart: {why}")
            self.table.died(actor_id, why)
            self.node.locator.gone(actor_id, spec)  # the head frees its name
            return False
        spec = {**spec, "await_node": "node", "strategy": "LOCAL"}
        payload, deps, contained = args
        self.node.actor_table.create(owner, actor_id, spec, payload, deps, contained, restart=True)
        entry = self.table.entries.get(actor_id)
        if entry is not None:
            entry.restarts = restarts
        return True

    def list_rows(self) -> list[dict[str, Any]]:
        """``fedexec list actors`` rows of the pending actors (state WAITING_FOR_NODE)."""
        return [{"actor_id": e.actor_id, "class": e.spec.get("class_name"),
                 "name": e.spec.get("name") or "",
                 "job_id": self.node._job_of([e.spec.get("runtime_env")]),
                 "namespace": e.spec.get("namespace") or "default",
                 "state": "WAITING_FOR_NODE", "pid": None, "restarts": 0}
                for e in self.table.entries.values()]

    def pend(self, conn: Any, actor_id: str, spec: dict[str, Any], payload: Any,
             deps: list[str], contained: list[str]) -> list[Any]:
        """Keep an actor no live node can host until one can (its name, if any, is
        already registered at the head, pointing here). Returns the creation reply."""
        entry = PendingActor(actor_id, spec, payload, deps, contained,
                             getattr(conn, "id", None), time.time())
        for oid in deps + contained:
            self.node._pin(oid)
        self.table.add(entry, self.node.members.shape_version)
        self.node._log(entry.reason())
        return [actor_id, spec]

    def register_again(self) -> None:
        """(Node) joined a head again: register the named and restartable actors
        waiting here, as for the live ones (``persistence.py``), so the head finds
        them by name even if it kept no state."""
        for entry in self.table.entries.values():
            if tracked(entry.spec):
                self.node.locator.register(entry.actor_id, entry.spec, lambda ok, value: None)

    def queue_call(self, task: Any) -> None:
        """A call to a pending actor: it waits, in order, for the actor to be placed."""
        entry = self.table.entries[task.actor_id]
        task.retries_left = entry.spec.get("max_task_retries", 0)
        entry.calls.append(task)

    def cancel_call(self, task: Any) -> bool:
        """Cancel a call queued on a pending actor; False if it is not one."""
        entry = self.table.entries.get(task.actor_id)
        if entry is None or task not in entry.calls:
            return False
        entry.calls.remove(task)
        self.node._fail_task(task, ErrorKind.CANCELLED, f"{task.name} was cancelled")
        return True

    def kill(self, actor_id: str, no_restart: bool) -> bool:
        """KILL_ACTOR for a pending actor: it is gone (its calls fail), unless
        ``no_restart`` is False and it may restart (it never started: it stays)."""
        entry = self.table.entries[actor_id]
        limit = entry.spec.get("max_restarts", 0)
        if not no_restart and limit != 0:
            return True
        self.drop(actor_id, "it was killed before a node could host it")
        return True

    def drop_in_group(self, pg_id: str) -> None:
        """The placement group ``pg_id`` was removed: the actors waiting for it go."""
        for entry in list(self.table.entries.values()):
            if entry.spec.get("placement_group") == pg_id:
                self.drop(entry.actor_id, "its placement group was removed "
                          "before it was placed")

    def drop(self, actor_id: str, why: str) -> None:
        entry = self.table.pop(actor_id)
        if entry is None:
            return
        self.table.died(actor_id, why)
        for task in entry.calls:
            if task.id in self.node.tasks:
                self.node._fail_task(task, ErrorKind.ACTOR_DIED, f"the actor is dead: {why}")
        self.node.locator.gone(actor_id, entry.spec)  # the head frees its name
        for oid in entry.deps + entry.contained:
            self.node._unpin(oid)
        self.node._dirty = True

    def place(self) -> None:
        """Called every loop turn: once the cluster's shape changed, make each pending
        actor that now fits a node there (or here), and send its queued calls after it."""
        for entry in self.table.due(self.node.members.shape_version):
            demand = entry.spec["demand_create"]
            if self.node.pool.feasible(demand):
                self._place_here(entry)
                continue
            if len(self.node.members.nodes) < 2:
                continue
            peer = self.node.federation.best_remote(demand, need_room=False)
            if peer is not None:
                self._place_at(entry, peer)

    def _place_here(self, entry: PendingActor) -> None:
        self.table.pop(entry.actor_id)
        conn = None if entry.owner is None else self.node.conns.get(entry.owner)
        owner = conn or _Owner(entry.owner)
        self.node.actor_table.make(owner, entry.actor_id, entry.spec, entry.payload, entry.deps,
                              entry.contained)
        for oid in entry.deps + entry.contained:
            self.node._unpin(oid)  # the actor pins them now
        for task in entry.calls:
            if task.id in self.node.tasks:
                why = self.node.actor_table.queue_call(task)
                if why is not None:
                    self.node._fail_task(task, ErrorKind.ACTOR_DIED,
                                         f"the actor is dead: {why}")
        self.node._dirty = True

    def _place_at(self, entry: PendingActor, peer: Any) -> None:
        self.table.pop(entry.actor_id)
        self.node._log(f"placing pending actor {entry.actor_id} on node {peer.node_id}")
        self.node.federation.create_remote_actor(peer, None, entry.actor_id, entry.spec,
                                       entry.payload, entry.deps, entry.contained)
        remote = self.node.remote_actors[entry.actor_id]
        remote["owner"] = entry.owner  # it may restart for it
        remote["restarts"] = entry.restarts
        for oid in entry.deps + entry.contained:
            self.node._unpin(oid)  # the remote entry pins them now
        for task in entry.calls:  # after the creation, on the same link: in order
            if task.id in self.node.tasks:
                self.node.federation.forward_call(task, peer)
