"""Objects' bytes between nodes: FETCH (a local client wants the bytes of an object
held elsewhere), PULL (a node asks this one for an object's bytes, served in CHUNKs,
a few MiB per loop turn, never past a backlog per link) and the CHUNKs coming
back, written into a temporary file and sealed into the store. A component of
:class:`~.federation.Federation` (``federation.transfer``), over
:class:`TransfersNode`, what it uses of the node (the objects table, the store,
sending), and the federation for the peers, the membership and losing an object.

State: ``pulls`` {obj id: callbacks waiting for its bytes here} (concurrent pulls
of one object merge), ``incoming`` {obj id: _Incoming, the file being filled},
``serving`` (the PULLs to answer, in order). Counters go to the federation's
``transfers``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .protocol import ErrorKind, Kind, Op
from .records import _Obj, _Peer

if TYPE_CHECKING:
    from .federation import Federation
    from .store import StoreManager

__all__ = ["Transfers", "TransfersNode"]

class _Incoming:
    """An object being pulled here: a temporary file filled chunk by chunk."""

    __slots__ = ("fd", "got", "path", "source", "tmp", "total")

    def __init__(self, fd: int, path: str, tmp: str, total: int, source: str):
        self.fd, self.path, self.tmp, self.total, self.source = fd, path, tmp, total, source
        self.got = 0


class _Fetch:
    """A local client waiting for an object's bytes (FETCH)."""

    __slots__ = ("cid", "missing")

    def __init__(self, cid: int):
        self.cid = cid
        self.missing = 1



_CHUNK = 4 << 20            # bytes per CHUNK message
_SERVE_PER_TURN = 32 << 20  # bytes of pulls served per loop turn (others wait their turn)
_LINK_BACKLOG = 64 << 20    # stop serving a peer while this much is unsent to it


class TransfersNode(Protocol):
    """What :class:`Transfers` uses of the node manager."""

    @property
    def node_id(self) -> str: ...
    @property
    def objects(self) -> dict[str, _Obj]: ...
    @property
    def conns(self) -> dict[Any, Any]: ...
    @property
    def store(self) -> StoreManager: ...

    def _send(self, cid: int | None, msg: list[Any]) -> None: ...
    def _pin(self, oid: str) -> None: ...
    def _unpin(self, oid: str) -> None: ...
    def _maybe_free(self, obj: _Obj) -> None: ...
    def _lost(self, oid: str) -> _Obj: ...
    def _deliverable(self, obj: _Obj) -> list[Any]: ...


