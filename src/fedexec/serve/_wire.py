"""The direct protocol between serve's routers (proxy, handles) and replicas.

Requests do not go through the node manager: each replica listens on
127.0.0.1 (an ephemeral port) and every process that routes to it keeps one
long-lived connection per replica, with many requests in flight on it::

    router (proxy / handle)                      replica
      ── TCP connect ─────────────────────────▶  greeting: MAGIC + nonce_s (16 B)
      ◀────────────────────────────────────────
      HMAC(secret, b"client" + nonce_s) + nonce_c ─▶  checked before anything else
      ◀── HMAC(secret, b"server" + nonce_c) ─────    (a wrong MAC: the socket is closed)
      ── frames ──▶  ◀── frames ──                    both ways, pipelined

The secret is made by the controller and reaches replicas and routers only
through fedexec actor calls (authenticated by the cluster token), so nothing
is unpickled from a peer that has not proven it holds it.

A frame (``fedexec._framing``: a 4-byte little-endian length, at most
``MAX_FRAME`` bytes: ``FEDEXEC_SERVE_MAX_FRAME_BYTES`` if set, else 1 GiB; set it
alike on every node) holds a msgpack array ``[op, rid, ...]``;
a frame sent on a connection idle in this event-loop turn is written at once;
the writes made after it in the same turn leave together in one
``transport.write`` (``Writer``), headed by one STARTED frame listing the
requests that began running in that turn (but whose answers are not in the
same write: an answer implies it started).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any

from .. import _framing

MAGIC = b"FXSV1"
NONCE = 16
MAC = 32


def _max_frame() -> int:
    raw = os.environ.get("FEDEXEC_SERVE_MAX_FRAME_BYTES")
    try:
        value = int(raw) if raw else 1 << 30
    except ValueError:
        raise ValueError(f"FEDEXEC_SERVE_MAX_FRAME_BYTES must be a number of bytes, got "
                         f"{raw!r}") from None
    return min(max(value, 1 << 16), (1 << 32) - 1)


MAX_FRAME = _max_frame()


class Op(enum.IntEnum):
    """Frame kinds. Requests go to a replica, the others come back."""

    HTTP = 1        # [op, rid, method, path, query: bytes, headers: [[k, v]], body, root_path]
    CALL = 2        # [op, rid, method_name, pickled (args, kwargs), stream: bool]
    HOLD = 3        # [op, rid of a CALL, [token, ...]]      keep its value (see _chain)
    FETCH = 4       # [op, rid, token]                       answer with a held value
    RELEASE = 5     # [op, 0, [token, ...]]                  drop held values (no answer)
    RESPONSE = 10   # [op, rid, status, headers, body]       a whole HTTP response
    START = 11      # [op, rid, status, headers]             a streamed HTTP response begins
    CHUNK = 12      # [op, rid, body]                        ... a part of it
    END = 13        # [op, rid]                              ... the end (also of a call stream)
    RESULT = 14     # [op, rid, pickled value | None]        a handle call's value (None: held)
    ITEM = 15       # [op, rid, pickled value]               one item of a streamed call
    ERROR = 16      # [op, rid, pickled exception | None, text]
    STARTED = 17    # [op, 0, [rid, ...]]                    these requests began running
    HOLDING = 18    # [op, rid, ok: bool]                    a HOLD's answer


def mac(secret: bytes, label: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, label + nonce, hashlib.sha256).digest()


def new_nonce() -> bytes:
    return os.urandom(NONCE)


def pack(frame: list[Any]) -> bytes:
    """One frame, length prefix included (FrameTooLargeError over ``MAX_FRAME``)."""
    return _framing.pack(frame, MAX_FRAME)


class FrameReader(_framing.FrameReader):
    """Cuts a byte stream into frames (``feed`` returns the complete ones; a frame
    announced over ``MAX_FRAME`` raises FrameTooLargeError, a ValueError)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(MAX_FRAME)


class Writer:
    """Writes frames to one connection: a frame sent while nothing else went out
    in this event-loop turn is written at once (one request at a time pays no
    wait); the frames sent after it in the same turn are coalesced into one
    write when the tasks scheduled so far took their step."""

    __slots__ = ("_call_soon", "_pending", "_scheduled", "_started", "_transport")

    def __init__(self, transport: Any, call_soon: Callable[[Callable[[], None]], Any]) -> None:
        self._transport = transport
        self._call_soon = call_soon
        self._pending: list[bytes] = []
        self._started: list[int] = []
        self._scheduled = False  # a write went out or is queued in this turn

    @property
    def closed(self) -> bool:
        return bool(self._transport.is_closing())

    def send(self, frame: list[Any]) -> None:
        """Write ``frame`` now if the connection is idle in this turn, else queue it
        for the turn's one coalesced write. Raises FrameTooLargeError over
        ``MAX_FRAME``, with nothing written or queued: the connection goes on."""
        data = pack(frame)
        started = self._started
        if started and Op.RESPONSE <= frame[0] <= Op.ERROR and frame[1] in started:
            started.remove(frame[1])  # its answer says it started, in the same write
        if self._scheduled:
            self._pending.append(data)
            return
        # idle: nothing is queued (``mark_started`` is always followed by ``kick``)
        self._scheduled = True
        self._call_soon(self._flush)
        if not self._transport.is_closing():
            self._transport.write(data)

    def mark_started(self, rid: int) -> None:
        """Tell the router that request ``rid`` began running, in the next write
        (the caller ``kick``s once it has marked all of this turn's requests)."""
        self._started.append(rid)

    def kick(self) -> None:
        """Write what is pending once the tasks scheduled so far took a step (the
        frames they send meanwhile join that write)."""
        if not self._scheduled:
            self._scheduled = True
            self._call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._started:
            self._pending.insert(0, pack([Op.STARTED, 0, self._started]))
            self._started = []
        if not self._pending:
            return
        data, self._pending = b"".join(self._pending), []
        if not self._transport.is_closing():
            self._transport.write(data)
