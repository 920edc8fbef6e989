"""Wire protocol of the native runtime: authentication, framing, message ops.

Every connection starts with a mutual HMAC-SHA256 challenge on the cluster token,
exchanged as fixed-size raw bytes, so nothing from an unauthenticated peer is ever
decoded (no msgpack, and never pickle: the node manager does not unpickle at all)::

    server ─ MAGIC + nonce_s (36 B) ─────────────────────────▶ client
    server ◀── HMAC(token, "client" + nonce_s) + nonce_c (64 B) ── client
    server ─ HMAC(token, "server" + nonce_c) (32 B) ─────────▶ client

Then both sides exchange *frames*: a 4-byte little-endian length and a msgpack
array of messages; each message is an array whose first element is an :class:`Op`.
Frames batch many messages (a submit loop, a worker's results) into one write.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import socket
import struct
from typing import Any

import msgpack

from ...exceptions import AuthenticationError

__all__ = [
    "ClientHandshake",
    "ErrorKind",
    "FrameReader",
    "Kind",
    "Op",
    "ServerHandshake",
    "client_handshake",
    "error_text",
    "pack_frame",
]

MAGIC = b"FDX1"
NONCE = 32
MAC = 32
MAX_FRAME = (1 << 32) - 1
_LEN = struct.Struct("<I")
_BATCH = 512  # messages a deferred send lets pile up before writing


class Op(enum.IntEnum):
    """Message types. Client = driver or worker; NM = node manager."""

    # client -> NM
    HELLO = 1            # [op, role, pid, worker_id]
    SUBMIT = 2           # [op, task_id, return_ids, name, demand, max_retries, deps, contained,
                         #  payload, strategy]  strategy: None | "SPREAD" | "LOCAL" |
                         #  ["NODE", node_id, soft]
    PUT = 3              # [op, obj_id, data, buffers, contained]            (inline object)
    CREATE = 4           # [op, obj_id, size]                               (reserve shm)
    SEAL = 5             # [op, obj_id, size, contained]
    INCREF = 6           # [op, [obj_id...]]
    DECREF = 7           # [op, [obj_id...]]
    SUBSCRIBE = 8        # [op, [obj_id...], lost_at?]   reply: OBJECT when ready (a peer
                         #  whose copy on node lost_at died: not before we know it died)
    CANCEL = 9           # [op, task_id, force, recursive]
    REQUEST = 10         # [op, req_id, Call, args]   reply: REPLY
    ACTOR_CALL = 12      # [op, actor_id, task_id, return_ids, name, deps, contained, payload]
    FETCH = 13           # [op, [obj_id...]]   reply: OBJECT, with the data on this node
    # node -> node (peers; a peer is also a client of the other: SUBMIT, INCREF, ...)
    PULL = 14            # [op, obj_id]        reply: CHUNK messages
    HEARTBEAT = 15       # [op, available, queued, total]           (node -> head)
    CHUNK = 44           # [op, obj_id, offset, total, data, contained]  offset -1: error
    VIEW = 45            # [op, [[node_id, address, total, available, alive, queued]...]]
    NODE_DEAD = 46       # [op, node_id, why]                        (head -> nodes)
    WELCOME = 47         # [op, head node id, [view rows]]           (head -> joining node)
    # worker -> NM
    TASK_DONE = 20       # [op, task_id, [result...]]   result: [obj_id, Kind, ...]
    BLOCKED = 21         # [op, [task_ids handed back]]
    UNBLOCKED = 22       # [op]
    HANDBACK = 25        # [op, [task_ids]]  tasks that reached a blocked worker
    ACTOR_READY = 23     # [op, actor_id]
    ACTOR_FAILED = 24    # [op, actor_id, error_message]
    # NM -> client
    OBJECT = 40          # [op, obj_id, Kind, ...]
    REPLY = 41           # [op, req_id, ok, value]
    CREATED = 42         # [op, obj_id, path or None, error message, staging path or ""]
    STARTED = 43         # [op, [return ids of tasks handed to a worker]]
    # NM -> worker
    EXECUTE = 60         # [op, task_id, return_ids, payload, [dep objects], retries]
    ACTOR_INIT = 61      # [op, actor_id, spec, payload, [dep objects]]
    ACTOR_EXEC = 62      # [op, task_id, return_ids, payload, [dep objects]]
    CANCEL_TASK = 63     # [op, task_id]
    EXIT = 64            # [op]
    REVOKE = 65          # [op, task_id]  drop it if not started (TASK_DONE CANCELLED)
    # node -> head
    EVENTS = 66          # [op, [event...]]  a batch of transitions (see events.py)


class Kind(enum.IntEnum):
    """How an object travels in OBJECT / TASK_DONE / EXECUTE messages."""

    INLINE = 1   # [obj_id, INLINE, data, buffers, contained]
    SHM = 2      # [obj_id, SHM, path, size, contained]
    ERROR = 3    # [obj_id, ERROR, pickled exception (from the worker that raised)]
    FAILED = 4   # [obj_id, FAILED, ErrorKind, message]   (an error the runtime made)
    REMOTE = 5   # [obj_id, REMOTE, node_id, size, contained]  (held on another node)


class ErrorKind(enum.IntEnum):
    """Errors the node manager reports without pickling anything."""

    WORKER_CRASHED = 1
    ACTOR_DIED = 2
    CANCELLED = 3
    OBJECT_LOST = 4
    STORE_FULL = 5
    UNAVAILABLE = 6
    RUNTIME_ENV = 7
    NODE_DIED = 8
    OUT_OF_MEMORY = 9      # the memory monitor killed the task's worker
    ACTOR_UNAVAILABLE = 10  # the link to the actor's node broke; the node is not dead (yet)
    INTERNAL = 20  # the node manager failed handling the message (logged there)


class Call(enum.IntEnum):
    """REQUEST kinds: control-plane calls answered with a REPLY."""

    CLUSTER_RESOURCES = 1
    AVAILABLE_RESOURCES = 2
    NODES = 3
    GET_ACTOR = 4
    KILL_ACTOR = 5
    NODE_INFO = 6
    SHUTDOWN = 7
    PLACEMENT_GROUP = 8
    REMOVE_PLACEMENT_GROUP = 9
    STATS = 10
    CREATE_ACTOR = 11
    CANCEL_PENDING = 12
    CANCEL_QUEUED = 13
    DESCRIBE = 14
    LIST = 15
    RESERVE_BUNDLES = 16   # node -> node: [pg_id, [[index, bundle]...]] -> bool
    RELEASE_BUNDLES = 17   # node -> node: [pg_id] -> bool
    METRICS = 18           # process -> its node: [rows (see fedexec._metric_table)] -> True
    GATHER = 30            # [call (STATS|LIST), args, timeout] -> {node_id: [ok, value]}
    # node -> head: the actor directory (see actor_directory.py)
    REGISTER_ACTOR = 31    # [actor_id, spec, node_id, owner_node] -> [holder id, holder spec]
    ACTOR_GONE = 32        # [actor_id] -> bool   (dead for good: its name is free)
    LOCATE_ACTOR = 33      # [actor_id] -> node_id | None


def error_text(exc: BaseException) -> str:
    """An error as a REPLY carries it: ``"TypeName: message"`` (text, never pickled;
    the client rebuilds the type if it is one it allows, see ``_values.reply_error``)."""
    args = exc.args
    # KeyError's str() is the repr of its argument: send the argument itself.
    message = args[0] if isinstance(exc, KeyError) and len(args) == 1 else exc
    return f"{type(exc).__name__}: {message}"


def pack_frame(messages: list[Any]) -> bytes:
    """One frame holding ``messages``."""
    body = msgpack.packb(messages, use_bin_type=True)
    return _LEN.pack(len(body)) + body


class FrameReader:
    """Incremental frame decoder: ``feed(bytes)`` returns the complete frames."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 0  # bytes the partial frame in _buf needs before it can be decoded

    def feed(self, data: bytes) -> list[list[Any]]:
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return []  # a large frame still arriving: no copy, no parse
            data = bytes(self._buf)
            self._buf = bytearray()
        view = memoryview(data)
        frames = []
        pos = 0
        n = len(data)
        unpack = _LEN.unpack_from
        while n - pos >= 4:
            (size,) = unpack(data, pos)
            end = pos + 4 + size
            if end > n:
                break
            frames.append(msgpack.unpackb(view[pos + 4:end], raw=False, strict_map_key=False))
            pos = end
        if pos < n:
            self._buf += view[pos:]
            self._need = 4 + unpack(data, pos)[0] if n - pos >= 4 else 4
        return frames


