"""Direct actor calls: a caller sends an actor's calls straight to the actor's worker,
which answers straight back; the node manager is off the call's path.

Data flow of one call (caller C, node manager NM, the actor's worker W; C and W on
one node)::

    C ── ACTOR_CALL(..., worker id) ──▶ NM   registers the call and its result ids
    C ── DIRECT_CALL ─────────────────▶ W    (a "caller" connection, token-checked)
    W ── DIRECT_DONE ─────────────────▶ NM   results, before the reply: the NM can
    W ── DIRECT_REPLY ────────────────▶ C    serve them to anyone (get, deps, wait)

Both messages to the NM are batched (a submit loop sends hundreds per frame) and
carry nothing the call waits for. A result over the inline limit goes to the store
as always and reaches the caller from the NM (DIRECT_REPLY leaves it out); so does
one holding refs the actor made (a put, a child task): the NM reads the messages
that made them before its DIRECT_DONE, and the caller's first use of them asks it.

Order. One connection per (caller, actor) is FIFO into the actor's queue. Calls a
caller cannot send directly go through the NM as before ("hub" calls): a call with
ObjectRef arguments (the NM resolves them) or refs nested in them (the worker may
get one before the NM read the PUT that made it), a call made before the caller knows
the worker's address, after its link broke, or to an actor on another node. A
caller sends directly only while none of its hub calls to that actor is
unfinished, and the NM holds a hub call back while that caller's direct calls to
the actor are unfinished, so a later call never overtakes an earlier one.

Failures. The NM knows every direct call (it registered it), so when the worker
dies it retries them (``max_task_retries``) or fails them with ``ActorDiedError``
as before, and completes the caller's refs itself; the caller, when its link
closes, subscribes to the results still missing, in case the worker died between
DIRECT_DONE and DIRECT_REPLY. A registration that reaches the NM after the worker
it names is gone is treated as a call that was running there; one that arrives
after its DIRECT_DONE is completed from that. (Known window: a worker killed after
DIRECT_REPLY but before the NM read DIRECT_DONE leaves the caller with the value
and the NM retrying the call or failing its result.)

The same listening socket (every worker's, when leases are on) takes a driver's
leased tasks (LEASE_EXEC / LEASE_DONE, see leases.py): one listener, one poller.

Connections are Unix sockets in the node's session directory (never TCP: a caller
on another machine uses the hub), authenticated with the cluster token
(``protocol``'s handshake, role ``"caller"``) and framed by ``fedexec._framing``.

Threads and lifetimes. One ``Poller`` thread per process reads all its links (a
driver calling 500 actors holds one thread for them) and, in an actor's worker,
the listening socket and every caller's connection, handshakes included. A
caller's link goes when its actor's worker goes, when the actor is dead or killed
from here, when the backend closes, or holding nothing (the flusher's sweep); an
actor's worker removes its socket file when it exits cleanly, the node manager
when the worker is gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._ids import task_of
from ...exceptions import ProtocolError
from .channel import Channel
from .poller import Poller
from .protocol import ROLES, Call, ClientHandshake, Op, ServerHandshake

if TYPE_CHECKING:
    from ...refs import ObjectRef
    from .client import NativeBackend

__all__ = ["ActorLinks", "CallListener", "Outboxes", "dial"]

_ASK_AGAIN_S = 0.05   # a caller asks again for an actor's address after this long
_NOT_THERE_S = 0.1  # ... this long after it was not there (starting, or on another node)
_CONNECT_FAILED_S = 5.0  # ... or this long after connecting to it failed
_CALLER_OPS = ROLES["caller"]


class Outboxes:
    """The direct channels with queued messages, flushed together (after the node
    manager's channel: what the NM must know goes first). Those queued with
    ``send_later`` (direct actor calls; a worker's replies) may also go before it
    (``flush_calls``, a driver about to wait); those ``mark``ed (leased tasks,
    which may read what the NM was just sent) never do."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: set[Channel] = set()
        self._after_nm: set[Channel] = set()

    def send_later(self, channel: Channel, msg: Any) -> bool:
        """Queue ``msg`` on ``channel``; True if a flush should be arranged."""
        if channel.send_later(msg):
            with self._lock:
                self._dirty.add(channel)
            return True
        return False

    def mark(self, channel: Channel) -> None:
        """``channel`` has messages queued (``Channel.enqueue``) that must follow the
        NM's: flush it with ``flush``, never ``flush_calls``."""
        with self._lock:
            self._after_nm.add(channel)

    def flush_calls(self) -> None:
        """Write what ``send_later`` queued (see the class docstring)."""
        if self._dirty:
            with self._lock:
                dirty, self._dirty = self._dirty, set()
            _flush_all(dirty)

    def flush(self) -> None:
        """Write everything queued."""
        self.flush_calls()
        if self._after_nm:
            with self._lock:
                dirty, self._after_nm = self._after_nm, set()
            _flush_all(dirty)


def _flush_all(channels: set[Channel]) -> None:
    for channel in channels:
        channel.flush()


class _Link:
    """A caller's state for one actor: its direct channel (if any) and its hub
    calls not finished yet."""

    __slots__ = ("asked", "asking", "channel", "dead", "hub_calls", "sent", "sticky",
                 "worker_id")

    def __init__(self) -> None:
        self.channel: Channel | None = None
        self.worker_id = ""
        self.hub_calls = 0
        self.sent: dict[str, list[str]] = {}  # task id -> result ids, not answered yet
        self.asking = False
        self.asked = 0.0  # when we may ask for the address again (monotonic)
        self.sticky = False  # a hub call we cannot track went out: hub from now on
        self.dead = False  # the node manager says the actor is dead


class _Polled:
    """A connection on a ``Poller``: its handshake (either side), then its channel.
    ``ready(sock)`` gets the authenticated socket (blocking again) and returns its
    channel, or None to drop it; ``ready(None)``: the handshake failed."""

    __slots__ = ("channel", "ready", "shake", "sock")

    def __init__(self, sock: socket.socket, shake: ClientHandshake | ServerHandshake,
                 ready: Callable[[socket.socket | None], Channel | None]):
        self.sock = sock
        self.shake = shake
        self.ready = ready
        self.channel: Channel | None = None

    def __call__(self) -> bool:
        if self.channel is not None:
            return self.channel.pump()
        try:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("closed during the handshake")
            step = self.shake.feed(data)
            if step.reply:
                self.sock.sendall(step.reply)  # (a few bytes: the buffer takes them)
        except BlockingIOError:  # (a stale event: nothing to read yet)
            return True
        except OSError:
            self.ready(None)
            return False
        if not step.done:
            return True
        if step.error is not None:
            self.ready(None)
            return False
        # (No leftover: a caller sends nothing before the answer to its HELLO.)
        self.sock.setblocking(True)
        self.channel = self.ready(self.sock)
        return self.channel is not None


def dial(poller: Poller, token: bytes, path: str,
         ready: Callable[[socket.socket | None], Channel | None]) -> bool:
    """Connect to a worker's socket as a "caller" (a Unix socket connects at once
    or fails: False); ``poller`` does the handshake, then calls ``ready`` (see
    ``_Polled``)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.connect(path)
    except OSError:
        sock.close()
        return False
    poller.add(sock, _Polled(sock, ClientHandshake(token, "caller"), ready))
    return True


class ActorLinks:
    """A caller's direct links to actors' workers (see the module docstring). One
    ``Poller`` thread reads them all. A link goes from the table when its actor's
    worker goes or the actor is dead (unless a hub call of it is unfinished), when
    the actor is killed from here (``forget``), at ``close``, and, holding nothing,
    at the next ``sweep`` (the flusher's, every second)."""

    def __init__(self, backend: NativeBackend, token: bytes):
        self._backend = backend
        self._token = token
        self._lock = threading.Lock()
        self._links: dict[str, _Link] = {}
        self._calls: dict[str, _Link] = {}  # task id -> the link a call went on, unanswered
        self._closed = False
        self.outboxes = backend._outboxes
        #: Reads every link of this process (and an actor's worker's callers).
        self.poller = Poller("fedexec-native-links")

    def send(self, actor_id: str, task_id: str, return_ids: list[str], payload: list[Any],
             name: str) -> str | None:
        """Send a call directly if this caller may: the worker id it went to (the
        caller then registers the call with that id), else None (send it to the hub)."""
        link = self._links.get(actor_id)
        if link is None:
            with self._lock:
                link = self._links.setdefault(actor_id, _Link())
        channel = link.channel
        if channel is None or channel.closed or link.hub_calls or link.sticky:
            if channel is None and not link.asking and not link.sticky:
                self._ask(actor_id, link)
            return None
        link.sent[task_id] = return_ids
        self._calls[task_id] = link
        if self.outboxes.send_later(channel, [Op.DIRECT_CALL, task_id, return_ids, payload,
                                              name]):
            self._backend._wake_flusher.set()
        return link.worker_id

    def channel_of(self, rid: str) -> Channel | None:
        """The link a direct call of result ``rid`` went on, while unanswered: a
        thread waiting for it may read it (read_here.py)."""
        link = self._calls.get(task_of(rid))
        return link.channel if link is not None else None

    def via_hub(self, actor_id: str, refs: list[ObjectRef[Any]]) -> None:
        """A call to ``actor_id`` went to the hub: no direct call until it ends."""
        with self._lock:
            link = self._links.setdefault(actor_id, _Link())
            if not refs:
                link.sticky = True
                return
            link.hub_calls += 1
        refs[0].add_done_callback(lambda _ref, lk=link: self._hub_done(actor_id, lk))

    def _hub_done(self, actor_id: str, link: _Link) -> None:
        with self._lock:
            link.hub_calls -= 1
        if link.dead:
            self._drop_if_idle(actor_id, link)

    def _drop_if_idle(self, actor_id: str, link: _Link) -> None:
        """Free the link unless it still orders calls (hub calls unfinished, sticky)."""
        with self._lock:
            if self._links.get(actor_id) is link and link.channel is None \
                    and not link.hub_calls and not link.sticky:
                del self._links[actor_id]

    def forget(self, actor_id: str) -> None:
        """The actor was killed from here: drop its link (the node manager answers
        the calls it had)."""
        with self._lock:
            link = self._links.pop(actor_id, None)
        if link is not None and link.channel is not None:
            link.channel.close()

    def sweep(self, now: float) -> None:
        """Free the links that hold nothing: no channel, nothing in flight, and no
        wait before asking again (an actor not there: starting, on another node)."""
        with self._lock:
            for actor_id, link in list(self._links.items()):
                if link.channel is None and not link.asking and not link.hub_calls \
                        and not link.sticky and not link.sent and link.asked <= now:
                    del self._links[actor_id]

    # ------------------------------------------------------------ the link
    def _ask(self, actor_id: str, link: _Link) -> None:
        """Ask the node manager where the actor's worker listens (not waiting)."""
        now = time.monotonic()
        if now < link.asked:
            return
        link.asking, link.asked = True, now + _ASK_AGAIN_S

        def answered(ok: bool, value: Any) -> None:
            if not ok or not value:  # not alive yet, or not on this node: ask later
                link.asked = time.monotonic() + _NOT_THERE_S
                link.asking = False
                if ok and value is False:  # dead: nothing to keep for it
                    link.dead = True
                    self._drop_if_idle(actor_id, link)
                return
            self._dial(actor_id, link, value[0], value[1])

        self._backend._request_later(Call.ACTOR_ADDRESS, [actor_id], answered)

    def _dial(self, actor_id: str, link: _Link, worker_id: str, path: str) -> None:
        """Connect (a Unix socket connects at once or fails); the poller thread does
        the handshake."""

        def ready(sock: socket.socket | None) -> Channel | None:
            if sock is None:
                self._failed(link)
                return None
            if self._closed or self._links.get(actor_id) is not link:
                link.asking = False
                return None  # forgotten meanwhile
            holder: list[Channel] = []
            channel = Channel(sock, lambda frame: self._on_frame(link, frame),
                              lambda: self._on_close(actor_id, link, holder[0]),
                              f"the link to actor worker {worker_id[-6:]}", polled=True)
            holder.append(channel)
            link.worker_id = worker_id
            link.channel = channel
            link.asking = False  # (after: a sender seeing no channel would ask again)
            return channel

        if not dial(self.poller, self._token, path, ready):
            self._failed(link)

    @staticmethod
    def _failed(link: _Link) -> None:
        link.asked = time.monotonic() + _CONNECT_FAILED_S
        link.asking = False

    def _on_frame(self, link: _Link, frame: list[Any]) -> None:
        on_object = self._backend._on_object
        sent = link.sent
        for msg in frame:
            if msg[0] != Op.DIRECT_REPLY:
                continue
            sent.pop(msg[1], None)
            self._calls.pop(msg[1], None)
            for result in msg[2]:
                on_object([Op.OBJECT, *result])

    def _on_close(self, actor_id: str, link: _Link, channel: Channel) -> None:
        """The worker went away (died, was killed or restarted): the node manager
        completes what it did not answer; we ask it for those results, in case
        the worker sent them there but not here. The link goes unless a hub call
        of it is unfinished (or it must stay on the hub)."""
        if link.channel is not channel:
            return  # a link that was never in use (a second connection)
        link.channel = None
        link.asking = False
        link.asked = time.monotonic() + _ASK_AGAIN_S
        missing = [rid for rids in list(link.sent.values()) for rid in rids]
        for task_id in list(link.sent):
            self._calls.pop(task_id, None)
        link.sent.clear()
        self._drop_if_idle(actor_id, link)
        if missing:
            with contextlib.suppress(Exception):
                self._backend._send([Op.SUBSCRIBE, missing])

    def close(self) -> None:
        """The backend is done: drop every link and stop the poller."""
        with self._lock:
            self._closed = True
            links = list(self._links.values())
            self._links.clear()
        for link in links:
            if link.channel is not None:
                link.channel.close()
        self.poller.close()


class CallListener:
    """A worker's end: listens on a Unix socket next to the node's, takes
    token-checked "caller" connections and hands their actor calls to
    ``submit(task_id, call, channel)`` and their leased tasks' messages (LEASE_*,
    see leases.py) to ``lease(msg, channel)``. The listening socket and every
    caller's connection are read by ``poller`` (no thread per caller)."""

    def __init__(self, poller: Poller, session_dir: str, worker_id: str, token: bytes,
                 submit: Callable[[str, list[Any], Channel], None],
                 lease: Callable[[list[Any], Channel], None] | None = None):
        self._poller = poller
        self._token = token
        self._lease = lease
        self.submit = submit  # (replaced by an actor's worker once it hosts the actor)
        self.path = os.path.join(session_dir, f"w-{worker_id}.sock")
        self.closed = False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self._sock.listen(64)
        self._sock.setblocking(False)
        poller.add(self._sock, self._accept)

    def close(self) -> None:
        """Take no more callers: the socket file goes (on this worker's clean exit)."""
        self.closed = True
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> bool:
        while True:
            try:
                sock, _ = self._sock.accept()
            except BlockingIOError:
                return True
            except OSError:
                return False
            try:
                sock.setblocking(False)
                shake = ServerHandshake(self._token, ("caller",), server="a worker")
                sock.sendall(shake.greeting())
            except OSError:
                sock.close()
                continue
            self._poller.add(sock, _Polled(sock, shake, self._admitted))

    def _admitted(self, sock: socket.socket | None) -> Channel | None:
        """A caller proved the token (nothing is decoded before that)."""
        if sock is None:
            return None
        holder: list[Channel] = []
        channel = Channel(sock, lambda frame: self._on_frame(holder[0], frame),
                          lambda: None, "an actor worker's caller", polled=True)
        holder.append(channel)
        return channel

    def _on_frame(self, channel: Channel, frame: list[Any]) -> None:
        if channel.closed:  # dropped for an earlier frame of the same read
            return
        for msg in frame:
            try:
                if msg[0] not in _CALLER_OPS:
                    raise ProtocolError(f"a caller may not send op {msg[0]!r}")
                if msg[0] != Op.DIRECT_CALL:
                    if self._lease is None:
                        raise ProtocolError("this worker takes no leased tasks")
                    self._lease(msg, channel)
                    continue
                _, task_id, return_ids, payload, name = msg
                self.submit(task_id, [Op.ACTOR_EXEC, task_id, return_ids, payload, [], name],
                            channel)
            except Exception:  # a malformed or forbidden message: drop the caller
                channel.close()
                return