class Transfers:
    """Object transfer between nodes (see the module docstring)."""

    def __init__(self, node: TransfersNode, federation: Federation) -> None:
        self.node = node
        self.federation = federation
        self.pulls: dict[str, list[Any]] = {}
        self.incoming: dict[str, _Incoming] = {}
        self.serving: collections.deque[list[Any]] = collections.deque()

    def _on_fetch(self, conn: Any, msg: list[Any]) -> None:
        """A local client wants objects' bytes here (pulled or restored if needed)."""
        for oid in msg[1]:
            obj = self.node.objects.get(oid)
            if obj is None:
                obj = self.node._lost(oid)
            self._fetch_ready(conn.id, obj)

    def _fetch_ready(self, cid: int, obj: _Obj) -> None:
        if not obj.ready:  # it was lost while being pulled, and is being made again
            obj.waiters.append((_Fetch(cid), lambda f, o=obj: self._fetch_ready(f.cid, o)))
            return
        if obj.kind == Kind.REMOTE:
            self.localize(obj, lambda: self._fetch_ready(cid, obj))
            return
        msg = self.node._deliverable(obj)
        conn = self.node.conns.get(cid)
        if msg[2] == Kind.SHM and getattr(conn, "remote", False):
            msg = self._inline_message(obj, msg)
        self.node._send(cid, msg)

    def _inline_message(self, obj: _Obj, msg: list[Any]) -> list[Any]:
        """An SHM object's bytes as an INLINE message, for a driver on another machine
        (the file is read, never unpickled)."""
        from .store import read_object

        try:
            data, buffers = read_object(msg[3])
            return [Op.OBJECT, obj.id, Kind.INLINE, bytes(data), [bytes(b) for b in buffers],
                    list(obj.contained)]
        except Exception as exc:
            return [Op.OBJECT, obj.id, Kind.FAILED, ErrorKind.OBJECT_LOST,
                    f"cannot read object {obj.id}: {exc}"]

    def localize(self, obj: _Obj, then: Any) -> None:
        """Pull ``obj``'s bytes here (once, however many ask); then ``then()``."""
        waiting = self.pulls.get(obj.id)
        if waiting is not None:
            waiting.append(then)
            return
        node_id = obj.payload[0]
        if not self.federation.members.is_alive(node_id):
            self.pulls[obj.id] = [then]
            self.federation.lose(obj, ErrorKind.OBJECT_LOST,
                       f"object {obj.id} was on node {node_id}, which is dead")
            return
        self.pulls[obj.id] = [then]
        self.federation.transfers["pulls"] += 1
        peer = self.federation.peer(node_id)
        self.node._send(peer.id, [Op.PULL, obj.id])

    def _on_pull(self, conn: Any, msg: list[Any]) -> None:
        """A peer wants an object's bytes: queue it to be served in chunks."""
        oid = msg[1]
        obj = self.node.objects.get(oid)
        if obj is None or not obj.ready or obj.kind != Kind.SHM:
            where = "freed" if obj is None else "not held in this node's store"
            self.node._send(conn.id, [Op.CHUNK, oid, -1, 0, f"object {oid} is {where}", []])
            return
        try:
            path = self.node.store.ensure_local(oid)
            self.node.store.pin(oid)
        except Exception as exc:
            self.node._send(conn.id, [Op.CHUNK, oid, -1, 0, str(exc), []])
            return
        self.node._pin(oid)
        size = os.path.getsize(path)
        self.federation.transfers["served"] += 1
        self.federation.transfers["served_bytes"] += size
        self.serving.append([conn.id, oid, path, 0, size, list(obj.contained)])

    def serve_pulls(self) -> None:
        """Send up to ``_SERVE_PER_TURN`` bytes of pulled objects (round robin)."""
        budget = _SERVE_PER_TURN
        rounds = len(self.serving)
        while self.serving and budget > 0 and rounds > 0:
            rounds -= 1
            job = self.serving.popleft()
            cid, oid, path, offset, total, contained = job
            peer = self.node.conns.get(cid)
            link = peer.link if isinstance(peer, _Peer) else None
            if peer is None:
                self._served(oid)
                continue
            if link is not None and len(link.wbuf) - link.woff > _LINK_BACKLOG:
                self.serving.append(job)
                continue
            try:
                with open(path, "rb") as f:
                    n = min(_CHUNK, total - offset, budget) if total else 0
                    data = os.pread(f.fileno(), n, offset) if n else b""
            except OSError as exc:
                self.node._send(cid, [Op.CHUNK, oid, -1, 0, f"cannot read object {oid}: {exc}", []])
                self._served(oid)
                continue
            self.node._send(cid, [Op.CHUNK, oid, offset, total, data, contained])
            budget -= max(1, len(data))
            job[3] = offset + len(data)
            if job[3] >= total or not data:
                self._served(oid)
            else:
                self.serving.append(job)

    def _served(self, oid: str) -> None:
        with contextlib.suppress(Exception):
            self.node.store.unpin(oid)
        self.node._unpin(oid)

    def _on_chunk(self, conn: Any, msg: list[Any]) -> None:
        _, oid, offset, total, data, _contained = msg
        obj = self.node.objects.get(oid)
        inc = self.incoming.get(oid)
        if offset < 0:
            if inc is not None:
                self._abort_incoming(inc)
            if obj is not None and obj.kind == Kind.REMOTE:
                self.federation.lose(obj, ErrorKind.OBJECT_LOST, f"pulling object {oid} failed: {data}")
            return
        if obj is None or obj.kind != Kind.REMOTE:
            if inc is not None:
                self._abort_incoming(inc)
            return
        if inc is None:
            try:
                path, staging = self.node.store.reserve_segment(oid, total)
            except Exception as exc:
                kind = ErrorKind.STORE_FULL if "full" in str(exc).lower() else \
                    ErrorKind.OBJECT_LOST
                self.federation.lose(obj, kind, f"cannot store pulled object {oid} here: {exc}")
                return
            tmp = staging or f"{path}.pull"  # a freed file to reuse, or a new one
            new = 0 if staging else os.O_CREAT | os.O_TRUNC
            fd = os.open(tmp, os.O_WRONLY | os.O_CLOEXEC | new, 0o600)
            os.ftruncate(fd, total)
            inc = self.incoming[oid] = _Incoming(fd, path, tmp, total,
                                                  getattr(conn, "node_id", ""))
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(inc.fd, view[done:], offset + done)
        inc.got += len(data)
        if inc.got < inc.total:
            return
        del self.incoming[oid]
        self.federation.transfers["pulled_bytes"] += inc.total
        os.close(inc.fd)
        os.rename(inc.tmp, inc.path)
        self.node.store.seal(oid)
        obj.kind = Kind.SHM
        obj.payload = [inc.path, inc.total, obj.payload[2] if len(obj.payload) > 2 else []]
        self.federation.lineage_release(obj)
        for then in self.pulls.pop(oid, []):
            then()
        self.node._maybe_free(obj)

    def _abort_incoming(self, inc: _Incoming) -> None:
        oid = next((k for k, v in self.incoming.items() if v is inc), None)
        if oid is not None:
            del self.incoming[oid]
            with contextlib.suppress(Exception):
                self.node.store.abort(oid)
        with contextlib.suppress(OSError):
            os.close(inc.fd)
        with contextlib.suppress(OSError):
            os.unlink(inc.tmp)

    #: The ops it handles, dispatched by the node's ``op_table``.
    OPS: dict[int, Callable[[Transfers, Any, list[Any]], None]] = {
        Op.FETCH: _on_fetch,
        Op.PULL: _on_pull,
        Op.CHUNK: _on_chunk,
    }

    def handlers(self) -> dict[int, Callable[[Any, list[Any]], None]]:
        """Its message handlers, by op, bound."""
        return {op: types.MethodType(fn, self) for op, fn in self.OPS.items()}
