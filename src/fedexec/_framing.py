"""Framing of every fedexec connection: node manager, peers, drivers, workers, the
job agent and serve's replicas.

A *frame* is a 4-byte little-endian length followed by that many bytes of one
msgpack value (the native runtime sends an array of messages, serve one message).
Every reader has a size limit: a frame announced over it raises
:class:`~fedexec.exceptions.FrameTooLargeError` as soon as its 4-byte header is
read, before any of its body is buffered, and the caller closes the connection.
Writers check the same limit, so a too-large message fails at its sender with
that error instead of being cut off at the receiver.

The default limit is ``FEDEXEC_MAX_FRAME_BYTES`` if set, else 2 GiB (a remote
driver's ``put`` travels in one frame); a connection with a smaller contract (the
job agent's requests) passes its own. Readers:

* :class:`FrameReader` -- incremental, fed by whoever reads (a selector loop, an
  asyncio protocol's ``data_received``, a reader thread);
* :func:`recv_frame` -- blocking, on a socket;
* :func:`read_frame` -- on an ``asyncio.StreamReader``.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import TYPE_CHECKING, Any

import msgpack

from .exceptions import FrameTooLargeError

if TYPE_CHECKING:  # asyncio costs ~25 ms to import; only the async readers need it
    import asyncio

__all__ = [
    "HEADER",
    "FrameReader",
    "default_limit",
    "pack",
    "read_frame",
    "recv_frame",
]

HEADER = struct.Struct("<I")
_HARD_LIMIT = (1 << 32) - 1  # what the 4-byte header can say
_DEFAULT_LIMIT = 1 << 31


_default: int | None = None


def default_limit() -> int:
    """The frame size limit of connections that do not pass their own:
    ``FEDEXEC_MAX_FRAME_BYTES`` if set, else 2 GiB (capped at 4 GiB - 1). Read once
    per process."""
    global _default
    if _default is None:
        raw = os.environ.get("FEDEXEC_MAX_FRAME_BYTES")
        try:
            value = int(raw) if raw else _DEFAULT_LIMIT
        except ValueError:
            raise ValueError(f"FEDEXEC_MAX_FRAME_BYTES must be a number of bytes, got {raw!r}"
                             ) from None
        if value <= 0:
            raise ValueError(f"FEDEXEC_MAX_FRAME_BYTES must be positive, got {value}")
        _default = min(value, _HARD_LIMIT)
    return _default


def _too_large(size: int, limit: int, what: str) -> FrameTooLargeError:
    hint = " or raise FEDEXEC_MAX_FRAME_BYTES on every node" if limit == default_limit() \
        else ""
    return FrameTooLargeError(
        f"{what} frame of {size} bytes is over the {limit}-byte limit of this connection: "
        f"pass large values through the object store (put){hint}")


def pack(value: Any, limit: int | None = None) -> bytes:
    """``value`` as one frame, header included. Raises FrameTooLargeError over
    ``limit`` (default: :func:`default_limit`)."""
    body = msgpack.packb(value, use_bin_type=True)
    cap = default_limit() if limit is None else limit
    if len(body) > cap:
        raise _too_large(len(body), cap, "an outgoing")
    return HEADER.pack(len(body)) + body


def _decode(data: Any) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class FrameReader:
    """Incremental decoder: ``feed(bytes)`` returns the frames it completed, in
    order; a partial frame is kept for the next call. Raises FrameTooLargeError at
    a header over ``limit`` (the reader is then unusable: close the connection)."""

    __slots__ = ("_buf", "_limit", "_need")

    def __init__(self, limit: int | None = None) -> None:
        self._limit = default_limit() if limit is None else limit
        self._buf = bytearray()
        self._need = 0  # bytes the partial frame in _buf needs before it can be decoded

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return []  # a large frame still arriving: no copy, no parse
            data = bytes(self._buf)
            self._buf = bytearray()
        view = memoryview(data)
        frames = []
        pos = 0
        n = len(view)
        limit = self._limit
        unpack = HEADER.unpack_from
        unpackb = msgpack.unpackb
        while n - pos >= 4:
            (size,) = unpack(data, pos)
            if size > limit:
                raise _too_large(size, limit, "an incoming")
            end = pos + 4 + size
            if end > n:
                break
            frames.append(unpackb(view[pos + 4:end], raw=False, strict_map_key=False))
            pos = end
        if pos < n:
            self._buf += view[pos:]
            self._need = 4 + unpack(data, pos)[0] if n - pos >= 4 else 4
        return frames


def recv_frame(sock: socket.socket, buf: bytearray, limit: int | None = None) -> Any:
    """Read one frame from ``sock`` (blocking); raises EOFError if the peer closed
    first. ``buf`` carries bytes read past the frame over to the next call; a header
    over ``limit`` raises FrameTooLargeError before its body is read."""
    cap = default_limit() if limit is None else limit
    need = 4
    while True:
        if len(buf) >= 4:
            (size,) = HEADER.unpack_from(buf)
            if size > cap:
                raise _too_large(size, cap, "an incoming")
            need = 4 + size
            if len(buf) >= need:
                break
        chunk = sock.recv(max(1 << 16, min(need - len(buf), 1 << 22)))
        if not chunk:
            raise EOFError("the peer closed the connection")
        buf += chunk
    value = _decode(memoryview(buf)[4:need])
    del buf[:need]
    return value


async def read_frame(reader: asyncio.StreamReader, limit: int | None = None) -> Any:
    """Read one frame from an asyncio stream; ``asyncio.IncompleteReadError`` if it
    ends first, FrameTooLargeError at a header over ``limit``."""
    cap = default_limit() if limit is None else limit
    (size,) = HEADER.unpack(await reader.readexactly(4))
    if size > cap:
        raise _too_large(size, cap, "an incoming")
    return _decode(await reader.readexactly(size))
