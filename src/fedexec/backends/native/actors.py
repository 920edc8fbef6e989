"""The node manager's actors table: each actor's lifecycle, restarts and call queue,
the calls routed to it (here, pending for a node, or forwarded to its node), the
direct calls its worker takes (see ``direct.py``), and the actor REQUESTs
(GET_ACTOR, KILL_ACTOR, CREATE_ACTOR, ACTOR_ADDRESS). A component of
:class:`~.node.NodeManager` over :class:`ActorsNode`, what it uses of it.

State (the node reads ``actors`` and ``named`` too, under the same names)::

    actors         {actor id: _Actor}  PENDING -> ALIVE -> (RESTARTING -> ALIVE)* -> DEAD
        .queue     calls not yet sent to its worker, in order (their deps computed or not)
        .inflight  calls sent to its worker (ACTOR_EXEC) or taken directly, unfinished
        .direct    direct calls unfinished: task id -> caller conn (``direct_owners``
                   counts them per caller: its hub calls wait behind them)
    named          {(namespace, name): actor id}  named actors here and created from here
    remote_actors  {actor id: {"node", "spec", ...}}  created from here, living elsewhere
    direct_early   DIRECT_DONE results that came before their call's ACTOR_CALL

Data flow of a hub call: ACTOR_CALL -> ``route_call`` (queue here / pending actor /
forward to its node / ask the head where it lives) -> ``queue_call`` (deps) ->
``forward_calls`` (ACTOR_EXEC to its worker, in order, none overtaking a caller's
direct calls) -> TASK_DONE (the node's ``_on_task_done``). A direct call: ACTOR_CALL
with the worker id -> ``_direct_registered`` (inflight); DIRECT_DONE ->
``_direct_finished``. The worker dying: ``lost`` (restart, retrying inflight calls
by ``max_task_retries``) or ``dead`` (every call fails with ActorDiedError).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .actor_directory import name_taken, tracked
from .core.events import ActorQueued, ActorReleased, ActorResized, Reply
from .protocol import Call, ErrorKind, Kind, Op, encode_error, goes_straight
from .records import _DEFER, _Actor, _Conn, _Obj, _Peer, _Task, _Worker

if TYPE_CHECKING:
    from .._scheduling import ResourcePool
    from .actor_directory import ActorLocator
    from .core.scheduler import LocalScheduler
    from .events import EventStream
    from .federation import Federation
    from .membership import Membership
    from .pending_actors import PendingActorsHost
    from .processes import WorkerProcesses
    from .store import StoreManager

__all__ = ["ActorTable", "ActorsNode"]

_MAX_EARLY = 100_000  # DIRECT_DONE results kept for calls not registered yet


class ActorsNode(Protocol):
    """What :class:`ActorTable` uses of the node manager."""

    _dirty: bool
    _request_id: int

    @property
    def node_id(self) -> str: ...
    @property
    def is_head(self) -> bool: ...
    @property
    def tasks(self) -> dict[str, _Task]: ...
    @property
    def objects(self) -> dict[str, _Obj]: ...
    @property
    def conns(self) -> Mapping[int, _Conn]: ...
    @property
    def members(self) -> Membership: ...
    @property
    def core(self) -> LocalScheduler: ...
    @property
    def pool(self) -> ResourcePool: ...
    @property
    def store(self) -> StoreManager: ...
    @property
    def federation(self) -> Federation: ...
    @property
    def locator(self) -> ActorLocator: ...
    @property
    def pending(self) -> PendingActorsHost: ...
    @property
    def processes(self) -> WorkerProcesses: ...
    @property
    def event_stream(self) -> EventStream: ...

    def _send(self, cid: int | None, msg: list[Any]) -> None: ...
    def _out(self, conn: _Conn) -> list[Any]: ...
    def _register_task(self, conn: _Conn, task: _Task) -> None: ...
    def _await_deps(self, item: Any, ready: Any, localize: bool = True) -> None: ...
    def _failed_dep(self, item: Any) -> _Obj | None: ...
    def _pin(self, oid: str) -> None: ...
    def _unpin(self, oid: str) -> None: ...
    def _dep_entry(self, oid: str) -> list[Any]: ...
    def _fail_task(self, task: _Task, kind: ErrorKind, message: str) -> None: ...
    def _finish_task(self, task: _Task, results: list[list[Any]],
                     failed: bool = False) -> None: ...
    def _do_reply(self, a: Reply) -> None: ...
    def _retire(self, worker: _Worker) -> None: ...


class ActorTable:
    """The actors of a node (see the module docstring)."""

    def __init__(self, node: ActorsNode) -> None:
        self.node = node
        self.actors: dict[str, _Actor] = {}
        self.named: dict[tuple[str, str], str] = {}
        self.remote_actors: dict[str, dict[str, Any]] = {}  # created here, living elsewhere
        #: DIRECT_DONE results that came before their call's ACTOR_CALL (see direct.py).
        self.direct_early: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()

    def handlers(self) -> dict[int, Callable[[Any, list[Any]], None]]:
        """Its message handlers, by op (the node's dispatch table takes them)."""
        return {Op.ACTOR_CALL: self.on_actor_call, Op.DIRECT_DONE: self.on_direct_done,
                Op.ACTOR_READY: self.on_actor_ready, Op.ACTOR_FAILED: self.on_actor_failed}

    def calls(self) -> dict[int, Callable[..., Any]]:
        """Its REQUEST handlers, by call."""
        return {Call.GET_ACTOR: self.call_get_actor, Call.KILL_ACTOR: self.call_kill_actor,
                Call.CREATE_ACTOR: self.call_create_actor,
                Call.ACTOR_ADDRESS: self.call_actor_address}

    def on_actor_call(self, conn: _Conn, msg: list[Any]) -> None:
        _, actor_id, task_id, return_ids, name, deps, contained, payload = msg[:8]
        task = _Task(task_id, return_ids, name, {}, 0, deps, contained, payload, conn.id,
                     actor_id)
        if isinstance(conn, _Peer):
            self.node.federation.adopt(conn, deps + contained)
        self.node._register_task(conn, task)
        if len(msg) > 9 and msg[9]:  # the caller sent it to the actor's worker itself
            self._direct_registered(task, msg[9])
            return
        why = self.route_call(task, msg[8] if len(msg) > 8 else None)
        if why is not None:
            self.node._fail_task(task, ErrorKind.ACTOR_DIED, f"the actor is dead: {why}")

    def _direct_registered(self, task: _Task, worker_id: str) -> None:
        """A call its caller sent to worker ``worker_id`` directly (see direct.py)."""
        actor = self.actors.get(task.actor_id or "")
        retries = actor.spec.get("max_task_retries", 0) if actor is not None else 0
        task.retries_left = retries
        early = self.direct_early.pop(task.id, None)
        if early is not None:  # the worker answered before this arrived
            self._direct_finished(task, early)
            self._hold_refs_in(early, self.node._unpin)  # (its objects hold them now)
            return
        if actor is None or actor.state == "DEAD":
            why = actor.death if actor is not None else "it does not exist"
            self.node._fail_task(task, ErrorKind.ACTOR_DIED, f"the actor is dead: {why}")
            return
        worker = actor.worker
        if actor.state == "ALIVE" and worker is not None and worker.id == worker_id:
            task.state = "ASSIGNED"
            actor.inflight[task.id] = task
            actor.direct[task.id] = task.owner
            actor.direct_owners[task.owner] += 1
            return
        # It went to a worker that is gone: as a call that was running there.
        if retries == 0:
            self.node._fail_task(task, ErrorKind.ACTOR_DIED,
                            f"the actor's worker died while running {task.name}; set "
                            "max_task_retries to retry such calls")
            return
        self.queue_call(task)
        task.retries_left = retries - 1 if retries > 0 else retries

    def on_direct_done(self, conn: _Conn, msg: list[Any]) -> None:
        """An actor's worker ended a direct call (the caller has what was inline)."""
        _, task_id, results = msg
        if conn.worker is None:
            return
        for r in results:
            if r[1] == Kind.SHM:
                self.node.store.seal(r[0])
                conn.creating.discard(r[0])
        task = self.node.tasks.get(task_id)
        if task is None:  # its ACTOR_CALL is still on its way
            # The refs its results hold live until then (the worker's own DECREF of
            # one, right behind this message, would free it).
            self._hold_refs_in(results, self.node._pin)
            early = self.direct_early
            early[task_id] = results
            while len(early) > _MAX_EARLY:
                self._hold_refs_in(early.popitem(last=False)[1], self.node._unpin)
            return
        self._direct_finished(task, results)
        self.node._dirty = True

    @staticmethod
    def _hold_refs_in(results: list[list[Any]], pin: Callable[[str], None]) -> None:
        """Pin (or unpin) the objects whose refs ``results`` hold."""
        for r in results:
            if r[1] in (Kind.INLINE, Kind.SHM):
                for oid in r[4]:
                    pin(oid)

    def _direct_finished(self, task: _Task, results: list[list[Any]]) -> None:
        actor = self.actors.get(task.actor_id or "")
        if actor is not None:
            actor.inflight.pop(task.id, None)
            owner = actor.direct.pop(task.id, None)
            if owner is not None:
                left = actor.direct_owners[owner] - 1
                if left > 0:
                    actor.direct_owners[owner] = left
                else:
                    del actor.direct_owners[owner]
        objects = self.node.objects
        for r in results:
            if goes_straight(r):  # the caller got it in DIRECT_REPLY
                obj = objects.get(r[0])
                if obj is not None and obj.owner == task.owner:
                    obj.owner = None
        self.node._do_reply(Reply(task.id, results))
        if actor is not None and actor.queue:
            self.forward_calls(actor)

    def call_actor_address(self, conn: _Conn, actor_id: str) -> list[str] | bool | None:
        """ACTOR_ADDRESS: where a caller on this node may send the actor's calls
        (False: it is dead)."""
        actor = self.actors.get(actor_id)
        if actor is not None and actor.state == "DEAD":
            return False
        if isinstance(conn, _Peer) or conn.remote or actor is None \
                or actor.state != "ALIVE" or actor.worker is None or actor.address is None \
                or actor.address[0] != actor.worker.id:
            return None
        return actor.address

    def route_call(self, task: _Task, home: str | None = None) -> str | None:
        """Queue an actor call on its actor here, or forward it to the node the actor
        lives on (``home``: where the caller last knew it; if that is not alive or
        not known, the head says where it is now); else say why it is dead."""
        actor = self.actors.get(task.actor_id or "")
        if actor is None:
            if task.actor_id in self.node.pending.table:  # waits for a node: queued in order
                self.node.pending.queue_call(task)
                return None
            home = self.remote_actors.get(task.actor_id or "", {}).get("node") or home
            if home and home != self.node.node_id and self.node.members.is_alive(home):
                self.node.federation.forward_call(task, self.node.federation.peer(home))  # it lives on another node
                return None
            if len(self.node.members.nodes) > 1:
                self.node.locator.locate(task.actor_id or "",
                                    lambda node_id: self._located(task, node_id))
                return None
        return self.queue_call(task)

    def _located(self, task: _Task, node_id: str | None) -> None:
        """The head said where a call's actor lives (None: nowhere)."""
        if task.id not in self.node.tasks:
            return  # cancelled meanwhile
        if node_id and node_id != self.node.node_id and self.node.members.is_alive(node_id):
            self.node.federation.forward_call(task, self.node.federation.peer(node_id))
            return
        why = self.queue_call(task)
        if why is not None:
            self.node._fail_task(task, ErrorKind.ACTOR_DIED, f"the actor is dead: {why}")

    def queue_call(self, task: _Task) -> str | None:
        """Queue an actor call on its actor here; else say why it is dead."""
        actor = self.actors.get(task.actor_id or "")
        if actor is None or actor.state == "DEAD":
            return actor.death if actor is not None else \
                self.node.pending.table.death(task.actor_id or "")
        task.retries_left = actor.spec.get("max_task_retries", 0)
        actor.queue.append(task)
        self.node._await_deps(task, lambda _t, a=actor: self.forward_calls(a))
        return None

    def on_actor_ready(self, conn: _Conn, msg: list[Any]) -> None:
        actor = self.actors.get(msg[1])
        if actor is None or actor.state == "DEAD":
            return
        actor.state = "ALIVE"
        if len(msg) > 2 and msg[2] and actor.worker is not None:
            actor.address = [actor.worker.id, msg[2]]
        self.node.event_stream.actor_changed(actor)
        self.node.core.handle(ActorResized(actor.id, actor.demand_life))
        self.node._dirty = True
        self.forward_calls(actor)

    def on_actor_failed(self, conn: _Conn, msg: list[Any]) -> None:
        actor = self.actors.get(msg[1])
        if actor is None:
            return
        self.dead(actor, msg[2])
        if conn.worker is not None:
            self.node._retire(conn.worker)

    def create(self, conn: _Conn, actor_id: str, spec: dict[str, Any], payload: Any,
                      deps: list[str], contained: list[str], restart: bool = False) -> Any:
        """Make an actor here or on another node: [actor id, spec], or ``_DEFER`` (the
        REPLY comes later). A tracked actor (see actor_directory.py) registers at the
        head first: its name is unique across the cluster. (``restart``: one that
        died with its node, made again here; the head keeps its name for it.)"""
        name, namespace = spec.get("name"), spec.get("namespace") or "default"
        if isinstance(conn, _Peer):
            self.node.federation.adopt(conn, deps + contained)
            self.node.federation.took(conn)
        if name is not None:
            found = self.named.get((namespace, name), "")
            existing = self.actors.get(found)
            remote = self.remote_actors.get(found)
            if remote is not None and self.node.members.is_alive(remote["node"]):
                if spec.get("get_if_exists"):
                    return [found, remote["spec"]]
                existing = remote  # type: ignore[assignment]
            if existing is not None and getattr(existing, "state", "ALIVE") != "DEAD":
                return name_taken(spec, [getattr(existing, "id", found), existing.spec])
        if len(self.node.members.nodes) > 1:
            peer = self.node.federation.place_actor(spec)
            if peer is not None:
                self.node.federation.create_remote_actor(peer, conn, actor_id, spec, payload, deps, contained)
                return _DEFER
        spec["node_id"] = self.node.node_id
        if not self.node.pool.feasible(spec["demand_create"]) and not spec.get("await_node"):
            raise ValueError(f"actor needs {spec['demand_create']} but the node has "
                             f"{self.node.pool.total}")
        if not tracked(spec):
            return self.make(conn, actor_id, spec, payload, deps, contained)
        if restart and not self.node.is_head:
            self.node.locator.register(actor_id, spec, lambda ok, value: None)
            return self.make(conn, actor_id, spec, payload, deps, contained)
        if self.node.is_head:
            holder = self.node.locator.call_register_actor(conn, actor_id, spec, self.node.node_id,
                                                      spec.get("owner_node") or self.node.node_id)
            if holder[0] != actor_id:
                return name_taken(spec, holder)
            return self.make(conn, actor_id, spec, payload, deps, contained)
        cid, req = conn.id, self.node._request_id

        def registered(ok: bool, value: Any) -> None:
            if not ok:
                reply = [Op.REPLY, req, False, value]
            else:
                try:
                    if value[0] != actor_id:
                        value = name_taken(spec, value)
                    elif cid in self.node.conns:
                        value = self.make(conn, actor_id, spec, payload, deps,
                                                 contained)
                    else:  # its creator left while the head answered
                        self.node.locator.gone(actor_id, spec)
                        return
                    reply = [Op.REPLY, req, True, value]
                except Exception as exc:
                    reply = [Op.REPLY, req, False, encode_error(exc)]
            self.node._send(cid, reply)

        self.node.locator.register(actor_id, spec, registered)
        return _DEFER

    def make(self, conn: _Conn, actor_id: str, spec: dict[str, Any], payload: Any,
                    deps: list[str], contained: list[str]) -> list[Any]:
        if not self.node.pool.feasible(spec["demand_create"]):  # it waits for a node
            return self.node.pending.pend(conn, actor_id, spec, payload, deps, contained)
        name, namespace = spec.get("name"), spec.get("namespace") or "default"
        actor = _Actor(actor_id, spec, payload, deps, contained, conn.id)
        self.actors[actor_id] = actor
        self.node.event_stream.actor_changed(actor)
        if name is not None:
            self.named[(namespace, name)] = actor_id
        for oid in deps + contained:
            self.node._pin(oid)
        self.node._await_deps(actor, self._deps_ready)
        return [actor_id, spec]

    def _deps_ready(self, actor: _Actor) -> None:
        bad = self.node._failed_dep(actor)
        if bad is not None:
            self.dead(actor, f"an argument of its __init__ failed ({bad.payload[-1]})")
            return
        self.node.core.handle(ActorQueued(actor.id, actor.demand_create))
        self.node._dirty = True

    def forward_calls(self, actor: _Actor) -> None:
        if actor.state != "ALIVE" or actor.worker is None or actor.worker.conn is None:
            return
        out = self.node._out(actor.worker.conn)
        owners = actor.direct_owners
        while actor.queue and actor.queue[0].missing == 0:
            if owners and actor.queue[0].owner in owners:
                break  # its caller's direct calls before it have not ended yet
            task = actor.queue.popleft()
            if task.id not in self.node.tasks:
                continue
            bad = self.node._failed_dep(task)
            if bad is not None:
                self.node._finish_task(task, [[r, bad.kind, *bad.payload] for r in task.return_ids])
                continue
            actor.inflight[task.id] = task
            task.state = "ASSIGNED"
            out.append([Op.ACTOR_EXEC, task.id, task.return_ids, task.payload,
                        [self.node._dep_entry(oid) for oid in task.deps], task.name])

    def lost(self, actor: _Actor, why: str) -> None:
        """The actor's worker died: restart it if allowed, else it is dead."""
        actor.worker = None
        actor.direct_reset()
        max_restarts = actor.spec.get("max_restarts", 0)
        can = not actor.kill_requested and (
            max_restarts == -1 or actor.restarts_used < max_restarts)
        inflight = list(actor.inflight.values())
        actor.inflight.clear()
        if not can or actor.state == "DEAD":
            reason = "it was killed" if actor.kill_requested else f"its worker died ({why})"
            for task in inflight:
                self.node._fail_task(task, ErrorKind.ACTOR_DIED, f"the actor died: {reason}")
            self.dead(actor, reason)
            return
        actor.restarts_used += 1
        actor.state = "RESTARTING"
        self.node.event_stream.actor_changed(actor)
        retry = []
        for task in inflight:
            if task.retries_left != 0:
                task.retries_left -= 1 if task.retries_left > 0 else 0
                retry.append(task)
            else:
                self.node._fail_task(task, ErrorKind.ACTOR_DIED,
                                f"the actor's worker died ({why}) while running {task.name}; "
                                "set max_task_retries to retry such calls")
        actor.queue.extendleft(reversed(retry))
        self.node.core.handle(ActorReleased(actor.id))
        self.node.core.handle(ActorQueued(actor.id, actor.demand_create))
        self.node._dirty = True

    def dead(self, actor: _Actor, why: str) -> None:
        if actor.state == "DEAD":
            return
        actor.state = "DEAD"
        actor.death = why
        self.node.event_stream.actor_changed(actor)
        self.node.core.handle(ActorReleased(actor.id))
        calls = list(actor.queue) + list(actor.inflight.values())
        actor.queue.clear()
        actor.inflight.clear()
        actor.direct_reset()
        for task in calls:
            self.node._fail_task(task, ErrorKind.ACTOR_DIED, f"the actor is dead: {why}")
        if actor.name is not None and self.named.get((actor.namespace, actor.name)) == actor.id:
            del self.named[(actor.namespace, actor.name)]
        self.node.locator.gone(actor.id, actor.spec)
        for oid in actor.deps + actor.contained:
            self.node._unpin(oid)
        actor.deps, actor.contained = [], []
        if actor.worker is not None:
            self.node.processes.kill(actor.worker)
        self.node._dirty = True

    def call_get_actor(self, conn: _Conn, name: str, namespace: str) -> list[Any]:
        found = self.named.get((namespace, name), "")
        remote = self.remote_actors.get(found)
        if remote is not None and self.node.members.is_alive(remote["node"]):
            return [found, remote["spec"]]
        actor = self.actors.get(found)
        if actor is None or actor.state == "DEAD":
            return self.node.locator.lookup_at_head(conn, name, namespace)
        return [actor.id, actor.spec]

    def call_kill_actor(self, conn: _Conn, actor_id: str, no_restart: bool,
                         location: str | None = None, located: bool = False) -> Any:
        if actor_id in self.node.pending.table:
            return self.node.pending.kill(actor_id, no_restart)
        actor = self.actors.get(actor_id)
        if actor is None:
            home = self.remote_actors.get(actor_id, {}).get("node") or location
            if home and home != self.node.node_id and self.node.members.is_alive(home):
                if no_restart:
                    self.node.federation.drop_remote_actor(actor_id)
                self.node.federation.relay(self.node.federation.peer(home), Call.KILL_ACTOR, [actor_id, no_restart],
                            conn.id, self.node._request_id)
                return _DEFER
            if not located and len(self.node.members.nodes) > 1:
                # The handle names a node that is dead or no longer holds it: the
                # head says where it lives now (see actor_directory.py).
                req = self.node._request_id

                def then(node_id: str | None) -> None:
                    self.node._request_id = req
                    try:
                        value = self.call_kill_actor(conn, actor_id, no_restart, node_id,
                                                      located=True)
                    except Exception as exc:
                        self.node._send(conn.id, [Op.REPLY, req, False, encode_error(exc)])
                        return
                    if value is not _DEFER:
                        self.node._send(conn.id, [Op.REPLY, req, True, value])

                self.node.locator.locate(actor_id, then)
                return _DEFER
        if actor is None or actor.state == "DEAD":
            return False
        if no_restart:
            actor.kill_requested = True
        worker = actor.worker
        if worker is not None:
            # Detach now, so calls made from here on wait for the restart (or fail).
            self.node.processes.kill(worker)
            self.lost(actor, "it was killed")
        elif no_restart:
            self.dead(actor, "it was killed")
        return True

    def call_create_actor(self, conn: _Conn, actor_id: str, spec: dict[str, Any], payload: Any,
                           deps: list[str], contained: list[str]) -> list[Any]:
        return self.create(conn, actor_id, spec, payload, deps, contained)
