"""The node manager's records: one class per table of its state (see the state
schema in ``node.py``'s docstring). Plain slotted records, no behaviour beyond
their own fields; the node manager and its components (``federation.py`` ...)
read and write them.

    _Conn    a connection (driver, worker, peer link) and its output buffer
    _Obj     an object: PENDING|READY, where its value is, who holds and pins it
    _Task    a task on this node; also the core's ``TaskEntry`` while the core holds it
    _Worker  a worker process (its ``slot`` is the core's view of it)
    _Peer    another node, as a logical client of this one (see ``federation.py``)
    _Actor   an actor: PENDING -> ALIVE -> (RESTARTING -> ALIVE)* -> DEAD

and ``_DEFER``, what a REQUEST handler returns when its reply comes later.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import time
from typing import Any

from .core.scheduler import TaskEntry, WorkerSlot
from .protocol import ClientHandshake, FrameReader, Op, ServerHandshake

__all__ = ["_DEFER", "_Actor", "_Conn", "_Obj", "_Peer", "_Task", "_Worker"]

_DEFER = object()  # a REQUEST handler's "the reply comes later"


class _Conn:
    __slots__ = (
        "auth",
        "creating",
        "declared",
        "dialing",
        "forbidden",
        "held",
        "id",
        "out",
        "peer",
        "pid",
        "reader",
        "remote",
        "role",
        "sock",
        "watching_write",
        "wbuf",
        "welcome_due",
        "woff",
        "worker",
    )

    def __init__(self, cid: int, sock: socket.socket,
                 auth: ServerHandshake | ClientHandshake | None):
        self.id = cid
        self.sock = sock
        self.auth: ServerHandshake | ClientHandshake | None = auth
        self.reader = FrameReader()
        self.out: list[Any] = []
        self.wbuf = bytearray()
        self.woff = 0  # bytes of wbuf already sent (compacted now and then, not per send)
        self.role = "?"
        self.declared = ""  # the role its HELLO exchange declared
        self.forbidden: frozenset[int] = frozenset(Op)  # the ops that role may not send
        self.pid = 0
        self.worker: _Worker | None = None
        self.held: set[str] = set()
        self.creating: set[str] = set()
        self.watching_write = False
        self.peer: _Peer | None = None  # set on a link to another node
        self.dialing: _Peer | None = None  # a link we are opening, until authenticated
        self.welcome_due = False  # a link to the head we dialed: its WELCOME comes next
        self.remote = False  # a driver on another machine: it gets bytes, not paths


class _Obj:
    __slots__ = ("contained", "holders", "home", "id", "kind", "owner", "payload", "pins",
                 "ready", "size", "subscribers", "task", "waiters")

    def __init__(self, obj_id: str, owner: int | None):
        self.id = obj_id
        self.ready = False
        self.kind = 0
        self.payload: list[Any] = []
        self.holders: set[int] = set()
        self.pins = 0
        self.subscribers: set[int] = set()
        self.waiters: list[Any] = []  # tasks / actors waiting for it
        self.contained: list[str] = []
        self.owner = owner
        self.size = 0
        self.task: str | None = None
        self.home: int | None = None  # the peer we hold it from (a proxy, a remote result)

    def message(self) -> list[Any]:
        return [Op.OBJECT, self.id, self.kind, *self.payload]


class _Task(TaskEntry):
    """A task on this node. It is the core's record too (``TaskSubmitted.entry``):
    while the core holds it (QUEUED, ASSIGNED, REVOKING) the core writes ``state``,
    ``worker`` (a worker id) and ``retries_left``; otherwise this shell does."""

    __slots__ = ("actor_id", "children", "contained", "deps", "live", "missing", "node",
                 "owner", "parent", "payload", "return_ids", "started", "strategy",
                 "submitted")

    def __init__(self, task_id: str, return_ids: list[str], name: str, demand: dict[str, float],
                 max_retries: int, deps: list[str], contained: list[str], payload: Any,
                 owner: int, actor_id: str | None = None):
        self.id = task_id
        self.return_ids = return_ids
        self.name = name
        self.demand = demand
        self.retries_left = max_retries
        self.deps = deps
        self.contained = contained
        self.payload = payload
        self.owner = owner
        self.actor_id = actor_id
        self.state = "WAITING"
        self.worker = None
        self.missing = 0
        self.parent: str | None = None
        self.children: list[str] = []
        self.strategy: Any = None      # None | "SPREAD" | "LOCAL" | ["NODE", id, soft]
        self.node: int | None = None   # the peer it was forwarded to
        self.live = 0                  # lineage: its results still held elsewhere
        self.started = 0.0             # when it last started on a worker (monotonic)
        self.submitted = time.monotonic()  # when this node got it


class _Worker:
    __slots__ = ("conn", "id", "log_buf", "log_fd", "pid", "slot")

    def __init__(self, worker_id: str, pid: int, log_fd: int, slot: WorkerSlot):
        self.id = worker_id
        self.pid = pid
        self.conn: _Conn | None = None
        self.log_fd = log_fd
        self.log_buf = b""
        self.slot = slot  # the core's view (state, lease, pipeline): read only here


class _Actor:
    __slots__ = ("address", "contained", "death", "demand_create", "demand_life", "deps",
                 "direct", "direct_owners", "id", "inflight", "kill_requested", "missing",
                 "name", "namespace", "owner", "payload", "queue", "restarts_used", "spec",
                 "started", "state", "worker")

    def __init__(self, actor_id: str, spec: dict[str, Any], payload: Any, deps: list[str],
                 contained: list[str], owner: int):
        self.id = actor_id
        self.spec = spec
        self.name = spec.get("name")
        self.namespace = spec.get("namespace") or "default"
        self.payload = payload
        self.deps = deps
        self.contained = contained
        self.owner = owner
        self.demand_create = spec["demand_create"]
        self.demand_life = spec["demand_life"]
        self.state = "PENDING"
        self.worker: _Worker | None = None
        self.queue: collections.deque[_Task] = collections.deque()
        self.inflight: dict[str, _Task] = {}
        self.restarts_used = 0
        self.death = ""
        self.kill_requested = False
        self.missing = 0
        self.started = 0.0  # when its current worker was given it (monotonic)
        # Direct calls (see direct.py): where its worker takes them ([worker id, path]),
        # the unfinished ones (task id -> caller conn) and how many each caller has.
        self.address: list[str] | None = None
        self.direct: dict[str, int] = {}
        self.direct_owners: collections.Counter[int] = collections.Counter()

    def direct_reset(self) -> None:
        """Its worker is gone: no direct calls to it any more (its socket goes)."""
        if self.address is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.address[1])
        self.address = None
        self.direct.clear()
        self.direct_owners.clear()

class _Peer:
    """Another node, as a logical client of this one (see the module docstring)."""

    __slots__ = ("address", "creating", "dial", "dial_at", "down", "forwarded", "forwards",
                 "held", "id", "link", "node_id", "out", "pid", "role", "sent", "taken",
                 "taken_told", "worker")

    def __init__(self, vcid: int, node_id: str, address: str):
        self.id = vcid
        self.node_id = node_id
        self.address = address
        self.link: _Conn | None = None
        self.out: list[Any] = []
        self.held: set[str] = set()
        self.creating: set[str] = set()
        self.role = "node"
        self.worker = None
        self.pid = 0
        # Work forwarded there (tasks, actors) that its reports may not count yet
        # (see federation.py, "Forwarded work"): [number, CPUs, when] each, their CPUs
        # summed in ``sent``; ``forwarded`` numbers them.
        self.forwards: collections.deque[tuple[int, float, float]] = collections.deque()
        self.forwarded = 0
        self.sent = 0.0
        self.taken = 0       # work it forwarded here, counted as it comes
        self.taken_told = 0  # ... up to which we told it we count it (FWD_SEEN)
        self.down = 0.0     # when a connection attempt last failed
        self.dial: _Conn | None = None  # the link being opened (handshake in flight)
        self.dial_at = 0.0
