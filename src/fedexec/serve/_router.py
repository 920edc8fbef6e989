"""Routing requests of one deployment to its replicas (runs on the serve loop).

::

    proxy / handle ──▶ Router.send(frame) ── p2c pick ──▶ _Conn ──frames──▶ replica
                         │ no replica below max_ongoing_requests:
                         └─ waits in ``waiters`` (FIFO) until one frees or appears

State per router: ``conns`` (replica id → authenticated connection, with its
``ongoing`` count), ``dead`` (replica ids whose connection broke: never used
again), ``waiters`` (requests queued here, not yet written to any replica).
A request is *started* once the replica says so (a STARTED frame, or any part
of its answer): written but not started, it may sit in the socket or in the
replica's own queue. When a replica's connection breaks, its started requests
fail with ReplicaDiedError and the others are sent again to another replica
(at most ``MAX_TRIES`` replicas in all). Load (ongoing + queued) is what the
autoscaler reads. A request frame over ``MAX_FRAME`` raises FrameTooLargeError
to its sender before it takes a slot; a frame announced over it by a replica
(limits set differently) ends that connection, and its started requests fail
with that error.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import random
from collections.abc import Callable
from typing import Any

from ._wire import MAC, MAGIC, NONCE, FrameReader, Op, Writer, mac, new_nonce

_ENDS = (Op.RESPONSE, Op.RESULT, Op.ERROR, Op.END)
_STREAMS = (Op.START, Op.ITEM)
MAX_TRIES = 3


class Pending:
    """One request in flight: ``first`` resolves with its first response frame;
    the frames of a streamed response after it arrive in ``rest``."""

    __slots__ = ("conn", "first", "frame", "held", "rest", "started", "tries")

    def __init__(self, loop: asyncio.AbstractEventLoop, frame: list[Any]) -> None:
        self.first: asyncio.Future[list[Any]] = loop.create_future()
        self.rest: asyncio.Queue[list[Any]] | None = None
        self.frame = frame  # the request, kept to send it again while not started
        self.started = False
        self.tries = 0
        self.conn: _Conn | None = None  # where it was written last
        self.held: asyncio.Future[bool] | None = None  # a HOLD's answer (see _chain)

    def deliver(self, frame: list[Any]) -> bool:
        """Take a response frame; True when the response is complete."""
        self.started = True
        if self.rest is None:
            if frame[0] in _STREAMS:
                self.rest = asyncio.Queue()
            if not self.first.done():
                self.first.set_result(frame)
            return self.rest is None
        self.rest.put_nowait(frame)
        return frame[0] in _ENDS

    def fail(self, exc: BaseException) -> None:
        if not self.first.done():
            self.first.set_exception(exc)
        elif self.rest is not None:
            self.rest.put_nowait([Op.ERROR, 0, None, str(exc)])


class _Conn(asyncio.Protocol):
    """The authenticated connection to one replica."""

    def __init__(self, router: Router, replica_id: str, secret: bytes) -> None:
        self.router, self.replica_id, self.secret = router, replica_id, secret
        self.ongoing = 0
        self.inflight: dict[int, Pending] = {}
        self.reader = FrameReader()
        self.buf = b""
        self.state = "greeting"  # -> "proof" -> "ready" -> "closed"
        self.nonce_c = new_nonce()
        self.transport: Any = None
        self.writer: Writer | None = None
        self.error: Exception | None = None  # why the connection was given up, if a frame
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.state in ("greeting", "proof"):
            self._handshake(data)
            return
        inflight = self.inflight
        try:
            frames = self.reader.feed(data)
        except ValueError as exc:  # a frame over MAX_FRAME: the stream cannot be read on
            self.error = exc
            self.transport.close()
            return
        for frame in frames:
            if frame[0] >= Op.STARTED:  # the small control frames
                self._control(frame)
                continue
            pending = inflight.get(frame[1])
            if pending is not None and pending.deliver(frame):
                del self.inflight[frame[1]]
                self.ongoing -= 1
                if self.state == "closing" and not self.inflight:
                    self.transport.close()
                self.router.freed()

    def _control(self, frame: list[Any]) -> None:
        if frame[0] == Op.STARTED:
            for rid in frame[2]:
                started = self.inflight.get(rid)
                if started is not None:
                    started.started = True
        elif frame[0] == Op.HOLDING:
            pending = self.inflight.get(frame[1])
            if pending is not None and pending.held is not None and not pending.held.done():
                pending.held.set_result(bool(frame[2]))

    def _handshake(self, data: bytes) -> None:
        self.buf += data
        if self.state == "greeting" and len(self.buf) >= len(MAGIC) + NONCE:
            if self.buf[:len(MAGIC)] != MAGIC:
                self.transport.close()
                return
            nonce_s = self.buf[len(MAGIC):len(MAGIC) + NONCE]
            self.buf = self.buf[len(MAGIC) + NONCE:]
            self.transport.write(mac(self.secret, b"client", nonce_s) + self.nonce_c)
            self.state = "proof"
        if self.state == "proof" and len(self.buf) >= MAC:
            if not hmac.compare_digest(self.buf[:MAC], mac(self.secret, b"server", self.nonce_c)):
                self.transport.close()
                return
            self.state = "ready"
            loop = asyncio.get_running_loop()
            self.writer = Writer(self.transport, loop.call_soon)
            if not self.ready.done():
                self.ready.set_result(True)

    def send(self, pending: Pending) -> None:
        """Write ``pending``'s frame (FrameTooLargeError: nothing written or counted)."""
        assert self.writer is not None
        self.writer.send(pending.frame)
        self.ongoing += 1
        pending.tries += 1
        pending.conn = self
        self.inflight[pending.frame[1]] = pending

    def connection_lost(self, exc: BaseException | None) -> None:
        self.state = "closed"
        if not self.ready.done():
            self.ready.set_result(False)
        self.router.lost(self)


