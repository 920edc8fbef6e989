"""What a node reports about itself: the read-only REQUEST calls (STATS, LIST,
DESCRIBE, NODE_INFO, NODES, CLUSTER_RESOURCES, AVAILABLE_RESOURCES) and METRICS,
which adds a process's metric deltas to the node's table. A component the node
manager owns (``NodeManager.reports``, a :class:`NodeReports`), over
:class:`ReportsNode`, the node's tables as it reads them; it keeps no state of its
own. Cluster-wide answers are GATHERs of these (``federation.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..._metric_table import FixedHistogram, MetricTable
from .membership import Membership
from .protocol import Call, Kind
from .records import _Actor, _Obj, _Task, _Worker

if TYPE_CHECKING:
    from .._scheduling import ResourcePool
    from .core.scheduler import LocalScheduler
    from .events import EventStream
    from .federation import Federation
    from .lease_desk import LeaseDesk
    from .pending_actors import PendingActorsHost
    from .placement_groups import PlacementGroups
    from .store import StoreManager

__all__ = ["NodeReports", "ReportsNode"]


def _host_usage() -> dict[str, float]:
    """This machine's CPU use (% since the last call) and memory, for STATS."""
    import psutil

    mem = psutil.virtual_memory()
    return {"cpu_percent": float(psutil.cpu_percent(interval=None)),
            "memory_used": float(mem.total - mem.available), "memory_total": float(mem.total)}


class ReportsNode(Protocol):
    """What :class:`NodeReports` reads of the node manager."""

    @property
    def node_id(self) -> str: ...
    @property
    def head_id(self) -> str | None: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def tcp_address(self) -> str | None: ...
    @property
    def socket_path(self) -> str: ...
    @property
    def started(self) -> float: ...
    @property
    def objects(self) -> dict[str, _Obj]: ...
    @property
    def tasks(self) -> dict[str, _Task]: ...
    @property
    def leases(self) -> LeaseDesk: ...
    @property
    def actors(self) -> dict[str, _Actor]: ...
    @property
    def workers(self) -> dict[str, _Worker]: ...
    @property
    def conns(self) -> dict[Any, Any]: ...
    @property
    def store(self) -> StoreManager: ...
    @property
    def core(self) -> LocalScheduler: ...
    @property
    def pool(self) -> ResourcePool: ...
    @property
    def members(self) -> Membership: ...
    @property
    def federation(self) -> Federation: ...
    @property
    def pending(self) -> PendingActorsHost: ...
    @property
    def placement(self) -> PlacementGroups: ...
    @property
    def metrics(self) -> MetricTable: ...
    @property
    def latency(self) -> tuple[FixedHistogram, FixedHistogram]: ...
    @property
    def ran(self) -> dict[str, int]: ...

    def _job_of(self, payload: Any) -> str: ...
    @property
    def event_stream(self) -> EventStream: ...


