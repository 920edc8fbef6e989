"""Placement groups in the native runtime: bundles of resources reserved atomically
on one or more nodes. A component the node manager owns (``NodeManager.placement``,
a :class:`PlacementGroups`), driven through :class:`PlacementNode`, what it uses of
the node (its resource pool and core queue, the peers to ask, replying to clients).
Its state: ``pgs``, the groups asked of this node (the origin), and ``reserved``,
the bundles held here (``[index, bundle]`` per group).

The node a driver asks (the *origin*) plans where each bundle goes from the
cluster view (``plan_bundles``, pure), then reserves in two phases: every chosen
node reserves its bundles (RESERVE_BUNDLES, answered yes/no); if any says no, the
others are released and the group is tried again on a later tick. A reserved
bundle turns the node's resources into renamed ones, as Ray does::

    bundle 1 of group G = {"CPU": 2}   →   CPU_group_1_G: 2  and  CPU_group_G: 2

and a task run with ``PlacementGroupStrategy(G, 1)`` asks for ``CPU_group_1_G`` and
``CPU_group_G`` (``bundle_index=-1``: ``CPU_group_G`` only, so the two kinds share the
group's CPUs), so the ordinary scheduler and spillback put it on the right node.

Removing the group gives its resources back: at once what none of its tasks and
actors holds; the rest as they end (the pool *retires* the renamed resources, see
``ResourcePool.retire``), so nothing is booked twice. Tasks still queued for the
group fail (``TaskCancelledError``); running ones and actors are not killed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ...placement import validate_bundles
from .._scheduling import fits
from .actor_directory import Relaying
from .core.events import Withdraw
from .core.scheduler import ActorEntry
from .membership import Membership
from .pending_actors import PendingActorsHost
from .protocol import Call, ErrorKind, Op, encode_error
from .records import _DEFER

__all__ = ["PlacementGroups", "PlacementNode", "bundle_demand", "pg_row", "plan_bundles"]

_RETRY_S = 0.5


def bundle_demand(demand: Mapping[str, float], pg_id: str, index: int) -> dict[str, float]:
    """A task's demand inside bundle ``index`` of group ``pg_id`` (-1: any bundle): the
    group-wide resources always, the bundle's own as well for an index. (What a bundle
    adds to its node, too.)"""
    out = {f"{k}_group_{pg_id}": v for k, v in demand.items() if v}
    if index >= 0:
        out.update({f"{k}_group_{index}_{pg_id}": v for k, v in demand.items() if v})
    return out


def _bundles_total(items: list[list[Any]]) -> dict[str, float]:
    whole: dict[str, float] = {}
    for _, b in items:
        for k, v in b.items():
            whole[k] = whole.get(k, 0.0) + v
    return whole


def _take(free: dict[str, float], need: Mapping[str, float]) -> None:
    for k, v in need.items():
        free[k] = free.get(k, 0.0) - v


def plan_bundles(bundles: list[dict[str, float]], strategy: str,
                 free: dict[str, dict[str, float]], prefer: str) -> dict[int, str] | None:
    """Choose a node for each bundle (``{index: node_id}``) from the free resources
    per node, or None if the strategy cannot be met now. ``prefer``: the node to
    try first (the origin)."""
    order = sorted(free, key=lambda n: (n != prefer, -free[n].get("CPU", 0.0), n))
    left = {n: dict(f) for n, f in free.items()}
    if strategy in ("PACK", "STRICT_PACK"):
        whole: dict[str, float] = {}
        for b in bundles:
            for k, v in b.items():
                whole[k] = whole.get(k, 0.0) + v
        for candidate in order:
            if fits(whole, left[candidate]):
                return dict.fromkeys(range(len(bundles)), candidate)
        if strategy == "STRICT_PACK":
            return None
        out: dict[int, str] = {}
        for i, b in enumerate(bundles):  # fewest nodes: fill the used ones first
            used = list(dict.fromkeys(out.values()))
            packed = next((n for n in used + order if fits(b, left[n])), None)
            if packed is None:
                return None
            _take(left[packed], b)
            out[i] = packed
        return out
    out = {}
    for i, b in enumerate(bundles):
        taken = set(out.values())
        fresh = [n for n in order if n not in taken and fits(b, left[n])]
        if fresh:
            node = fresh[0]
        elif strategy == "SPREAD":  # shares a node once every node has a bundle
            shared = [n for n in order if fits(b, left[n])]
            if not shared:
                return None
            node = shared[0]
        else:  # STRICT_SPREAD: one node per bundle, or nothing
            return None
        _take(left[node], b)
        out[i] = node
    return out


def pg_row(pg: dict[str, Any]) -> dict[str, Any]:
    """A group's row, for ``fedexec list placement_groups`` and the event stream."""
    return {"placement_group_id": pg["id"], "name": pg["name"] or "",
            "strategy": pg["strategy"],
            "state": "PENDING" if pg["nodes"] is None else "CREATED",
            "bundles": pg["bundles"],
            "bundle_nodes": {str(i): n for i, n in (pg["nodes"] or {}).items()}}