class Router:
    """Routes one deployment's requests (see the module docstring)."""

    def __init__(self, key: str, secret: bytes, on_dead: Callable[[str], None]) -> None:
        self.key, self.secret, self.on_dead = key, secret, on_dead
        self.max_ongoing = 100
        self.conns: dict[str, _Conn] = {}
        self.connecting: set[str] = set()
        self.dead: set[str] = set()
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.known = 0  # replicas the controller lists (connected or not)
        self.wanted: set[str] = set()
        self.resending: set[asyncio.Task[None]] = set()
        self._rid = 0

    # ----------------------------------------------------------- replica set
    def update(self, replicas: list[dict[str, Any]], max_ongoing: int) -> None:
        """The controller's current replica list for this deployment."""
        self.max_ongoing = max_ongoing
        wanted = {r["replica_id"]: r for r in replicas if r["replica_id"] not in self.dead}
        self.known = len(wanted)
        self.wanted = set(wanted)
        for rid in list(self.conns):
            if rid not in wanted:  # removed: stop routing there; it drains what it has
                conn = self.conns.pop(rid)
                if not conn.inflight:
                    conn.transport.close()
                else:
                    conn.state = "closing"
        for rid, info in wanted.items():
            if rid not in self.conns and rid not in self.connecting:
                self.connecting.add(rid)
                asyncio.get_running_loop().create_task(self._connect(rid, info))
        self.freed()

    async def _connect(self, replica_id: str, info: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                lambda: _Conn(self, replica_id, self.secret), info["host"], info["port"])
            ok = await asyncio.wait_for(conn.ready, 10)
        except (OSError, asyncio.TimeoutError):
            ok = False
        finally:
            self.connecting.discard(replica_id)
        if not ok:
            self._mark_dead(replica_id)
            return
        if replica_id in self.dead or replica_id not in self.wanted:
            conn.transport.close()  # died, or was removed while we connected
            return
        self.conns[replica_id] = conn
        self.freed()

    def _mark_dead(self, replica_id: str) -> None:
        if replica_id not in self.dead:
            self.dead.add(replica_id)
            self.known = max(0, self.known - 1)
            self.on_dead(replica_id)

    def lost(self, conn: _Conn) -> None:
        """A replica's connection broke: its started requests fail, the others
        are sent again (see the module docstring)."""
        from .exceptions import ReplicaDiedError

        if self.conns.get(conn.replica_id) is conn:
            del self.conns[conn.replica_id]
            self._mark_dead(conn.replica_id)
        loop = asyncio.get_running_loop()
        for pending in conn.inflight.values():
            if pending.first.done() and not pending.started:
                continue  # the caller gave up on it
            if pending.started and conn.error is not None:
                pending.fail(conn.error)
            elif pending.started:
                pending.fail(ReplicaDiedError(
                    f"the replica {conn.replica_id} of {self.key} died while handling the "
                    "request; it had started, so it is not retried"))
            elif pending.tries >= MAX_TRIES:
                pending.fail(ReplicaDiedError(
                    f"{pending.tries} replicas of {self.key} died before the request could "
                    "start; check the deployment's logs for why its replicas die"))
            else:
                task = loop.create_task(self._resend(pending))
                self.resending.add(task)
                task.add_done_callback(self.resending.discard)
        conn.inflight.clear()
        self.freed()

    # ----------------------------------------------------------- requests
    def next_rid(self) -> int:
        self._rid += 1
        return self._rid

    @property
    def load(self) -> int:
        """Requests in flight from here plus those queued here."""
        return sum(c.ongoing for c in self.conns.values()) + len(self.waiters)

    def _choose(self) -> _Conn | None:
        conns = self.conns
        if not conns:
            return None
        limit = self.max_ongoing
        if len(conns) == 1:
            c = next(iter(conns.values()))
            return c if c.ongoing < limit else None
        a, b = random.sample(list(conns.values()), 2)
        if b.ongoing < a.ongoing:
            a, b = b, a
        if a.ongoing < limit:
            return a
        free = [c for c in conns.values() if c.ongoing < limit]
        return min(free, key=lambda c: c.ongoing) if free else None

    def try_send(self, frame: list[Any]) -> Pending | None:
        """Write ``frame`` now if a replica is below its limit and nobody queues."""
        conn = None if self.waiters else self._choose()
        if conn is None:
            return None
        pending = Pending(asyncio.get_running_loop(), frame)
        conn.send(pending)
        return pending

    async def send(self, frame: list[Any]) -> Pending:
        """Write ``frame`` (its rid from :meth:`next_rid`) to a replica, waiting
        in the queue while none is below its limit; the response's Pending.

        Raises:
            FrameTooLargeError: ``frame`` is over ``MAX_FRAME`` (nothing was sent).
        """
        pending = Pending(asyncio.get_running_loop(), frame)
        try:
            (await self._slot()).send(pending)
        finally:
            if self.waiters:
                self.freed()
        return pending

    async def connection(self, replica_id: str, timeout: float = 10.0) -> _Conn:
        """The connection to one given replica, once made.

        Raises:
            ReplicaDiedError: the replica is dead, gone, or unreachable.
        """
        from .exceptions import ReplicaDiedError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while replica_id not in self.conns:
            if replica_id in self.dead or loop.time() > deadline:
                raise ReplicaDiedError(f"the replica {replica_id} of {self.key} is gone; "
                                       "the value it held is lost, call again")
            await asyncio.sleep(0.01)
        return self.conns[replica_id]

    def direct(self, conn: _Conn, frame: list[Any]) -> Pending:
        """Write ``frame`` to ``conn`` now, outside the limits; never retried."""
        pending = Pending(asyncio.get_running_loop(), frame)
        pending.started = True
        conn.send(pending)
        return pending

    async def _resend(self, pending: Pending) -> None:
        conn = await self._slot()
        if not pending.first.done():  # else the caller gave up while it waited
            conn.send(pending)
        if self.waiters:
            self.freed()

    async def _slot(self) -> _Conn:
        """A replica below its limit, after those queued before."""
        conn = None if self.waiters else self._choose()
        while conn is None:
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self.waiters:
                    self.waiters.remove(fut)
            conn = self._choose()
            if conn is None and self.waiters:
                continue
        return conn

    def freed(self) -> None:
        """A slot may have opened: wake the oldest queued request."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
