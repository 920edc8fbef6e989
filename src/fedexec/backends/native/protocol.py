"""Wire protocol of the native runtime: authentication, framing, message ops.

Every connection starts with a mutual HMAC-SHA256 challenge on the cluster token,
exchanged as fixed-size raw bytes, so nothing from an unauthenticated peer is ever
decoded (no msgpack, and never pickle: the node manager does not unpickle at all)::

    server ─ MAGIC + nonce_s (36 B) ─────────────────────────▶ client
    server ◀── HMAC(token, "client" + nonce_s) + nonce_c (64 B) ── client
    server ─ HMAC(token, "server" + nonce_c) (32 B) ─────────▶ client

Then both sides exchange *frames* (``fedexec._framing``: a 4-byte little-endian
length, a size limit). The first frame each way is the **HELLO exchange**, before
any message is dispatched::

    client ─ {"protocol": PROTOCOL_VERSION, "fedexec": version, "role": role} ─▶ server
    client ◀─ {"protocol": PROTOCOL_VERSION, "fedexec": version, "error": None} ─ server

(``messages.Hello`` and ``messages.HelloAnswer``.)
``role`` is one of :data:`ROLES` (the node manager's connections) or ``"job"`` (the
job agent's). A server that speaks another protocol version, or does not take that
role, answers ``"error": [type name, message]`` (see :func:`encode_error`) and
closes; the client raises it (:class:`ProtocolVersionError` names both versions).
After it, every frame is a msgpack array of messages; each message is an array
whose first element is an :class:`Op`, and :data:`ROLES` lists the ops each role
may send (any other op closes the connection, after a REFUSED message saying why).
Frames batch many messages (a submit loop, a worker's results) into one write.
Errors that travel as values (a REPLY's, a REFUSED's) are ``[type name, message]``
and come back as that type if :data:`ERROR_TYPES` has it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import os
import socket
from collections.abc import Collection
from typing import Any

from ... import exceptions
from ..._framing import HEADER, FrameReader
from ..._framing import pack as pack_frame
from ..._version import __version__
from ...exceptions import (
    AuthenticationError,
    FedexecError,
    ProtocolError,
    ProtocolVersionError,
)
from .messages import Hello, HelloAnswer, MalformedMessage, decode_map, encode

__all__ = [
    "ERROR_TYPES",
    "FORBIDDEN",
    "NODE_ONLY_CALLS",
    "NODE_ROLES",
    "PROTOCOL_VERSION",
    "ROLES",
    "ClientHandshake",
    "ErrorKind",
    "FrameReader",
    "HandshakeStep",
    "Kind",
    "Op",
    "ServerHandshake",
    "client_handshake",
    "decode_error",
    "describe_error",
    "encode_error",
    "error_text",
    "pack_frame",
]

#: Bumped whenever a message changes shape or meaning; both ends of every connection
#: must agree (checked at the HELLO exchange). 1 was the protocol before the check.
PROTOCOL_VERSION = 4
MAGIC = b"FDX1"
NONCE = 32
MAC = 32
_HELLO_LIMIT = 1 << 16  # bytes a HELLO exchange frame may have


class Op(enum.IntEnum):
    """Message types. Client = driver or worker; NM = node manager."""

    # client -> NM
    HELLO = 1            # [op, role, pid, worker_id]
    SUBMIT = 2           # [op, task_id, return_ids, name, demand, max_retries, deps, contained,
                         #  payload, strategy, parent?]  strategy: None | "SPREAD" | "LOCAL" |
                         #  ["NODE", node_id, soft]; parent: the leased task submitting it
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
    HEARTBEAT = 15       # [op, available, queued, total, beat]     (node -> head)
    FWD_SEEN = 16        # [op, taken, beat, available, queued]  to a node that forwarded
                         #  work here: its first ``taken`` forwards are in report ``beat``
    CHUNK = 44           # [op, obj_id, offset, total, data, contained]  offset -1: error
    VIEW = 45            # [op, [[node_id, address, total, available, alive, queued, beat]...]]
    NODE_DEAD = 46       # [op, node_id, why]                        (head -> nodes)
    WELCOME = 47         # [op, head node id, [view rows]]           (head -> joining node)
    REFUSED = 48         # [op, refused op, error]  NM -> any: the last message before it
                         #  closes the connection (error: see encode_error)
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
    # direct actor calls (see direct.py): caller -> the actor's worker, and back
    DIRECT_CALL = 70     # [op, task_id, return_ids, [method, mode, data, buffers, num_returns],
                         #  name]          (caller -> worker; ACTOR_CALL registers it)
    DIRECT_REPLY = 71    # [op, task_id, [result...]]  worker -> caller; SHM results left out
                         #  (the node manager delivers those)
    DIRECT_DONE = 72     # [op, task_id, [result...]]  worker -> NM: a direct call ended
    # caller leases (see leases.py): a driver's tasks straight to a worker leased to it
    LEASE_RETURN = 73    # [op, worker_id, broken?]   caller -> NM: done with that lease
    LEASE_RECALL = 74    # [op, worker_id]            NM -> caller: return it (work waits)
    LEASE_EXEC = 75      # [op, task_id, return_ids, payload (as EXECUTE's), name, caller's
                         #  connection id at its NM, deps: each an entry or the id of a
                         #  result made on that worker (chained.py)]  caller -> its
                         #  leased worker
    LEASE_DONE = 76      # [op, task_id, [result...]]  worker -> caller: every result (SHM
                         #  ones and ones holding refs went to the NM first, LEASE_PUT)
    LEASE_PUT = 77       # [op, caller's connection id, [result...]]  worker -> NM: results
                         #  the caller will hold (sealed, pinning what they contain)
    LEASE_CANCEL = 78    # [op, task_id, force]       caller -> worker
    LEASE_REVOKE = 79    # [op, task_id]              caller -> worker: drop it if queued
    LEASE_REVOKED = 80   # [op, task_id, dropped]     worker -> caller (after its LEASE_DONE)
    LEASE_HANDBACK = 81  # [op, [task_id...]]         worker -> caller: not started (blocked,
                         #  or the caller asked: LEASE_YIELD)
    PROMISE = 82         # [op, [obj_id...]]  caller -> NM: results of its leased tasks,
                         #  pending, now referenced elsewhere; a PUT completes each
    LEASE_RUNNING = 83   # [op, task_id | None, name, retriable, caller's conn id]  worker
                         #  -> NM: the leased task it runs (said once it ran a while;
                         #  None once it ended), for the memory monitor and the lists
    LEASE_BACKLOG = 84   # [op, [[demand, count]...]]  caller -> NM: its tasks waiting for
                         #  its leases (queued there, or behind the running one), per
                         #  shape; replaces the last (demand an autoscaler must see)
    LEASE_ENDED = 86     # [op, [[task_id, name, failed, job_id, s]...]]  worker -> NM: leased
                         #  tasks that ended (batched): its event log and counters
    LEASE_YIELD = 85     # [op]  caller -> its leased worker (the lease is recalled): hand
                         #  back the tasks not started (LEASE_HANDBACK)


class Kind(enum.IntEnum):
    """How an object travels in OBJECT / TASK_DONE / EXECUTE messages."""

    INLINE = 1   # [obj_id, INLINE, data, buffers, contained]
    SHM = 2      # [obj_id, SHM, path, size, contained]
    ERROR = 3    # [obj_id, ERROR, pickled exception (from the worker that raised)]
    FAILED = 4   # [obj_id, FAILED, ErrorKind, message]   (an error the runtime made)
    REMOTE = 5   # [obj_id, REMOTE, node_id, size, contained]  (held on another node)


def goes_straight(entry: list[Any]) -> bool:
    """Whether a result entry may go straight from a worker to its caller (a direct
    call's DIRECT_REPLY, a leased task's LEASE_DONE) without its node manager: not
    one in the store, nor one holding refs (the node manager may not have read the
    messages that made those yet, and the caller's first use of them asks it)."""
    return entry[1] != Kind.SHM and not (entry[1] == Kind.INLINE and entry[4])


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
    RELEASE_BUNDLES = 17   # node -> node: [pg_id, removed for good] -> bool
    METRICS = 18           # process -> its node: [rows (see fedexec._metric_table)] -> True
    AUTOSCALER_REPORT = 19  # monitor -> every node (by GATHER): [report] -> True
    GATHER = 30            # [call (STATS|LIST), args, timeout] -> {node_id: [ok, value]}
    # node -> head: the actor directory (see actor_directory.py)
    REGISTER_ACTOR = 31    # [actor_id, spec, node_id, owner_node] -> [holder id, holder spec]
    ACTOR_GONE = 32        # [actor_id] -> bool   (dead for good: its name is free)
    LOCATE_ACTOR = 33      # [actor_id] -> node_id | None
    LEASE = 35             # [demand] -> [worker id, socket path, caller's connection id] |
                           #  "full" (denied: the demand does not fit now) | None (denied:
                           #  use the hub): a worker for this caller's tasks (see leases.py)
    LEASE_LOST = 36        # [worker_id] -> [ErrorKind, message] | None: why a leased
                           #  worker the caller lost died, if the node killed it (OOM)
    ACTOR_ADDRESS = 34     # [actor_id] -> [worker id, socket path] | None | False (dead): where a caller on
                           #  this node may send the actor's calls directly (see direct.py)


#: The ops each role may send to a node manager (HELLO says the role). A message
#: with any other op closes the connection (after a REFUSED saying why).
_CLIENT_OPS = frozenset({Op.HELLO, Op.SUBMIT, Op.PUT, Op.CREATE, Op.SEAL, Op.INCREF,
                         Op.DECREF, Op.SUBSCRIBE, Op.CANCEL, Op.REQUEST, Op.ACTOR_CALL,
                         Op.FETCH, Op.LEASE_RETURN, Op.LEASE_BACKLOG, Op.PROMISE})
ROLES: dict[str, frozenset[int]] = {
    "driver": _CLIENT_OPS,
    "worker": _CLIENT_OPS | {Op.TASK_DONE, Op.BLOCKED, Op.UNBLOCKED, Op.HANDBACK,
                             Op.ACTOR_READY, Op.ACTOR_FAILED, Op.DIRECT_DONE,
                             Op.LEASE_PUT, Op.LEASE_RUNNING, Op.LEASE_ENDED},
    "node": frozenset({Op.HELLO, Op.SUBMIT, Op.INCREF, Op.DECREF, Op.SUBSCRIBE, Op.CANCEL,
                       Op.REQUEST, Op.ACTOR_CALL, Op.FETCH, Op.PULL, Op.CHUNK,
                       Op.HEARTBEAT, Op.FWD_SEEN, Op.VIEW, Op.NODE_DEAD, Op.WELCOME,
                       Op.OBJECT, Op.STARTED, Op.REPLY, Op.EVENTS}),
    # a caller's direct link to an actor's worker (the worker listens, see direct.py)
    "caller": frozenset({Op.HELLO, Op.DIRECT_CALL, Op.LEASE_EXEC, Op.LEASE_CANCEL,
                         Op.LEASE_REVOKE, Op.LEASE_YIELD}),
}
#: The roles a node manager takes (a "caller" connects to an actor's worker).
NODE_ROLES = ("driver", "worker", "node")
#: The ops each role may not send: every other :class:`Op` (an op number no Op names
#: is not refused here: the node manager logs it as unknown and carries on).
FORBIDDEN: dict[str, frozenset[int]] = {role: frozenset(Op) - ops for role, ops in ROLES.items()}
#: REQUEST calls only another node may make (an error REPLY to anyone else).
NODE_ONLY_CALLS = frozenset({Call.RESERVE_BUNDLES, Call.RELEASE_BUNDLES, Call.REGISTER_ACTOR,
                             Call.ACTOR_GONE, Call.LOCATE_ACTOR})

#: The error types an error value may name and the receiver rebuilds (by this
#: table, never by looking a name up): common builtins and fedexec's own (but
#: TaskError, which wraps a task's exception and never travels as a value).
ERROR_TYPES: dict[str, type[BaseException]] = {
    cls.__name__: cls for cls in (
        ValueError, TypeError, KeyError, IndexError, LookupError, RuntimeError,
        TimeoutError, NotImplementedError, PermissionError, FileNotFoundError, OSError,
        ConnectionError, *(getattr(exceptions, name) for name in exceptions.__all__
                           if name != "TaskError"))
}


def encode_error(exc: BaseException) -> list[str]:
    """An error as a value on the wire: ``[type name, message]`` (never pickled)."""
    args = exc.args
    # KeyError's str() is the repr of its argument: send the argument itself.
    message = args[0] if isinstance(exc, KeyError) and len(args) == 1 else exc
    return [type(exc).__name__, str(message)]


def decode_error(value: Any) -> BaseException:
    """The exception an error value stands for: its type if :data:`ERROR_TYPES` has
    it, else a :class:`FedexecError` with its type name and message. Also takes the
    text form ``"TypeName: message"`` (:func:`error_text`)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        name, message = str(value[0]), str(value[1])
    else:
        name, sep, message = str(value).partition(": ")
        if not sep:
            return FedexecError(str(value))
    cls = ERROR_TYPES.get(name)
    if cls is not None:
        try:
            return cls(message)
        except Exception:  # a constructor that wants more than a message
            pass
    return FedexecError(f"{name}: {message}")


def describe_error(value: Any) -> str:
    """An error value as one line of text, ``"TypeName: message"``."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}: {value[1]}"
    return str(value)


def error_text(exc: BaseException) -> str:
    """An error as text, ``"TypeName: message"`` (:func:`decode_error` takes it too;
    new code sends :func:`encode_error`)."""
    name, message = encode_error(exc)
    return f"{name}: {message}"


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


def _answer(error: BaseException | None = None) -> Any:
    return encode(HelloAnswer(PROTOCOL_VERSION, __version__,
                              None if error is None else encode_error(error)))


_SAME_VERSION = "install the same fedexec version on every node, driver and worker"


def _mismatch(server: str, server_hello: Any, client: str, client_hello: Any) -> str:
    def info(hello: Any) -> str:
        if not isinstance(hello, dict):
            return "a fedexec without a protocol version (older than protocol 2)"
        return f"fedexec {hello.get('fedexec', '?')} (protocol {hello.get('protocol')})"
    return (f"{server} runs {info(server_hello)} but {client} runs {info(client_hello)}: "
            f"{_SAME_VERSION}")


def _no_answer(role: str) -> ProtocolVersionError:
    return ProtocolVersionError(
        f"the runtime closed the connection at the protocol HELLO (after the token check) "
        f"or sent no valid answer: it may run another fedexec version; this {role} runs "
        f"fedexec {__version__} (protocol {PROTOCOL_VERSION}): {_SAME_VERSION}")


def client_handshake(sock: socket.socket, token: bytes, timeout: float = 10.0,
                     role: str = "driver") -> None:
    """Authenticate to a server and say HELLO as ``role`` (blocking; the steps of
    :class:`ClientHandshake`).

    Raises:
        AuthenticationError: the token check failed either way.
        ProtocolVersionError: the server speaks another protocol version.
        ProtocolError: the server does not take ``role`` connections.
    """
    shake = ClientHandshake(token, role)
    old = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        while True:
            try:
                data = _recv_exact(sock, shake.need)
            except ConnectionError:
                if not shake.greeted:
                    raise
                if not shake.proved:
                    raise AuthenticationError(
                        "the runtime refused the cluster token; pass token= or set "
                        "FEDEXEC_TOKEN to the token of the cluster's head") from None
                raise _no_answer(role) from None
            step = shake.feed(data)
            if step.reply:
                sock.sendall(step.reply)
            if step.done:
                break
    except TimeoutError:
        if shake.proved:
            raise _no_answer(role) from None
        raise AuthenticationError("timed out authenticating to the runtime") from None
    finally:
        sock.settimeout(old)
    if shake.exception is not None:
        raise shake.exception


@dataclasses.dataclass
class HandshakeStep:
    """What a handshake's ``feed`` made of the bytes so far: ``reply`` to send now;
    once ``done``, either ``error`` (why the connection is refused or failed: send
    ``reply``, log it, close) or success, with the client's ``role`` (server side)
    and the bytes that came after the handshake (``leftover``)."""

    reply: bytes = b""
    done: bool = False
    error: str | None = None
    role: str = ""
    leftover: bytes = b""


class ClientHandshake:
    """Client side of the handshake and the HELLO exchange as a non-blocking state
    machine (a node dials another node from its event loop with it; a blocking dial
    there could wait on a peer that is itself blocked dialing us).

    ``feed(bytes)`` returns a :class:`HandshakeStep`: once the server's greeting is
    in, its ``reply`` is our proof and nonce; once the server's proof is in, our
    HELLO as ``role``; once the server's HELLO answer is in, ``done``. On failure
    ``exception`` is the error to raise (AuthenticationError, ProtocolVersionError,
    ProtocolError). ``need`` is how many more bytes the next step wants."""

    def __init__(self, token: bytes, role: str = "driver"):
        self._token = token
        self._role = role
        self._nonce = os.urandom(NONCE)
        self._buf = b""
        self.greeted = False
        self.proved = False
        self.exception: BaseException | None = None

    @property
    def need(self) -> int:
        have = len(self._buf)
        if not self.greeted:
            return max(1, len(MAGIC) + NONCE - have)
        if not self.proved:
            return max(1, MAC - have)
        if have < HEADER.size:
            return HEADER.size - have
        return max(1, HEADER.size + min(HEADER.unpack_from(self._buf)[0], _HELLO_LIMIT) - have)

    def feed(self, data: bytes) -> HandshakeStep:
        self._buf += data
        reply = b""
        if not self.greeted:
            if len(self._buf) < len(MAGIC) + NONCE:
                return HandshakeStep()
            hello, self._buf = self._buf[:len(MAGIC) + NONCE], self._buf[len(MAGIC) + NONCE:]
            if hello[:len(MAGIC)] != MAGIC:
                return self._fail(b"", AuthenticationError(
                    "the peer is not a fedexec runtime (bad greeting)"))
            self.greeted = True
            reply = _mac(self._token, b"client", hello[len(MAGIC):]) + self._nonce
        if not self.proved:
            if len(self._buf) < MAC:
                return HandshakeStep(reply)
            proof, self._buf = self._buf[:MAC], self._buf[MAC:]
            if not hmac.compare_digest(proof, _mac(self._token, b"server", self._nonce)):
                return self._fail(reply, AuthenticationError(
                    "the runtime failed to prove it holds the cluster token"))
            self.proved = True
            reply += pack_frame(encode(Hello(PROTOCOL_VERSION, __version__, self._role)))
        if len(self._buf) < HEADER.size:
            return HandshakeStep(reply)
        (size,) = HEADER.unpack_from(self._buf)
        end = HEADER.size + size
        if size > _HELLO_LIMIT:
            return self._fail(reply, _no_answer(self._role))
        if len(self._buf) < end:
            return HandshakeStep(reply)
        try:
            (answer,) = FrameReader(_HELLO_LIMIT).feed(self._buf[:end])
        except Exception:
            return self._fail(reply, _no_answer(self._role))
        if isinstance(answer, dict) and answer.get("error"):
            return self._fail(reply, decode_error(answer["error"]))
        if not isinstance(answer, dict) or answer.get("protocol") != PROTOCOL_VERSION:
            return self._fail(reply, ProtocolVersionError(_mismatch(
                "the runtime", answer, f"this {self._role}", _answer())))
        try:
            decode_map(answer, HelloAnswer)
        except MalformedMessage as exc:
            return self._fail(reply, exc)
        return HandshakeStep(reply, True, None, "", self._buf[end:])

    def _fail(self, reply: bytes, exc: BaseException) -> HandshakeStep:
        self.exception = exc
        return HandshakeStep(reply, True, str(exc))


class ServerHandshake:
    """Server side of the handshake and the HELLO exchange, as a non-blocking state
    machine: ``greeting()`` is sent first; ``feed(bytes)`` returns a
    :class:`HandshakeStep`. Nothing is decoded before the client proved the token;
    a client whose role is not in ``roles`` or whose protocol version differs is
    answered with an error."""

    def __init__(self, token: bytes, roles: Collection[str] = NODE_ROLES,
                 server: str = "the node manager"):
        self._token = token
        self._roles = roles
        self._server = server
        self._nonce = os.urandom(NONCE)
        self._buf = b""
        self._authenticated = False

    def greeting(self) -> bytes:
        return MAGIC + self._nonce

    def feed(self, data: bytes) -> HandshakeStep:
        self._buf += data
        reply = b""
        if not self._authenticated:
            if len(self._buf) < MAC + NONCE:
                return HandshakeStep()
            mac, nonce_c = self._buf[:MAC], self._buf[MAC:MAC + NONCE]
            if not hmac.compare_digest(mac, _mac(self._token, b"client", self._nonce)):
                return HandshakeStep(done=True, error="it failed the cluster-token check")
            self._authenticated = True
            self._buf = self._buf[MAC + NONCE:]
            reply = _mac(self._token, b"server", nonce_c)
        if len(self._buf) < HEADER.size:
            return HandshakeStep(reply)
        (size,) = HEADER.unpack_from(self._buf)
        if size > _HELLO_LIMIT:
            return self._refuse(reply, ProtocolError(
                f"a {size}-byte HELLO is over the {_HELLO_LIMIT}-byte limit"))
        end = HEADER.size + size
        if len(self._buf) < end:
            return HandshakeStep(reply)
        try:
            (hello,) = FrameReader(_HELLO_LIMIT).feed(self._buf[:end])
        except Exception as exc:
            return self._refuse(reply, ProtocolError(f"its HELLO could not be decoded: {exc}"))
        if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL_VERSION:
            who = hello.get("role") if isinstance(hello, dict) else None
            return self._refuse(reply, ProtocolVersionError(_mismatch(
                self._server, _answer(), f"the connecting {who or 'client'}", hello)))
        try:
            role = decode_map(hello, Hello).role
        except MalformedMessage as exc:
            return self._refuse(reply, exc)
        if role not in self._roles:
            return self._refuse(reply, ProtocolError(
                f"{self._server} takes {', '.join(map(str, self._roles))} connections, not "
                f"{role!r}: check the address (a job agent and a node manager listen on "
                "different ports)"))
        answer = pack_frame(_answer())
        return HandshakeStep(reply + answer, True, None, str(role), self._buf[end:])

    def _refuse(self, reply: bytes, exc: ProtocolError) -> HandshakeStep:
        answer = pack_frame(_answer(exc))
        return HandshakeStep(reply + answer, done=True, error=str(exc))