class PeerRequests(Relaying, Protocol):
    """Asking other nodes (the federation's side)."""

    def peer(self, node_id: str, address: str | None = None) -> Any: ...


class PlacementEvents(Protocol):
    """Where a group's changes are reported (``events.EventStream``)."""

    def pg_changed(self, pg: dict[str, Any], removed: bool = False) -> None: ...


class ActorEnding(Protocol):
    """Ending an actor whose group went (``actors.ActorTable``)."""

    def dead(self, actor: Any, why: str) -> None: ...


class PlacementNode(Protocol):
    """What :class:`PlacementGroups` uses of the node manager."""

    _dirty: bool

    @property
    def node_id(self) -> str: ...
    @property
    def pool(self) -> Any: ...  # core.scheduler's ResourcePool
    @property
    def core(self) -> Any: ...  # core.scheduler.LocalScheduler
    @property
    def members(self) -> Membership: ...
    @property
    def peers(self) -> Mapping[str, Any]: ...
    @property
    def actors(self) -> Mapping[str, Any]: ...
    @property
    def tasks(self) -> Mapping[str, Any]: ...
    @property
    def pending(self) -> PendingActorsHost: ...
    @property
    def _request_id(self) -> int: ...

    @property
    def federation(self) -> PeerRequests: ...

    def _send(self, cid: int, msg: list[Any]) -> None: ...
    def _run(self, actions: list[Any]) -> None: ...
    @property
    def actor_table(self) -> ActorEnding: ...
    def _fail_task(self, task: Any, kind: ErrorKind, message: str) -> None: ...
    @property
    def event_stream(self) -> PlacementEvents: ...