# ------------------------------------------------------------------- handshake
def _mac(token: bytes, label: bytes, nonce: bytes) -> bytes:
    return hmac.new(token, label + nonce, hashlib.sha256).digest()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("peer closed the connection during the handshake")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def client_handshake(sock: socket.socket, token: bytes, timeout: float = 10.0) -> None:
    """Authenticate to a server (blocking). Raises :class:`AuthenticationError`."""
    shake = ClientHandshake(token)
    old = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        done = ok = False
        while not done:
            try:
                data = _recv_exact(sock, shake.need)
            except ConnectionError:
                if not shake.greeted:
                    raise
                raise AuthenticationError(
                    "the runtime refused the cluster token; pass token= or set FEDEXEC_TOKEN "
                    "to the token of the cluster's head"
                ) from None
            done, ok, reply, _ = shake.feed(data)
            if reply:
                sock.sendall(reply)
        if not ok:
            raise AuthenticationError(shake.error)
    except TimeoutError:
        raise AuthenticationError("timed out authenticating to the runtime") from None
    finally:
        sock.settimeout(old)


class ClientHandshake:
    """Client side of the handshake as a non-blocking state machine (a node dials
    another node from its event loop with it; a blocking dial there could wait on a
    peer that is itself blocked dialing us).

    ``feed(bytes)`` returns (done, ok, reply_bytes, leftover): once the server's
    greeting is in, ``reply_bytes`` is our proof and nonce (send them); once its
    proof is in, ``done``, and ``ok`` says whether it holds the token (``error``
    says why not). ``need`` is how many more bytes the next step wants."""

    def __init__(self, token: bytes):
        self._token = token
        self._nonce = os.urandom(NONCE)
        self._buf = b""
        self.greeted = False
        self.error = ""

    @property
    def need(self) -> int:
        return max(1, (MAC if self.greeted else len(MAGIC) + NONCE) - len(self._buf))

    def feed(self, data: bytes) -> tuple[bool, bool, bytes, bytes]:
        self._buf += data
        reply = b""
        if not self.greeted:
            if len(self._buf) < len(MAGIC) + NONCE:
                return False, False, b"", b""
            hello, self._buf = self._buf[:len(MAGIC) + NONCE], self._buf[len(MAGIC) + NONCE:]
            if hello[:len(MAGIC)] != MAGIC:
                self.error = "the peer is not a fedexec runtime (bad greeting)"
                return True, False, b"", b""
            self.greeted = True
            reply = _mac(self._token, b"client", hello[len(MAGIC):]) + self._nonce
        if len(self._buf) < MAC:
            return False, False, reply, b""
        proof, leftover = self._buf[:MAC], self._buf[MAC:]
        if not hmac.compare_digest(proof, _mac(self._token, b"server", self._nonce)):
            self.error = "the runtime failed to prove it holds the cluster token"
            return True, False, reply, b""
        return True, True, reply, leftover


class ServerHandshake:
    """Server side of the handshake as a non-blocking state machine.

    ``greeting()`` is sent first; ``feed(bytes)`` returns (done, ok, reply_bytes,
    leftover) once the client's 64 bytes arrived. Nothing else is read before."""

    def __init__(self, token: bytes):
        self._token = token
        self._nonce = os.urandom(NONCE)
        self._buf = b""

    def greeting(self) -> bytes:
        return MAGIC + self._nonce

    def feed(self, data: bytes) -> tuple[bool, bool, bytes, bytes]:
        self._buf += data
        if len(self._buf) < MAC + NONCE:
            return False, False, b"", b""
        mac, nonce_c = self._buf[:MAC], self._buf[MAC:MAC + NONCE]
        leftover = self._buf[MAC + NONCE:]
        if not hmac.compare_digest(mac, _mac(self._token, b"client", self._nonce)):
            return True, False, b"", b""
        return True, True, _mac(self._token, b"server", nonce_c), leftover
