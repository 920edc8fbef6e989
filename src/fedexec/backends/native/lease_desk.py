"""The node manager's side of caller leases (the caller's is ``leases.py``).

A local driver asks for a worker for one resource shape (``Call.LEASE``); the core
decides (``LeaseRequested`` -> ``LeaseGranted`` / ``LeaseDenied``: only an idle
worker, only while nothing is queued, only on a node alone in its cluster) and this
desk answers with the worker's socket and the caller's connection id. The caller's
tasks then never reach this process; what does::

    caller ── REQUEST LEASE ──▶ NM ──REPLY [worker, path, cid]──▶ caller
    NM ── LEASE_RECALL ──▶ caller          (the core's RecallLease: work waits)
    caller ── LEASE_RETURN ──▶ NM          (idle, recalled, or closing)
    worker ── LEASE_PUT [cid, results] ──▶ NM   results the caller will hold that the
                                                 NM must know first: in the store
                                                 (SHM), or holding refs (pinned)
    caller ── PROMISE [ids] ──▶ NM         a pending result of a leased task is about
                                            to be referenced elsewhere: a PENDING
                                            object the caller holds; its PUT (the
                                            value or the error) completes it

A caller's connection closing returns its leases and fails its promises
(``OBJECT_LOST``: nobody will complete them). A task a leased task submits names
it (SUBMIT's 11th field), so a recursive cancel of that one reaches its children.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from .core.events import LeaseDenied, LeaseGranted, LeaseRequested, LeaseReturned, RecallLease
from .protocol import ErrorKind, Kind, Op

if TYPE_CHECKING:
    from .node import NodeManager

__all__ = ["LeaseDesk"]

_MAX_PARENTS = 10_000


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

    # ----------------------------------------------------------- requests
    def request(self, conn: Any, demand: dict[str, float], req_id: int) -> Any:
        """``Call.LEASE``: ``[worker id, path, conn id]``; else ``"full"`` (the demand
        does not fit now) or None (use the hub), see the core's ``LeaseDenied``."""
        nm = self.nm
        if getattr(conn, "peer", None) is not None or conn.remote or conn.role != "driver" \
                or len(nm.members.nodes) > 1 or any(k.startswith("GPU") for k in demand):
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
            elif isinstance(action, LeaseDenied):
                answer = "full" if action.full else None
            else:
                nm._run([action])
        return answer

    def recall(self, a: RecallLease) -> None:
        """Execute the core's :class:`RecallLease`."""
        if a.caller in self.nm.conns:
            self.nm._send(a.caller, [Op.LEASE_RECALL, a.worker_id])

    def on_return(self, conn: Any, msg: list[Any]) -> None:
        """LEASE_RETURN [op, worker_id]."""
        self.nm._run(self.nm.core.handle(LeaseReturned(msg[1], conn.id)))
        self.nm._dirty = True

    def caller_gone(self, cid: int) -> None:
        """A caller's connection closed: its leases go back, its promises fail."""
        nm = self.nm
        for wid in nm.core.caller_leases(cid):
            nm._run(nm.core.handle(LeaseReturned(wid, cid)))
            nm._dirty = True
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
            if caller is None or caller.worker is not None:  # the caller is gone
                if r[1] == Kind.SHM:
                    nm.store.free(r[0])
                continue
            obj = nm.objects.get(r[0])
            if obj is None or obj.ready:
                obj = nm._new_object(r[0], None)
                nm.objects[r[0]] = obj
            obj.holders.add(cid)
            caller.held.add(r[0])
            self.fulfilled(cid, r[0])
            nm._set_object(obj, r)

    def worker_hello(self, worker_id: str, info: dict[str, Any]) -> None:
        path = info.get("listen")
        if isinstance(path, str):
            self.paths[worker_id] = path

    def worker_gone(self, worker_id: str) -> None:
        self.paths.pop(worker_id, None)