class NodeReports:
    """The node's read-only answers (see the module docstring)."""

    def __init__(self, node: ReportsNode) -> None:
        self.node = node

    def calls(self) -> dict[int, Callable[..., Any]]:
        """Its REQUEST handlers, by call (the node's dispatch table takes them)."""
        return {Call.CLUSTER_RESOURCES: self.call_cluster_resources,
                Call.AVAILABLE_RESOURCES: self.call_available,
                Call.NODES: self.call_nodes,
                Call.STATS: self.call_stats,
                Call.NODE_INFO: self.call_info,
                Call.DESCRIBE: self.call_describe,
                Call.LIST: self.call_list,
                Call.METRICS: self.call_metrics}

    def call_cluster_resources(self, conn: Any) -> dict[str, float]:
        if len(self.node.members.nodes) < 2:
            return dict(self.node.pool.total)
        return self.node.members.totals()

    def call_available(self, conn: Any) -> dict[str, float]:
        if len(self.node.members.nodes) < 2:
            return self.node.pool.available()
        self.node.federation.refresh_own()
        return self.node.members.availability()

    def call_nodes(self, conn: Any) -> list[dict[str, Any]]:
        return self.node.federation.cluster_nodes()

    def call_stats(self, conn: Any) -> dict[str, Any]:
        """This node's counters (``tasks`` includes ``forwarded``: tasks it owns that
        run on another node, which that node counts too; and ``leased``: leased tasks
        that said they run here, see lease_desk.py; ``queued`` and ``queued_shapes``
        include the tasks waiting for a caller's leases)."""
        backlog = self.node.leases.queued_shapes()
        return {
            "node_id": self.node.node_id,
            "objects": len(self.node.objects),
            "tasks": len(self.node.tasks) + len(self.node.leases.running),
            "leased": len(self.node.leases.running),
            "forwarded": sum(1 for t in self.node.tasks.values() if t.state == "FORWARDED"),
            "actors": sum(1 for a in self.node.actors.values() if a.state != "DEAD"),
            "workers": {w.id: [w.pid, w.slot.state] for w in self.node.workers.values()},
            "store": self.node.store.stats(),
            "queued": self.node.core.queued() + sum(n for _, n in backlog),
            "queued_shapes": [[d, n] for d, n in [*self.node.core.queued_shapes(), *backlog]],
            "pending_groups": [[pg["bundles"], pg["strategy"], pg["name"] or pg["id"]]
                               for pg in self.node.placement.pgs.values() if pg["nodes"] is None],
            "pending_actors": self.node.pending.table.rows(),
            "autoscaler": self.node.pending.autoscaler_stats(),
            "transfers": dict(self.node.federation.transfers),
            "lineage": len(self.node.federation.lineage),
            "host": _host_usage(),
        }

    def call_metrics(self, conn: Any, rows: list[dict[str, Any]]) -> bool:
        """METRICS: add a process's user-metric deltas into this node's table."""
        self.node.metrics.merge(rows)
        return True

    def call_describe(self, conn: Any, task_ids: list[str],
                      leased: dict[str, list[Any]] | None = None) -> list[str]:
        """A line per task saying what it waits for (for a long-blocked get).
        ``leased``: the caller's tasks not seen here, task id -> [worker id (None:
        still queued in the caller), position on that worker, name]
        (``TaskLeases.describe``)."""
        out = []
        for task_id in task_ids:
            task = self.node.tasks.get(task_id)
            if task is None and leased and task_id in leased:
                out.append(self._describe_leased(task_id, *leased[task_id]))
                continue
            if task is None:
                out.append(f"task {task_id}: finished (its result is on its way)")
                continue
            head = f"task {task.name!r} ({task_id})"
            if task.state == "WAITING":
                missing = [d for d in task.deps if not self.node.objects[d].ready]
                out.append(f"{head}: waiting for {len(missing)} argument(s) "
                           f"{missing[:5]} to be computed")
            elif task.state == "FORWARDED":
                peer = None if task.node is None else self.node.conns.get(task.node)
                out.append(f"{head}: forwarded to node {getattr(peer, 'node_id', '?')}")
            elif task.state == "QUEUED":
                out.append(f"{head}: queued for resources {task.demand}; available now "
                           f"{self.node.pool.available()} of {self.node.pool.total}")
            elif task.actor_id is not None:
                actor = self.node.actors.get(task.actor_id)
                pid = actor.worker.pid if actor and actor.worker else None
                where = "running" if task.state == "ASSIGNED" else "queued"
                out.append(f"{head}: {where} on actor {task.actor_id} (pid {pid}, state "
                           f"{actor.state if actor else '?'})")
            elif task.id in self.node.core.tasks and task.worker is not None:
                pos = self.node.core.position(task.id)
                where = "running" if pos == 0 else f"queued behind {pos} task(s)"
                out.append(f"{head}: {where} on worker pid {self._worker_pid(task)}")
            else:
                out.append(f"{head}: {task.state.lower()}")
        return out

    def _describe_leased(self, task_id: str, worker_id: str | None, position: int,
                         name: str) -> str:
        head = f"task {name!r} ({task_id})"
        if worker_id is None:
            return f"{head}: queued in its caller for a leased worker ({position} ahead)"
        where = f"worker pid {self._pid(worker_id)} (leased to its caller)"
        if position:
            return f"{head}: queued behind {position} task(s) on {where}"
        running = self.node.leases.running.get(worker_id)
        if running is not None and running.task_id == task_id:
            return f"{head}: running on {where}"
        return f"{head}: sent to {where}, starting"

    def call_list(self, conn: Any, kind: str) -> list[dict[str, Any]]:
        """This node's rows for ``fedexec list nodes|tasks|actors|objects`` (the
        cluster's: GATHER, see ``state.list_state``)."""
        if kind == "nodes":
            return self.call_nodes(conn)
        if kind in ("task_counts", "node_events"):
            return self.node.event_stream.head_rows(kind)
        if kind == "tasks":
            return self.node.event_stream.head_rows(kind) + [{"task_id": t.id, "name": t.name, "state": t.state,
                     "job_id": self.node._job_of(t.payload) if not t.actor_id else
                     self.node._job_of([self.node.actors[t.actor_id].spec.get("runtime_env")])
                     if t.actor_id in self.node.actors else "",
                     "actor_id": t.actor_id or "",
                     "worker_pid": self._worker_pid(t)}
                    for t in self.node.tasks.values()] + self.node.leases.rows(self._pid)
        if kind == "actors":
            return self.node.event_stream.head_rows(kind) + [{"actor_id": a.id, "class": a.spec.get("class_name"), "name": a.name or "",
                     "job_id": self.node._job_of([a.spec.get("runtime_env")]),
                     "namespace": a.namespace, "state": a.state,
                     "pid": a.worker.pid if a.worker is not None else None,
                     "restarts": a.restarts_used}
                    for a in self.node.actors.values()] + self.node.pending.list_rows()
        if kind == "objects":
            where: dict[int, str] = {Kind.INLINE: "inline", Kind.SHM: "shared memory",
                                     Kind.ERROR: "error", Kind.FAILED: "failed"}
            return [{"object_id": o.id, "ready": o.ready,
                     "where": "pending" if not o.ready else f"node {o.payload[0]}"
                     if o.kind == Kind.REMOTE else where.get(o.kind, "?"),
                     "size": o.size, "holders": len(o.holders), "pins": o.pins}
                    for o in self.node.objects.values()]
        if kind == "placement_groups":
            return self.node.event_stream.head_rows(kind) + self.node.placement.rows()
        if kind == "metrics":
            return self.node.metrics.rows() + [h.row() for h in self.node.latency] + [
                {"name": "fedexec_tasks_run", "kind": "counter", "tags": {"outcome": k},
                 "description": "tasks that ran to an end on a worker, by outcome",
                 "updated": 0.0, "value": float(n)} for k, n in self.node.ran.items()]
        raise ValueError(f"cannot list {kind!r}; choose nodes, tasks, actors, objects, "
                         "placement_groups, metrics, task_counts or node_events")

    def call_info(self, conn: Any) -> dict[str, Any]:
        # No job id here: a driver's is its own (cluster.driver_job_id), one per
        # process and cluster, and travels with its work in the runtime_env.
        return {"node_id": self.node.node_id, "store_dir": self.node.config["store_dir"],
                "pid": os.getpid(), "address": self.node.tcp_address, "socket": self.node.socket_path,
                "started": self.node.started, "head_id": self.node.head_id}

    def _pid(self, worker_id: str) -> int | None:
        worker = self.node.workers.get(worker_id)
        return worker.pid if worker is not None else None

    def _worker_pid(self, task: _Task) -> int | None:
        """The pid of the worker ``task`` was given to (None: none)."""
        worker = self.node.workers.get(task.worker or "")  # (the core's worker id; None: none)
        return worker.pid if worker is not None else None
