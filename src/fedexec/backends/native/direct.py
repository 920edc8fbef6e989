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
as always and reaches the caller from the NM (DIRECT_REPLY leaves it out).

Order. One connection per (caller, actor) is FIFO into the actor's queue. Calls a
caller cannot send directly go through the NM as before ("hub" calls): a call with
ObjectRef arguments (the NM resolves them), a call made before the caller knows
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

Connections are Unix sockets in the node's session directory (never TCP: a caller
on another machine uses the hub), authenticated with the cluster token
(``protocol``'s handshake, role ``"caller"``) and framed by ``fedexec._framing``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...exceptions import ProtocolError
from .channel import Channel
from .protocol import ROLES, Call, Op, ServerHandshake, client_handshake

if TYPE_CHECKING:
    from ...refs import ObjectRef
    from .client import NativeBackend

__all__ = ["ActorLinks", "CallListener", "Outboxes"]

_ASK_AGAIN_S = 0.05   # a caller asks again for an actor's address after this long
_NOT_THERE_S = 0.1  # ... this long after it was not there (starting, or on another node)
_CONNECT_FAILED_S = 5.0  # ... or this long after connecting to it failed
_CALLER_OPS = ROLES["caller"]


class Outboxes:
    """The direct channels with queued messages, flushed together (after the node
    manager's channel: what the NM must know goes first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: set[Channel] = set()

    def send_later(self, channel: Channel, msg: Any) -> bool:
        """Queue ``msg`` on ``channel``; True if a flush should be arranged."""
        if channel.send_later(msg):
            with self._lock:
                self._dirty.add(channel)
            return True
        return False

    def flush(self) -> None:
        if not self._dirty:
            return
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for channel in dirty:
            channel.flush()


class _Link:
    """A caller's state for one actor: its direct channel (if any) and its hub
    calls not finished yet."""

    __slots__ = ("asked", "asking", "channel", "hub_calls", "sent", "sticky", "worker_id")

    def __init__(self) -> None:
        self.channel: Channel | None = None
        self.worker_id = ""
        self.hub_calls = 0
        self.sent: dict[str, list[str]] = {}  # task id -> result ids, not answered yet
        self.asking = False
        self.asked = 0.0  # when we may ask for the address again (monotonic)
        self.sticky = False  # a hub call we cannot track went out: hub from now on


class ActorLinks:
    """A caller's direct links to actors' workers (see the module docstring)."""

    def __init__(self, backend: NativeBackend, token: bytes):
        self._backend = backend
        self._token = token
        self._lock = threading.Lock()
        self._links: dict[str, _Link] = {}
        self.outboxes = backend._outboxes

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
        if self.outboxes.send_later(channel, [Op.DIRECT_CALL, task_id, return_ids, payload,
                                              name]):
            self._backend._wake_flusher.set()
        return link.worker_id

    def via_hub(self, actor_id: str, refs: list[ObjectRef[Any]]) -> None:
        """A call to ``actor_id`` went to the hub: no direct call until it ends."""
        with self._lock:
            link = self._links.setdefault(actor_id, _Link())
            if not refs:
                link.sticky = True
                return
            link.hub_calls += 1
        refs[0].add_done_callback(lambda _ref, lk=link: self._hub_done(lk))

    def _hub_done(self, link: _Link) -> None:
        with self._lock:
            link.hub_calls -= 1

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
                return
            threading.Thread(target=self._connect, args=(link, value[0], value[1]),
                             daemon=True, name="fedexec-native-link").start()

        self._backend._request_later(Call.ACTOR_ADDRESS, [actor_id], answered)

    def _connect(self, link: _Link, worker_id: str, path: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10.0)
            sock.connect(path)
            client_handshake(sock, self._token, role="caller")
            sock.settimeout(None)
        except (OSError, ProtocolError):
            sock.close()
            link.asked = time.monotonic() + _CONNECT_FAILED_S
            link.asking = False
            return
        channel = Channel(sock, lambda frame: self._on_frame(link, frame),
                          lambda: self._on_close(link), f"fedexec-native-link-{worker_id[-6:]}")
        link.worker_id = worker_id
        link.channel = channel
        channel.start()

    def _on_frame(self, link: _Link, frame: list[Any]) -> None:
        on_object = self._backend._on_object
        sent = link.sent
        for msg in frame:
            if msg[0] != Op.DIRECT_REPLY:
                continue
            sent.pop(msg[1], None)
            for result in msg[2]:
                on_object([Op.OBJECT, *result])

    def _on_close(self, link: _Link) -> None:
        """The worker went away (died, was killed or restarted): the node manager
        completes what it did not answer; we ask it for those results, in case
        the worker sent them there but not here."""
        link.channel = None
        link.asking = False
        link.asked = time.monotonic() + _ASK_AGAIN_S
        missing = [rid for rids in list(link.sent.values()) for rid in rids]
        link.sent.clear()
        if missing:
            with contextlib.suppress(Exception):
                self._backend._send([Op.SUBSCRIBE, missing])

    def close(self) -> None:
        for link in list(self._links.values()):
            if link.channel is not None:
                link.channel.close()


class CallListener:
    """An actor's worker's end: listens on a Unix socket next to the node's, takes
    token-checked "caller" connections and hands their calls to ``submit(task_id,
    call, channel)``."""

    def __init__(self, session_dir: str, worker_id: str, token: bytes,
                 submit: Callable[[str, list[Any], Channel], None]):
        self._token = token
        self._submit = submit
        self.path = os.path.join(session_dir, f"w-{worker_id}.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self._sock.listen(64)
        threading.Thread(target=self._accept_loop, daemon=True,
                         name="fedexec-native-calls").start()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._admit, args=(sock,), daemon=True,
                             name="fedexec-native-caller").start()

    def _admit(self, sock: socket.socket) -> None:
        """Authenticate a caller (nothing is decoded before its token proof)."""
        shake = ServerHandshake(self._token, ("caller",), server="an actor's worker")
        try:
            sock.settimeout(10.0)
            sock.sendall(shake.greeting())
            while True:
                data = sock.recv(4096)
                if not data:
                    raise ConnectionError("closed during the handshake")
                step = shake.feed(data)
                if step.reply:
                    sock.sendall(step.reply)
                if step.done:
                    break
            if step.error is not None:
                raise ConnectionError(step.error)
            sock.settimeout(None)
        except OSError:
            sock.close()
            return
        # (No leftover: a caller sends nothing before the answer to its HELLO.)
        holder: list[Channel] = []
        channel = Channel(sock, lambda frame: self._on_frame(holder[0], frame),
                          lambda: None, "fedexec-native-caller")
        holder.append(channel)
        channel.start()

    def _on_frame(self, channel: Channel, frame: list[Any]) -> None:
        for msg in frame:
            try:
                if msg[0] not in _CALLER_OPS or msg[0] != Op.DIRECT_CALL:
                    raise ProtocolError(f"a caller may not send op {msg[0]!r}")
                _, task_id, return_ids, payload, name = msg
                self._submit(task_id, [Op.ACTOR_EXEC, task_id, return_ids, payload, [], name],
                             channel)
            except Exception:  # a malformed or forbidden message: drop the caller
                channel.close()
                return

