"""The node manager's side of caller leases (the caller's is ``leases.py``).

A local driver asks for a worker for one resource shape (``Call.LEASE``); the core
decides (``LeaseRequested`` -> ``LeaseGranted`` / ``LeaseDenied``: only an idle
worker, only while nothing is queued, only on a node no other can join: one not
listening on TCP, the embedded runtime's) and this
desk answers with the worker's socket and the caller's connection id. The caller's
tasks then never reach this process; what does::

    caller ── REQUEST LEASE ──▶ NM ──REPLY [worker, path, cid]──▶ caller
    NM ── LEASE_RECALL ──▶ caller          (the core's RecallLease: work waits)
    caller ── LEASE_RETURN ──▶ NM          (idle, recalled, or closing; or
                                            its link closed: the worker is killed)
    worker ── LEASE_PUT [cid, results] ──▶ NM   results the caller will hold that the
                                                 NM must know first: in the store
                                                 (SHM), or holding refs (pinned)
    caller ── PROMISE [ids] ──▶ NM         a pending result of a leased task is about
                                            to be referenced elsewhere: a PENDING
                                            object the caller holds; its PUT (the
                                            value or the error) completes it
    worker ── LEASE_RUNNING ──▶ NM         the leased task it runs (once it ran
                                            _REPORT_AFTER_S, see worker.py; None when
                                            it ends): ``running``, which the memory
                                            monitor (processes.py) and the lists see
    worker ── LEASE_ENDED ──▶ NM           leased tasks that ended (batched): the
                                            event log, ``fedexec_tasks_run``, the
                                            run-time histogram
    caller ── LEASE_BACKLOG ──▶ NM         its tasks waiting for its leases, per
                                            shape (``backlog``): counted as queued
                                            here (STATS ``queued_shapes``, the
                                            autoscaler's demand, the reports)
    caller ── REQUEST LEASE_LOST ──▶ NM    its link to a leased worker closed: was
                                            it killed here (OOM: ``killed``)? then
                                            its task fails with OutOfMemoryError

State: ``paths`` (worker -> its socket), ``running`` (worker -> the leased task
it said it runs), ``killed`` (worker -> the error its leased task fails with, kept
until its caller asks, the newest _MAX_KILLED), ``backlog`` (caller -> its last
LEASE_BACKLOG), ``dropped`` (a driver's DECREFs
of objects unknown here: a LEASE_PUT they overtook), ``promised``, ``children``.

A caller's connection closing returns its leases and fails its promises
(``OBJECT_LOST``: nobody will complete them). A task a leased task submits names
it (SUBMIT's 11th field), so a recursive cancel of that one reaches its children.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from .core.events import (
    LeaseDenied,
    LeaseGranted,
    LeaseRequested,
    LeaseReturned,
    LeasesRecalled,
    RecallLease,
)
from .protocol import ErrorKind, Kind, Op

if TYPE_CHECKING:
    from .node import NodeManager

__all__ = ["LeaseDesk", "LeasedTask"]

_MAX_PARENTS = 10_000
_MAX_KILLED = 1_000
_MAX_DROPPED = 10_000


class LeasedTask(NamedTuple):
    """A leased task a worker said it runs (LEASE_RUNNING)."""

    task_id: str
    name: str
    retriable: bool  # a retry is left (its caller retries it through the hub)
    caller: int  # the caller's connection id
    started: float  # when the node heard of it (monotonic)


class LeaseDesk:
    """See the module docstring; ``nm`` is the node manager it serves."""

    def __init__(self, nm: NodeManager):
        self.nm = nm
        #: worker id -> the path of the socket it listens on (said in its HELLO).
        self.paths: dict[str, str] = {}
        #: obj ids promised per caller connection (failed if it closes first).
        self.promised: dict[int, set[str]] = {}
        #: Tasks submitted by a caller's leased task (unknown here), for a recursive
        #: cancel of it: the newest _MAX_PARENTS such parents.
        self.children: collections.OrderedDict[str, list[str]] = collections.OrderedDict()
        #: worker id -> the leased task it runs (it said so: LEASE_RUNNING).
        self.running: dict[str, LeasedTask] = {}
        #: (caller, obj id) -> True: DECREFs of objects unknown here (see on_put).
        self.dropped: collections.OrderedDict[tuple[int, str], bool] = \
            collections.OrderedDict()
        #: worker id -> [ErrorKind, message]: its leased task's error, it being killed
        #: here (the memory monitor), until its caller asks (LEASE_LOST).
        self.killed: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        self.backlog: dict[int, list[list[Any]]] = {}  # caller -> [[demand, count]...]
        self.lent = False  # a lease was granted since the last ``not_alone``

    # ----------------------------------------------------------- requests
    def request(self, conn: Any, demand: dict[str, float], req_id: int) -> Any:
        """``Call.LEASE``: ``[worker id, path, conn id]``; else ``"full"`` (the demand
        does not fit now) or None (use the hub), see the core's ``LeaseDenied``."""
        nm = self.nm
        if getattr(conn, "peer", None) is not None or conn.remote or conn.role != "driver" \
                or nm.tcp_address or len(nm.members.nodes) > 1 \
                or any(k.startswith("GPU") for k in demand):
            return None
        answer: Any = None
        for action in nm.core.handle(LeaseRequested(conn.id, dict(demand), req_id)):
            if isinstance(action, LeaseGranted):
                path = self.paths.get(action.worker_id)
                if path is None:  # it cannot take callers: give it straight back
                    nm._run(nm.core.handle(LeaseReturned(action.worker_id, conn.id)))
                    nm._dirty = True
                    continue
                answer = [action.worker_id, path, conn.id]
                self.lent = True
            elif isinstance(action, LeaseDenied):
                answer = "full" if action.full else None
            else:
                nm._run([action])
        return answer

    def not_alone(self) -> None:
        """The node has company now: every lease is recalled (its caller hands back
        what waits there and returns it), so that work can go to other nodes; no
        new one is granted while it has (``request``). (Unreachable while leases
        are lent only by nodes not listening on TCP; kept for when cluster nodes
        lend them again, see leases.py.)"""
        self.lent = False
        self.nm._run(self.nm.core.handle(LeasesRecalled()))

    def recall(self, a: RecallLease) -> None:
        """Execute the core's :class:`RecallLease`."""
        if a.caller in self.nm.conns:
            self.nm._send(a.caller, [Op.LEASE_RECALL, a.worker_id])

    def on_return(self, conn: Any, msg: list[Any]) -> None:
        """LEASE_RETURN [op, worker_id, broken]. ``broken``: the caller's link to
        the worker closed (or never opened), so it is dead or lost to us whatever
        this loop has seen of it so far: it is killed, never lent or given work
        again (its death, seen here as any worker's, frees what it held). Made
        idle instead, a task could go to a worker this loop had not seen die yet."""
        worker_id = msg[1]
        task = self.running.get(worker_id)
        if task is not None and task.caller == conn.id:
            del self.running[worker_id]
        nm = self.nm
        if len(msg) > 2 and msg[2]:
            worker = nm.workers.get(worker_id)
            if worker is not None and worker_id in nm.core.caller_leases(conn.id):
                nm.processes.kill(worker)
            return
        nm._run(nm.core.handle(LeaseReturned(worker_id, conn.id)))
        nm._dirty = True

    def on_backlog(self, conn: Any, msg: list[Any]) -> None:
        """LEASE_BACKLOG [op, [[demand, count]...]]: the caller's last word replaces
        its earlier one (an empty list: none)."""
        rows = [[dict(d), int(n)] for d, n in msg[1] if int(n) > 0]
        if rows:
            self.backlog[conn.id] = rows
        else:
            self.backlog.pop(conn.id, None)

    def queued_shapes(self) -> list[tuple[dict[str, float], int]]:
        """The callers' backlogs, summed per shape: tasks that wait for a worker here
        as the queued ones do, on their caller's side."""
        sums: dict[tuple[tuple[str, float], ...], int] = {}
        for rows in self.backlog.values():
            for demand, n in rows:
                key = tuple(sorted(demand.items()))
                sums[key] = sums.get(key, 0) + n
        return [(dict(k), n) for k, n in sums.items()]

    def caller_gone(self, cid: int) -> None:
        """A caller's connection closed: its leases go back, its promises fail."""
        nm = self.nm
        self.backlog.pop(cid, None)
        for wid in [w for w, t in self.running.items() if t.caller == cid]:
            del self.running[wid]
        for wid in nm.core.caller_leases(cid):
            nm._run(nm.core.handle(LeaseReturned(wid, cid)))
            nm._dirty = True
        for key in [k for k in self.dropped if k[0] == cid]:
            del self.dropped[key]
        for oid in self.promised.pop(cid, ()):
            obj = nm.objects.get(oid)
            if obj is not None and not obj.ready:
                nm._set_object(obj, [oid, Kind.FAILED, ErrorKind.OBJECT_LOST,
                                     f"object {oid} is lost: the process that owned it "
                                     "exited before it was computed"])

    def child(self, parent: str, task_id: str) -> None:
        """A leased task ``parent`` submitted ``task_id``."""
        kids = self.children.get(parent)
        if kids is None:
            kids = self.children[parent] = []
            while len(self.children) > _MAX_PARENTS:
                self.children.popitem(last=False)
        kids.append(task_id)

    # ------------------------------------------------------------ objects
    def on_promise(self, conn: Any, msg: list[Any]) -> None:
        """PROMISE [op, [obj_id...]]: pending objects ``conn`` holds and completes."""
        nm = self.nm
        mine = self.promised.setdefault(conn.id, set())
        for oid in msg[1]:
            obj = nm.objects.get(oid)
            if obj is None:
                obj = nm._new_object(oid, conn.id)
                nm.objects[oid] = obj
                mine.add(oid)
            obj.holders.add(conn.id)
            conn.held.add(oid)

    def fulfilled(self, cid: int, oid: str) -> None:
        """A PUT completed a promise of ``cid``'s."""
        mine = self.promised.get(cid)
        if mine is not None:
            mine.discard(oid)

    def on_put(self, conn: Any, msg: list[Any]) -> None:
        """LEASE_PUT [op, caller cid, [result...]] from a leased worker."""
        nm = self.nm
        _, cid, results = msg
        caller = nm.conns.get(cid)
        for r in results:
            if r[1] == Kind.SHM:
                nm.store.seal(r[0])
                conn.creating.discard(r[0])
            obj = nm.objects.get(r[0])
            if caller is None or caller.worker is not None or \
                    (obj is None and self.dropped.pop((cid, r[0]), False)):
                # the caller is gone, or it dropped its ref already (its DECREF
                # overtook this message: another connection)
                if r[1] == Kind.SHM:
                    nm.store.free(r[0])
                continue
            if obj is not None and not obj.ready:  # promised: held as PROMISE said, if
                self.fulfilled(cid, r[0])           # not dropped since
            else:
                obj = nm._new_object(r[0], None)
                nm.objects[r[0]] = obj
                obj.holders.add(cid)
                caller.held.add(r[0])
            nm._set_object(obj, r)

    def decref_unknown(self, cid: int, oid: str) -> None:
        """A driver dropped ``oid``, unknown here: a leased task's result whose
        LEASE_PUT its DECREF overtook? Remembered (the newest _MAX_DROPPED), so that
        LEASE_PUT does not make the caller hold it again."""
        self.dropped[(cid, oid)] = True
        while len(self.dropped) > _MAX_DROPPED:
            self.dropped.popitem(last=False)

    def worker_hello(self, worker_id: str, info: dict[str, Any]) -> None:
        path = info.get("listen")
        if isinstance(path, str):
            self.paths[worker_id] = path

    def worker_gone(self, worker_id: str) -> None:
        self.paths.pop(worker_id, None)
        self.running.pop(worker_id, None)

    # ------------------------------------------------ what leased workers run
    def on_running(self, conn: Any, msg: list[Any]) -> None:
        """LEASE_RUNNING [op, task_id | None, name, retriable, caller] from a worker."""
        worker = conn.worker
        if worker is None:
            return
        _, task_id, name, retriable, caller = msg
        if task_id is None:
            self.running.pop(worker.id, None)
        elif self.nm.core.workers.get(worker.id) is not None and \
                self.nm.core.workers[worker.id].caller == caller:
            self.running[worker.id] = LeasedTask(task_id, name, bool(retriable), caller,
                                                 time.monotonic())

    def on_ended(self, conn: Any, msg: list[Any]) -> None:
        """LEASE_ENDED [op, [[task_id, name, failed, job_id, seconds]...]] from a
        worker: leased tasks that ended there, counted, timed (the run-time
        histogram; not the scheduling one: their wait was the caller's) and logged
        as the hub's are."""
        worker = conn.worker
        pid = worker.pid if worker is not None else None
        nm = self.nm
        for task_id, name, failed, job, seconds in msg[1]:
            nm.ran["FAILED" if failed else "FINISHED"] += 1
            nm.latency[1].observe(max(0.0, float(seconds)))
            nm.event_stream.task_row(task_id, name, bool(failed),
                                     job or str(nm.config.get("job_id", "")), "", pid)

    def oom_killed(self, worker_id: str, kind: ErrorKind, message: str) -> LeasedTask | None:
        """The memory monitor kills ``worker_id``: if it runs a leased task, keep the
        error that task fails with for its caller (LEASE_LOST) and return it."""
        task = self.running.get(worker_id)
        if task is not None:
            self.killed[worker_id] = [kind, message]
            while len(self.killed) > _MAX_KILLED:
                self.killed.popitem(last=False)
        return task

    def lost(self, worker_id: str) -> list[Any] | None:
        """``Call.LEASE_LOST``: why a leased worker died if it was killed here."""
        return self.killed.pop(worker_id, None)

    def rows(self, pid_of: Any) -> list[dict[str, Any]]:
        """A row per leased task running (for ``list tasks``; ASSIGNED, as a hub
        task that runs)."""
        return [{"task_id": t.task_id, "name": t.name, "state": "ASSIGNED", "job_id": "",
                 "actor_id": "", "leased": True, "worker_pid": pid_of(wid)}
                for wid, t in self.running.items()]