class PlacementGroups:
    """The placement groups of a node (see the module docstring)."""

    def __init__(self, node: PlacementNode,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.clock = clock
        self.pgs: dict[str, dict[str, Any]] = {}        # groups asked of this node
        self.reserved: dict[str, list[list[Any]]] = {}  # bundles held here: [index, bundle]

    def calls(self) -> dict[int, Callable[..., Any]]:
        """Its REQUEST handlers, by call (the node's dispatch table takes them)."""
        return {Call.PLACEMENT_GROUP: self.call_placement_group,
                Call.REMOVE_PLACEMENT_GROUP: self.call_remove_placement_group,
                Call.RESERVE_BUNDLES: self.call_reserve_bundles,
                Call.RELEASE_BUNDLES: self.call_release_bundles}

    # ------------------------------------------------------------ this node
    def reserve_local(self, pg_id: str, items: list[list[Any]]) -> bool:
        """Reserve bundles here (renamed resources); False if they do not fit now."""
        whole = _bundles_total(items)
        pool = self.node.pool
        if pg_id in self.reserved or not pool.fits(whole):
            return False
        pool.acquire(whole)
        for index, b in items:
            for k, v in bundle_demand(b, pg_id, index).items():
                pool.unretire(k)  # placed here again while its old work still runs
                pool.total[k] = pool.total.get(k, 0.0) + v
                pool.used.setdefault(k, 0.0)
        self.reserved[pg_id] = [list(i) for i in items]
        self.node._dirty = True
        return True

    def release_local(self, pg_id: str, removed: bool = False) -> bool:
        """Give the group's bundles here back (see the module docstring); ``removed``:
        for good (not to be placed again), so the tasks queued for it here fail."""
        items = self.reserved.pop(pg_id, None)
        if items is None:
            return False
        pool = self.node.pool
        for key, amount in _bundles_total(items).items():
            group_key = f"{key}_group_{pg_id}"  # every task of the group holds it
            held = min(pool.used.get(group_key, 0.0), amount)
            pool.release({key: amount - held})
            pool.retire(group_key, key)
        for index, b in items:
            for k in bundle_demand(b, pg_id, index):
                if k in pool.total and k not in pool.retired:
                    pool.retire(k)
        if removed:
            self._fail_queued_in_group(pg_id)
        self.node._dirty = True
        return True

    def _fail_queued_in_group(self, pg_id: str) -> None:
        """What waits here for resources of a removed group can never start: its
        tasks are cancelled, its actors die (their calls fail with ActorDiedError)."""
        suffix = f"_{pg_id}"
        why = f"its placement group {pg_id} was removed before it started"
        for demand, items in self.node.core.queue.by_shape():
            if not any(k.endswith(suffix) and "_group_" in k for k in demand):
                continue
            for item in items:
                if isinstance(item, ActorEntry):
                    actor = self.node.actors.get(item.id)
                    if actor is not None:
                        self.node.actor_table.dead(actor, why)
                    continue
                self.node._run(self.node.core.handle(Withdraw(item.id)))
                task = self.node.tasks.get(item.id)
                if task is not None:
                    self.node._fail_task(task, ErrorKind.CANCELLED,
                                    f"task {task.name!r} was cancelled: {why}")

    def call_reserve_bundles(self, conn: Any, pg_id: str, items: list[list[Any]]
                              ) -> bool:
        return self.reserve_local(pg_id, items)

    def call_release_bundles(self, conn: Any, pg_id: str, removed: bool = False
                              ) -> bool:
        return self.release_local(pg_id, removed)

    def rows(self) -> list[dict[str, Any]]:
        """The groups asked of this node, for ``fedexec list placement_groups``."""
        return [pg_row(pg) for pg in self.pgs.values()]

    # ------------------------------------------------------------- origin
    def call_placement_group(self, conn: Any, pg_id: str, bundles: list[dict[str, float]],
                             strategy: str, name: str | None) -> Any:
        # A client's request is checked here, at the boundary: a group kept with bad
        # bundles would fail again on every tick (ValueError/TypeError reply instead).
        bundles = validate_bundles(bundles, strategy)
        pg = {"id": pg_id, "bundles": bundles, "strategy": strategy, "name": name,
              "nodes": None, "waiters": [(conn.id, self.node._request_id)], "votes": None,
              "tried": 0.0}
        self.pgs[pg_id] = pg
        self.node.event_stream.pg_changed(pg)
        self._try_place(pg)
        return _DEFER

    def call_remove_placement_group(self, conn: Any, pg_id: str) -> bool:
        self.node.pending.drop_in_group(pg_id)  # actors waiting for it to be placed
        pg = self.pgs.pop(pg_id, None)
        if pg is None:
            return self.release_local(pg_id, removed=True)
        self.node.event_stream.pg_changed(pg, removed=True)
        for cid, req in pg["waiters"]:
            self.node._send(cid, [Op.REPLY, req, True, None])  # never placed: ready() is False
        pg["waiters"] = []
        self._release_everywhere(pg_id, set((pg["nodes"] or {}).values()) |
                                 set((pg["votes"] or {}).keys()), removed=True)
        return True

    def _free_view(self) -> dict[str, dict[str, float]]:
        free = {self.node.node_id: self.node.pool.available()}
        for entry in self.node.members.alive():
            if entry.node_id != self.node.node_id:
                peer = self.node.peers.get(entry.node_id)
                avail = dict(entry.available)
                if peer is not None:
                    avail["CPU"] = avail.get("CPU", 0.0) - peer.sent
                free[entry.node_id] = avail
        return free

    def _try_place(self, pg: dict[str, Any]) -> None:
        """Plan and start the two-phase reservation (again, if it failed before)."""
        if pg["nodes"] is not None or pg["votes"] is not None:
            return
        pg["tried"] = self.clock()
        plan = plan_bundles(pg["bundles"], pg["strategy"], self._free_view(), self.node.node_id)
        if plan is None:
            return  # not now: tried again on a later tick
        by_node: dict[str, list[list[Any]]] = {}
        for index, node in plan.items():
            by_node.setdefault(node, []).append([index, pg["bundles"][index]])
        pg["votes"] = dict.fromkeys(by_node)
        pg["plan"] = plan
        for node, items in by_node.items():
            if node == self.node.node_id:
                self._vote(pg["id"], node, self.reserve_local(pg["id"], items))
            else:
                self.node.federation.relay(self.node.federation.peer(node), Call.RESERVE_BUNDLES,
                                 [pg["id"], items], None, 0,
                                 lambda ok, value, n=node, p=pg["id"]: self._vote(
                                     p, n, bool(ok and value)))

    def _vote(self, pg_id: str, node: str, ok: bool) -> None:
        pg = self.pgs.get(pg_id)
        if pg is None or pg["votes"] is None:
            if ok:  # removed meanwhile: give it back
                self._release_everywhere(pg_id, {node})
            return
        pg["votes"][node] = ok
        if any(v is None for v in pg["votes"].values()):
            return
        votes, pg["votes"] = pg["votes"], None
        if all(votes.values()):
            pg["nodes"] = pg.pop("plan")
            self._note_reserved(pg)
            self.node.event_stream.pg_changed(pg)
            for cid, req in pg["waiters"]:
                self.node._send(cid, [Op.REPLY, req, True, pg["nodes"]])
            pg["waiters"] = []
            return
        self._release_everywhere(pg_id, {n for n, v in votes.items() if v})

    def _note_reserved(self, pg: dict[str, Any]) -> None:
        """Add the renamed resources to our view of the other nodes now (their next
        heartbeat says the same), so work for the group can be placed at once."""
        for index, node in pg["nodes"].items():
            entry = self.node.members.nodes.get(node)
            if node == self.node.node_id or entry is None:
                continue
            for k, v in bundle_demand(pg["bundles"][index], pg["id"], index).items():
                entry.total[k] = entry.total.get(k, 0.0) + v
                entry.available[k] = entry.available.get(k, 0.0) + v
        # What the cluster can run changed (the heartbeat that says so will not:
        # it reports the total already seen), for "fits no node" caches and the
        # actors waiting for this group (see pending_actors.py).
        self.node.members.shape_version += 1

    def _release_everywhere(self, pg_id: str, nodes: set[str], removed: bool = False
                            ) -> None:
        for node in nodes:
            if node == self.node.node_id:
                self.release_local(pg_id, removed)
            elif node in self.node.peers:
                self.node._send(self.node.peers[node].id,
                                [Op.REQUEST, 0, int(Call.RELEASE_BUNDLES), [pg_id, removed]])

    def retry(self, now: float) -> None:
        """On a tick: try pending groups again; re-place groups that lost a node."""
        for pg in list(self.pgs.values()):
            if pg["nodes"] is not None and any(
                    not self.node.members.is_alive(n) for n in set(pg["nodes"].values())):
                alive = {n for n in pg["nodes"].values() if self.node.members.is_alive(n)}
                self._release_everywhere(pg["id"], alive)
                pg["nodes"] = None
                self.node.event_stream.pg_changed(pg)
            if pg["nodes"] is None and pg["votes"] is None and now - pg["tried"] > _RETRY_S:
                try:
                    self._try_place(pg)
                except Exception as exc:  # one broken group must not stop the node
                    self._drop_broken(pg, exc)

    def _drop_broken(self, pg: dict[str, Any], exc: Exception) -> None:
        """Give up on a group that cannot even be planned: its waiters get the error."""
        import traceback

        sys.stderr.write(f"fedexec node {self.node.node_id}: dropping placement group "
                         f"{pg['id']}, placing it failed:\n{traceback.format_exc()}")
        self.pgs.pop(pg["id"], None)
        self.node.event_stream.pg_changed(pg, removed=True)
        for cid, req in pg["waiters"]:
            self.node._send(cid, [Op.REPLY, req, False, encode_error(exc)])
        pg["waiters"] = []
