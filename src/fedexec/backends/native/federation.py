"""Node to node: joining the head, heartbeats, peers, object transfer, spillback and
node loss. A component the node manager owns (``NodeManager.federation``, a
:class:`Federation`), over :class:`FederationNode`, what it uses of the node (the
objects and tasks tables, connections and the loop, actors, the other components).
Its own state: the membership table (the node aliases it as ``members``), ``peers``,
the pulls and incoming transfers, relayed requests, lineage, GATHERs, and the ticks'
bookkeeping; its message handlers are :attr:`Federation.OPS` (bound into the node's
``op_table``) and its REQUEST call is GATHER.

Why this module is over 600 lines: the peer links, the heartbeats and node loss,
lineage and forwarding all read and write the same peer table, membership and
the node's objects; object transfer, the part with its own state, is
``transfers.py``. The next seam is the links (dialing, HELLO/WELCOME, rejoining
the head) as their own component.

A *peer* is another node. It is a client of this node like a driver is — it
submits tasks (SUBMIT), holds references (INCREF/DECREF), subscribes to objects —
so the node's handlers serve it unchanged; a :class:`_Peer` is that logical
client, registered in ``conns`` under its own id, sending over one TCP link
(opened by whichever side spoke first)::

    node A ──SUBMIT (strategy LOCAL), INCREF, SUBSCRIBE, PULL──▶ node B
    node A ◀──OBJECT (large ones as REMOTE@B), STARTED, CHUNK── node B
    every node ──HELLO, HEARTBEAT──▶ head ──WELCOME, VIEW (changed rows)──▶ every node

Rules that keep reference counting exact across nodes:

* A node that learns an object id from a peer (a dependency, a ref inside a
  value) and does not know it makes a *proxy* whose ``home`` is that peer, and
  takes a hold there (INCREF, then SUBSCRIBE for its value). The sender's own
  hold (a task pin, a container pin) lasts until after the INCREF arrives, as
  both travel in order on one link. Freeing a proxy sends DECREF home.
* A large object crosses as ``REMOTE@node`` (where its bytes are); whoever needs
  the bytes PULLs them from that node (chunked; concurrent pulls of one object
  are merged; the copy is cached here and freed by reference counting).
* A forwarded task stays in its origin's ``tasks`` (pinning its arguments) until
  its results come back; if they stay on the other node and retries remain, the
  task is kept as *lineage* so a lost result can be rebuilt by running it again.

Forwarded work: a task forwarded to a peer, or an actor created there, counts
against the peer's CPUs here (``_Peer.sent``) until the peer says it took it in:
each report tick it tells every node that forwarded it work (FWD_SEEN) how many
forwards it took and what it has free as of that report (``Membership.report``,
numbered by ``beat``: an older row from the head never undoes it). Then a burst
of actors placed one after another does not pick the same node twice, whichever
report comes first. A forward never acknowledged (a message lost with its link)
stops counting after ``_FORWARD_TTL_S``.

Cluster-wide state (``fedexec status`` / ``fedexec list``): the node a client asks
sends the same STATS or LIST request to every other node over the peer links and
answers with each node's reply (GATHER); a dead node, or one silent for the
gather's timeout, is reported as such.

Node loss: the head declares a node dead after ``heartbeat_timeout`` seconds
without a heartbeat and tells everyone (a VIEW row with alive=False). Each node
then retries the tasks it forwarded there (if ``max_retries`` allows), rebuilds
lost objects from lineage, fails the rest with ``NodeDiedError`` /
``ObjectLostError``, and drops the holds that node had here.

Head loss: nodes rejoin the head at the same address each tick. A head restarted
with its ``state_dir`` knows the node table; one restarted without it knows only
the nodes that rejoined it so far, so a rejoining node keeps the others it does not
list alive for ``heartbeat_timeout`` (to rejoin too) and only then takes them for
dead, as above.

Link loss before that: if a link to a node breaks while the node is still alive
in the view, the actor calls sent there fail with ``ActorUnavailableError`` (they
may or may not have run); messages not sent yet wait in the peer's ``out`` (the
link is tried again each tick). At its death, actor calls never sent there go to
the actor restarted elsewhere, if any.

Links: a node dials a peer without blocking its loop (non-blocking connect, the
handshake run by the loop, ``_DIAL_TIMEOUT``), so two nodes dialing each other at
once both get through; messages wait in the peer's ``out`` until the link is up.
The head never dials: nodes (re)join it themselves.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import time
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .._scheduling import fits
from .core.events import Withdraw
from .membership import Membership
from .protocol import (
    FORBIDDEN,
    Call,
    ClientHandshake,
    ErrorKind,
    FrameReader,
    Kind,
    Op,
    client_handshake,
    pack_frame,
)
from .records import _DEFER, _Conn, _Obj, _Peer, _Task
from .transfers import Transfers

if TYPE_CHECKING:
    import selectors

    from .._scheduling import ResourcePool
    from .actor_directory import ActorLocator
    from .actors import ActorTable
    from .core.scheduler import LocalScheduler
    from .events import EventStream
    from .pending_actors import PendingActorsHost
    from .persistence import HeadPersistence
    from .store import StoreManager

__all__ = ["Federation", "FederationNode"]

_FORWARD_TTL_S = 10.0       # a forward never acknowledged (FWD_SEEN) stops counting

_LOCALITY_MIN = 1 << 20     # argument bytes elsewhere that make a task follow its data
_GATHER_TIMEOUT = 5.0       # seconds a cluster-wide GATHER waits for each node
_DIAL_TIMEOUT = 2.0         # seconds a link to a peer may take to open and authenticate
_GATHERABLE = (Call.STATS, Call.LIST, Call.AUTOSCALER_REPORT)


class _Gather:
    """A GATHER request waiting for other nodes' answers (see ``_call_gather``)."""

    __slots__ = ("cid", "deadline", "done", "req", "results", "timeout", "waiting")

    def __init__(self, cid: int, req: int, timeout: float):
        self.cid, self.req, self.timeout = cid, req, timeout
        self.deadline = time.monotonic() + timeout
        self.results: dict[str, list[Any]] = {}
        self.waiting: dict[int, str] = {}  # relay id -> node id
        self.done = False


def _unsent_calls(peer: _Peer) -> set[str]:
    """Ids of the actor calls still waiting in ``peer.out`` (no link took them yet)."""
    return {m[2] for m in peer.out if m[0] == Op.ACTOR_CALL}


def _recv_frames(sock: socket.socket, reader: FrameReader, timeout: float
                 ) -> list[list[Any]]:
    """Read until at least one frame arrived, blocking (only while joining, before
    the loop owns the socket); every frame read (``reader`` keeps a partial one)."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the head closed the connection")
            frames = reader.feed(data)
            if frames:
                return frames
    finally:
        sock.settimeout(None)


class FederationNode(Protocol):
    """What :class:`Federation` uses of the node manager: its objects and tasks
    tables, its connections and loop, its actors, the other components."""

    _dirty: bool
    _next_conn: int
    stopping: bool

    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def token(self) -> bytes: ...
    @property
    def node_id(self) -> str: ...
    @property
    def tcp_address(self) -> str | None: ...
    @property
    def socket_path(self) -> str: ...
    @property
    def objects(self) -> dict[str, _Obj]: ...
    @property
    def tasks(self) -> dict[str, _Task]: ...
    @property
    def conns(self) -> dict[Any, Any]: ...  # connections and peers by id
    @property
    def named(self) -> dict[tuple[str, str], str]: ...
    @property
    def actor_table(self) -> ActorTable: ...
    @property
    def remote_actors(self) -> dict[str, dict[str, Any]]: ...
    @property
    def sel(self) -> selectors.BaseSelector: ...
    @property
    def store(self) -> StoreManager: ...
    @property
    def pool(self) -> ResourcePool: ...
    @property
    def core(self) -> LocalScheduler: ...
    @property
    def event_stream(self) -> EventStream: ...
    @property
    def persistence(self) -> HeadPersistence: ...
    @property
    def locator(self) -> ActorLocator: ...
    @property
    def pending(self) -> PendingActorsHost: ...
    @property
    def call_table(self) -> Mapping[int, Callable[..., Any]]: ...
    @property
    def _request_id(self) -> int: ...
    @property
    def _pending_out(self) -> set[Any]: ...

    def _send(self, cid: int | None, msg: list[Any]) -> None: ...
    def _handle(self, conn: _Conn | _Peer, msg: list[Any]) -> None: ...
    def _close(self, conn: _Conn) -> None: ...
    def _log(self, text: str) -> None: ...
    def _origin(self, conn: _Conn | _Peer) -> str: ...
    def _pin(self, oid: str) -> None: ...
    def _unpin(self, oid: str) -> None: ...
    def _maybe_free(self, obj: _Obj) -> None: ...
    def _lost(self, oid: str) -> _Obj: ...
    def _set_object(self, obj: _Obj, result: list[Any]) -> None: ...
    def _deliverable(self, obj: _Obj) -> list[Any]: ...
    def _await_deps(self, item: Any, ready: Any, localize: bool = True) -> None: ...
    def _enqueue(self, task: _Task) -> None: ...
    def _cancel(self, task_id: str, force: bool, recursive: bool) -> None: ...
    def _fail_task(self, task: _Task, kind: ErrorKind, message: str) -> None: ...


class Federation:
    """The multi-node half of the node manager (see the module docstring): a
    component it owns (``NodeManager.federation``), over the node's state as
    :class:`FederationNode` shows it."""

    # ------------------------------------------------------------ life cycle
    def __init__(self, node: FederationNode) -> None:
        self.node = node
        cfg = node.config
        self.interval = float(cfg.get("heartbeat_interval") or 0.5)
        self.members = Membership(float(cfg.get("heartbeat_timeout") or 5.0))
        self.head_address: str | None = cfg.get("head_address")
        self.is_head = self.head_address is None
        self.head_id: str | None = self.node.node_id if self.is_head else None
        self.peers: dict[str, _Peer] = {}
        self.relays: dict[int, tuple[int | None, int, str, Any]] = {}
        self._next_relay = 1
        self.lineage: dict[str, _Task] = {}
        self.gathers: list[_Gather] = []
        self._sent_version: dict[str, int] = {}
        self._spread = 0
        self._last_tick = 0.0
        self._beat = 0  # the number of our last report (see "Forwarded work")
        self.spill_due = False
        self._fits_nowhere: dict[frozenset[tuple[str, float]], int] = {}  # shape -> version
        # Nodes a replaced head did not list yet, each with the time it must by.
        self._unconfirmed: dict[str, float] = {}
        # Dials the head again when its link is lost (not a peer: its id may change).
        self._head_dialer = _Peer(-1, "", self.head_address or "")
        self._head_lost_logged = 0.0
        self.transfers = {"pulls": 0, "pulled_bytes": 0, "served": 0, "served_bytes": 0,
                          "forwarded_tasks": 0}
        self.transfer = Transfers(node, self)  # objects' bytes between nodes

    def start(self) -> None:
        """Enter our own row; join the head if we are not it."""
        self.members.join(self.node.node_id, self.node.tcp_address or "", dict(self.node.pool.total),
                          time.monotonic())
        if self.is_head:
            self.node.persistence.recover()
        else:
            self._join_head(timeout=15.0)

    def _hello_info(self) -> dict[str, Any]:
        return {"address": self.node.tcp_address or "", "total": dict(self.node.pool.total)}

    def _hello_frame(self) -> bytes:
        """This node's HELLO on a link it opened."""
        return pack_frame([[Op.HELLO, "node", os.getpid(), self.node.node_id, self._hello_info()]])

    def _dialing(self, peer: _Peer, now: float) -> bool:
        """Is a link to ``peer`` being opened? (One that took too long is given up.)"""
        if peer.dial is None:
            return False
        if now - peer.dial_at > _DIAL_TIMEOUT:
            self.node._close(peer.dial)  # -> _dial_failed
        return True

    def _open_link(self, address: str, timeout: float) -> socket.socket:
        from .cluster import connect

        host, _, port = address.rpartition(":")
        sock = connect(("tcp", host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout)
        try:
            client_handshake(sock, self.node.token, timeout=timeout, role="node")
            sock.sendall(self._hello_frame())
        except BaseException:
            sock.close()
            raise
        return sock

    def _adopt_link(self, sock: socket.socket, peer: _Peer) -> _Conn:
        sock.setblocking(False)
        conn = _Conn(self.node._next_conn, sock, None)
        self.node._next_conn += 1
        conn.auth = None
        conn.role = "node"
        conn.declared, conn.forbidden = "node", FORBIDDEN["node"]
        conn.peer = peer
        self.node.conns[conn.id] = conn
        self.node.sel.register(sock, 1, conn)  # EVENT_READ
        if peer.link is None:
            peer.link = conn
        return conn

    def _join_head(self, timeout: float) -> None:
        """Join the head at start: connect, say HELLO, take its WELCOME (blocking,
        bounded; raises if the head cannot be reached). Later joins do not block: see
        ``_rejoin``."""
        reader = FrameReader()
        sock = self._open_link(self.head_address or "", timeout)
        frames = _recv_frames(sock, reader, timeout)
        frame, later = frames[0], frames[1:]
        msg = next((m for m in frame if m[0] == Op.WELCOME), None)
        if msg is None:
            sock.close()
            raise ConnectionError(f"the head at {self.head_address} did not welcome this "
                                  f"node: {frame!r:.200}")
        peer = self._welcomed(msg)
        conn = self._adopt_link(sock, peer)
        conn.reader = reader  # what the head sent right after WELCOME is not lost
        for m in frame:
            if m[0] != Op.WELCOME:
                self.node._handle(peer, m)
        for f in later:
            for m in f:
                self.node._handle(peer, m)

    def _rejoin(self, now: float) -> None:
        """(Node, link to the head lost) dial the head again without blocking the
        loop, as ``_dial`` does for peers: a head that is restarting, or a host that
        does not answer, must not stall this node's work. The HELLO goes out once
        the link is authenticated (``_dialed``); the WELCOME is ``_on_welcome``."""
        dialer = self._head_dialer
        if self._dialing(dialer, now) or now - dialer.down < self.interval:
            return
        dialer.address = self.head_address or ""
        self._dial(dialer, now)
        if dialer.dial is None and now - self._head_lost_logged > 10.0:
            self._head_lost_logged = now
            sys.stderr.write(f"fedexec node: cannot reach the head at {self.head_address}; "
                             "retrying\n")

    def _on_welcome(self, conn: Any, msg: list[Any]) -> None:
        """The head answered the HELLO of a link ``_rejoin`` opened."""
        if not getattr(conn, "welcome_due", False):
            self.node._log(f"dropped a WELCOME from {self.node._origin(conn)}: no join was asked")
            return
        conn.welcome_due = False
        peer = self._welcomed(msg)
        conn.peer = peer
        if peer.link is None:
            peer.link = conn
        self.node.persistence.rejoined()
        self.node._pending_out.add(peer)

    def _welcomed(self, msg: list[Any]) -> _Peer:
        """Take the head's WELCOME (its id and node table): the head's peer."""
        _, head_id, rows = msg
        old_head = self.head_id
        self.head_id = head_id
        listed = {r[0] for r in rows}
        replaced = old_head is not None and old_head != head_id
        deadline = time.monotonic() + self.members.timeout
        for node_id in [n for n in self.members.nodes if n not in listed and n != self.node.node_id]:
            if replaced and node_id != old_head and self.members.is_alive(node_id):
                # A new head (restarted without its state) knows only the nodes that
                # rejoined it so far: the others get a heartbeat timeout to do so.
                self._unconfirmed.setdefault(node_id, deadline)
            elif self.members.mark_dead(node_id):  # the same head forgot it: it is gone
                self._node_dead(node_id, "the head no longer lists it")
        if replaced and old_head is not None:
            self._node_dead(old_head, "the head was replaced")
        self._apply_view([r for r in rows if r[0] != self.node.node_id])
        self.node._dirty = True
        return self.peer(head_id, self.head_address)

    # ------------------------------------------------------------------ peers
    def peer(self, node_id: str, address: str | None = None) -> _Peer:
        peer = self.peers.get(node_id)
        if peer is None:
            if address is None:
                entry = self.members.nodes.get(node_id)
                address = entry.address if entry is not None else ""
            peer = _Peer(self.node._next_conn, node_id, address)
            self.node._next_conn += 1
            self.peers[node_id] = peer
            self.node.conns[peer.id] = peer
        elif address:
            peer.address = address
        return peer

    def peer_link(self, peer: _Peer) -> _Conn | None:
        """The connection to send to ``peer`` on, opened now if needed (None: not
        reachable now; messages wait for the next attempt or its death)."""
        if peer.link is not None:
            return peer.link
        if self.is_head:
            # Nodes (re)join the head themselves, every tick. Were the head to dial a
            # node at the same moment, both loops would block in their handshakes.
            return None
        now = time.monotonic()
        if self._dialing(peer, now):
            return None
        if not peer.address or now - peer.down < 1.0:
            return None
        self._dial(peer, now)
        return None

    def _dial(self, peer: _Peer, now: float) -> None:
        """Start opening a link to ``peer`` without blocking the loop: two nodes that
        dial each other at once would otherwise each wait on the other's handshake
        (and miss heartbeats meanwhile). ``_read`` runs the handshake; ``_dialed``
        then says HELLO and sends what waited in ``peer.out``."""
        host, _, port = peer.address.rpartition(":")
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(
                host.strip("[]") or "127.0.0.1", int(port), type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
        except (OSError, ValueError):
            peer.down = now
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sock.connect_ex(addr) not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            peer.down = now
            return
        conn = _Conn(self.node._next_conn, sock, ClientHandshake(self.node.token, role="node"))
        self.node._next_conn += 1
        conn.role = "node"
        conn.declared, conn.forbidden = "node", FORBIDDEN["node"]
        conn.dialing = peer
        self.node.conns[conn.id] = conn
        self.node.sel.register(sock, 1 | 2, conn)  # EVENT_READ | EVENT_WRITE (connected)
        conn.watching_write = True
        peer.dial, peer.dial_at = conn, now

    def dialed(self, conn: _Conn) -> None:
        """A link we dialed is authenticated: say HELLO, then send what waited."""
        peer, conn.dialing = conn.dialing, None
        assert peer is not None
        if peer.dial is conn:
            peer.dial = None
        if peer is self._head_dialer:  # rejoining: the head's WELCOME names its peer
            conn.welcome_due = True
            conn.wbuf += self._hello_frame()
            self.node._pending_out.add(conn)
            return
        if self.peers.get(peer.node_id) is not peer:
            self.node._close(conn)  # declared dead meanwhile
            return
        conn.wbuf += self._hello_frame()
        conn.peer = peer
        if peer.link is None:
            peer.link = conn
        self.node._pending_out.add(conn)
        self.node._pending_out.add(peer)

    def dial_failed(self, conn: _Conn) -> None:
        """A link we dialed did not open (refused, timed out, failed the handshake):
        its messages wait in ``peer.out`` for the next attempt or its death."""
        peer, conn.dialing = conn.dialing, None
        if peer is not None and peer.dial is conn:
            peer.dial = None
            peer.down = time.monotonic()

    def node_hello(self, conn: _Conn, msg: list[Any]) -> None:
        """A node connected to us (HELLO with role "node")."""
        node_id, info = msg[3], msg[4] if len(msg) > 4 else {}
        if not self.members.is_alive(node_id) and node_id in self.members.nodes \
                and not self.is_head:
            self.node._close(conn)  # declared dead: it must not come back under that id
            return
        peer = self.peer(node_id, info.get("address") or None)
        conn.peer = peer
        conn.role = "node"
        if peer.link is None:
            peer.link = conn
        if self.is_head:
            entry = self.members.nodes.get(node_id)
            if entry is not None and not entry.alive:
                # It was declared dead: its work was retried elsewhere. Tell it to go.
                conn.wbuf += pack_frame([[Op.NODE_DEAD, node_id, "declared dead earlier"]])
                self.node._pending_out.add(conn)
                return
            self.members.join(node_id, info.get("address", ""), info.get("total", {}),
                              time.monotonic())
            self.node.event_stream.log.node_event(node_id, "ALIVE")
            self.node.persistence.node_joined(node_id)
            conn.wbuf += pack_frame([[Op.WELCOME, self.node.node_id,
                                      [e.row() for e in self.members.nodes.values()]]])
            self._sent_version[node_id] = self.members.version
            self.node._pending_out.add(conn)
            self.node._dirty = self.spill_due = True

    def link_closed(self, conn: _Conn) -> None:
        peer = conn.peer
        if peer is not None and peer.link is conn:
            peer.link = next((c for c in self.node.conns.values()
                              if getattr(c, "peer", None) is peer and c is not conn), None)
        if peer is not None and self.peers.get(peer.node_id) is peer and not self.node.stopping \
                and self.members.is_alive(peer.node_id):
            self._calls_unreachable(peer)

    def _calls_unreachable(self, peer: _Peer) -> None:
        """A link to ``peer`` broke while the node is not declared dead: the actor
        calls sent there fail with ActorUnavailableError (they may or may not have
        run). Calls not sent yet wait in ``peer.out`` for the link to come back or
        the node to be declared dead (see ``_node_dead``)."""
        unsent = _unsent_calls(peer)
        for task in [t for t in self.node.tasks.values() if t.state == "FORWARDED"
                     and t.node == peer.id and t.actor_id is not None and t.id not in unsent]:
            self.node._fail_task(task, ErrorKind.ACTOR_UNAVAILABLE, (
                f"actor call {task.name!r} ({task.id}): the connection to node "
                f"{peer.node_id}, where actor {task.actor_id} lives, broke before the call "
                "answered, and the node is not declared dead (yet). The call may or may not "
                "have run. Retry it later: a retry waits until the node is reachable again "
                "(it runs there) or declared dead (it runs on the actor restarted elsewhere "
                "per max_restarts, or raises ActorDiedError)."))

    # ------------------------------------------------------------- heartbeats
    def tick(self, now: float) -> None:
        """Once per ``interval``: report, expire, broadcast changes. (Every turn:
        answer the gathers whose time is up; place the pending actors a changed
        cluster may now host, see pending_actors.py.)"""
        if self.gathers:
            self._expire_gathers(now)
        if self.node.locator.locating:
            self.node.locator.expire_locates(now)
        if self.node.pending.table:
            self.node.pending.place()  # only once the cluster's shape changed
        if now - self._last_tick < self.interval:
            return
        for node_id, deadline in list(self._unconfirmed.items()):
            if now >= deadline:
                del self._unconfirmed[node_id]
                if self.members.mark_dead(node_id):
                    self._node_dead(node_id, "the restarted head does not list it: it did "
                                             f"not rejoin within {self.members.timeout:g} s")
        # On schedule (no drift), unless we fell far behind.
        self._last_tick = max(self._last_tick + self.interval, now - self.interval)
        for peer in self.peers.values():
            if peer.out and peer.link is None:
                self.node._pending_out.add(peer)  # try the link again: messages wait for it
        self._beat = beat = max(self._beat + 1, time.time_ns())
        available, queued = self.node.core.free(), self.node.core.queued()
        for peer in self.peers.values():
            if peer.taken != peer.taken_told:
                peer.taken_told = peer.taken
                self.node._send(peer.id, [Op.FWD_SEEN, peer.taken, beat, available, queued])
            if peer.forwards and peer.forwards[0][2] < now - _FORWARD_TTL_S:
                self._settle_forwards(peer, 0)
        if self.is_head:
            self.members.heartbeat(self.node.node_id, available, queued, now,
                                   self.node.pool.total, beat)
            for node_id in self.members.expire(now, exempt=self.node.node_id):
                self._node_dead(node_id, f"it missed heartbeats for "
                                         f"{self.members.timeout:g} s")
            self._broadcast_view()
            return
        head = self.peers.get(self.head_id or "")
        if head is None or head.link is None:
            self._rejoin(now)
            return
        self.node._send(head.id, [Op.HEARTBEAT, available, queued, self.node.pool.total, beat])

    def _broadcast_view(self) -> None:
        """Send each node the rows that changed since it last heard (one pass over
        the table, then per node only the changed rows: O(nodes x changes))."""
        version = self.members.version
        targets = [(e.node_id, self._sent_version.get(e.node_id, 0))
                   for e in self.members.alive() if e.node_id != self.node.node_id]
        targets = [(n, seen) for n, seen in targets if seen < version]
        if not targets:
            return
        oldest = min(seen for _, seen in targets)
        changed = [(e.version, e.row()) for e in self.members.nodes.values()
                   if e.version > oldest]
        for node_id, seen in targets:
            peer = self.peers.get(node_id)
            if peer is None:
                continue
            self._sent_version[node_id] = version
            rows = [row for v, row in changed if v > seen and row[0] != node_id]
            if rows:
                self.node._send(peer.id, [Op.VIEW, rows])

    def _on_heartbeat(self, conn: Any, msg: list[Any]) -> None:
        if not isinstance(conn, _Peer) or not self.is_head:
            return
        total = msg[3] if len(msg) > 3 else None
        beat = msg[4] if len(msg) > 4 else 0
        if not self.members.heartbeat(conn.node_id, msg[1], msg[2], time.monotonic(), total,
                                      beat):
            self.node._send(conn.id, [Op.NODE_DEAD, conn.node_id, "declared dead earlier"])
            return
        if self.node.core.queued():
            self.node._dirty = self.spill_due = True

    def _apply_view(self, rows: list[list[Any]]) -> None:
        died = self.members.apply(rows)
        for row in rows:
            self._unconfirmed.pop(row[0], None)
            peer = self.peers.get(row[0])
            if peer is not None and row[1]:
                peer.address = row[1]
        for node_id in died:
            if node_id == self.node.node_id:
                self._declared_dead("the head declared this node dead")
            else:
                self._node_dead(node_id, "the head declared it dead")
        self.node._dirty = self.spill_due = True

    def _on_view(self, conn: Any, msg: list[Any]) -> None:
        self._apply_view(msg[1])

    def _on_node_dead(self, conn: Any, msg: list[Any]) -> None:
        if msg[1] == self.node.node_id:
            self._declared_dead(msg[2])
        elif self.members.mark_dead(msg[1]) or msg[1] in self.peers:
            self._node_dead(msg[1], msg[2])

    def _declared_dead(self, why: str) -> None:
        sys.stderr.write(f"fedexec node {self.node.node_id}: {why}; exiting (its work was "
                         "retried elsewhere)\n")
        self.node.stopping = True

    # ----------------------------------------------------------- node loss
    def _node_dead(self, node_id: str, why: str) -> None:
        """Clean up after a dead node (see the module docstring)."""
        self.members.mark_dead(node_id)
        if self.is_head:
            self.node.locator.node_died(node_id)
            self.node.persistence.node_dead(node_id)
            self.node.event_stream.log.node_event(node_id, "DEAD", why)
        self._sent_version.pop(node_id, None)
        peer = self.peers.pop(node_id, None)
        if peer is None:
            self._lose_objects_at(node_id, why)
            return
        unsent = _unsent_calls(peer)
        self.node.conns.pop(peer.id, None)
        for conn in [c for c in list(self.node.conns.values()) if getattr(c, "peer", None) is peer]:
            self.node._close(conn)
        for oid in list(peer.held):
            obj = self.node.objects.get(oid)
            if obj is not None:
                obj.holders.discard(peer.id)
                obj.subscribers.discard(peer.id)
        peer.held.clear()
        for rid, (cid, req, target, on_reply) in list(self.relays.items()):
            if target == node_id:
                del self.relays[rid]
                if on_reply is not None:
                    on_reply(False, None)
                self.node._send(cid, [Op.REPLY, req, False, f"NodeDiedError: node {node_id} died"])
        for actor_id, where in list(self.node.remote_actors.items()):
            if where["node"] == node_id:
                self._restart_remote_actor(actor_id, f"node {node_id} died ({why})")
        retry = []
        for task in list(self.node.tasks.values()):
            if task.owner == peer.id and task.state in ("WAITING", "QUEUED"):
                self.node._cancel(task.id, False, False)  # its origin is gone
            elif task.state == "FORWARDED" and task.node == peer.id:
                retry.append(task)
        for task in retry:
            if task.actor_id is not None:
                # Never sent there: it goes to the actor restarted elsewhere, if any.
                if task.id in unsent:
                    task.state, task.node = "WAITING", None
                    if self.node.actor_table.route_call(task) is None:
                        continue
                self.node._fail_task(task, ErrorKind.ACTOR_DIED,
                                f"the actor's node {node_id} died ({why})" + (
                                    ", and no restarted actor is known here (max_restarts)"
                                    if task.id in unsent else ""))
                continue
            if task.retries_left == 0:
                self.node._fail_task(task, ErrorKind.NODE_DIED,
                                f"node {node_id} running task {task.name!r} died ({why}) and "
                                "max_retries is exhausted")
                continue
            if task.retries_left > 0:
                task.retries_left -= 1
            task.state, task.node = "WAITING", None
            self.node._enqueue(task)
        self._lose_objects_at(node_id, why, peer.id)
        for obj in list(self.node.objects.values()):
            self.node._maybe_free(obj)
        self.node._dirty = self.spill_due = True

    def _lose_objects_at(self, node_id: str, why: str, vcid: int | None = None) -> None:
        """Objects whose bytes or our hold were on ``node_id``: rebuild them from our
        lineage, wait for a retried task, ask their home again (the node we hold a
        proxy from rebuilds them), or fail them."""
        rebuild: dict[str, _Task] = {}
        for inc in [i for i in self.transfer.incoming.values() if i.source == node_id]:
            self.transfer._abort_incoming(inc)
        for obj in list(self.node.objects.values()):
            remote_there = obj.ready and obj.kind == Kind.REMOTE and obj.payload[0] == node_id
            held_there = vcid is not None and obj.home == vcid
            if not (remote_there or held_there):
                continue
            if held_there:
                obj.home = None
            if obj.ready and obj.kind in (Kind.INLINE, Kind.SHM, Kind.ERROR, Kind.FAILED):
                continue  # we have its value here
            task = self.lineage.get(obj.task or "")
            if task is not None and task.retries_left != 0:
                rebuild[task.id] = task
                continue
            if obj.task in self.node.tasks:
                self._unready(obj)  # its task is being retried: the result comes again
                continue
            if isinstance(self.node.conns.get(obj.home), _Peer):
                # A proxy: its home owns it (and its lineage); ask again, saying where
                # it was lost, so the home answers once it has rebuilt or failed it.
                self._unready(obj)
                self.node._send(obj.home, [Op.SUBSCRIBE, [obj.id], node_id])
                continue
            self.lose(obj, ErrorKind.OBJECT_LOST,
                       f"object {obj.id} was lost with node {node_id} ({why}), and it "
                       "cannot be rebuilt (it was put, or its task's retries are exhausted)")
        for task in rebuild.values():
            self._rebuild(task)

    def _unready(self, obj: _Obj) -> None:
        """``obj``'s value is gone but will come again: make it pending (its holders,
        subscribers and waiters stay), and wake what was pulling it (it waits again)."""
        for oid in obj.contained:
            self.node._unpin(oid)
        obj.ready, obj.kind, obj.payload, obj.contained = False, 0, [], []
        for then in self.transfer.pulls.pop(obj.id, []):
            then()

    def lost_there(self, obj: _Obj, lost: str | None) -> bool:
        """Has a peer that SUBSCRIBEd again told us of a copy on ``lost`` we still
        think is there? (The answer waits until we learn of that node's death.)"""
        if not lost:
            return False
        return obj.ready and obj.kind == Kind.REMOTE and obj.payload[0] == lost and \
            self.members.is_alive(lost)

    def lose(self, obj: _Obj, kind: ErrorKind, message: str) -> None:
        if not obj.ready:
            self.node._set_object(obj, [obj.id, Kind.FAILED, kind, message])
        else:
            for oid in obj.contained:
                self.node._unpin(oid)
            obj.contained = []
            obj.kind = Kind.FAILED
            obj.payload = [kind, message]
            for cid in obj.subscribers:  # peers that asked again (see _lost_there)
                self.node._send(cid, obj.message())
            obj.subscribers.clear()
        self.lineage_release(obj)
        for then in self.transfer.pulls.pop(obj.id, []):
            then()
        self.node._maybe_free(obj)

    def _rebuild(self, task: _Task) -> None:
        """Run a finished task again because its result was lost (lineage)."""
        del self.lineage[task.id]
        if task.retries_left > 0:
            task.retries_left -= 1
        for rid in task.return_ids:
            obj = self.node.objects.get(rid)
            if obj is None:
                continue
            obj.task = task.id
            self._unready(obj)
        task.state, task.node = "WAITING", None
        self.node.tasks[task.id] = task
        self.node._await_deps(task, self.node._enqueue, localize=False)

    def lineage_release(self, obj: _Obj) -> None:
        """``obj`` no longer needs its task kept for a rebuild."""
        task = self.lineage.get(obj.task or "")
        if task is None:
            return
        obj.task = None
        task.live -= 1
        if task.live <= 0:
            del self.lineage[task.id]
            self.release_args(task)

    # ---------------------------------------------------------------- objects
    def adopt(self, peer: _Peer, ids: list[str]) -> None:
        """Make proxies for ids ``peer`` told us of that we do not know."""
        new = [oid for oid in ids if oid not in self.node.objects]
        if not new:
            return
        for oid in new:
            obj = _Obj(oid, None)
            obj.home = peer.id
            self.node.objects[oid] = obj
        self.node._send(peer.id, [Op.INCREF, new])
        self.node._send(peer.id, [Op.SUBSCRIBE, new])

    def _on_peer_object(self, conn: Any, msg: list[Any]) -> None:
        """A peer completed an object we hold there (a result, or a proxy's value)."""
        if not isinstance(conn, _Peer):
            return
        entry = msg[1:]
        oid, kind = entry[0], entry[1]
        if kind in (Kind.INLINE, Kind.REMOTE):
            self.adopt(conn, list(entry[4]))
        obj = self.node.objects.get(oid)
        if obj is None or obj.ready:
            self.node._send(conn.id, [Op.DECREF, [oid]])
            return
        obj.home = conn.id
        task = self.node.tasks.get(obj.task or "")
        self.node._set_object(obj, entry)
        if task is not None and task.state == "FORWARDED" and all(
                (o := self.node.objects.get(r)) is None or o.ready for r in task.return_ids):
            self._forwarded_done(task)

    def _forwarded_done(self, task: _Task) -> None:
        self.node.tasks.pop(task.id, None)
        task.state = "DONE"
        remote = [o for r in task.return_ids
                  if (o := self.node.objects.get(r)) is not None and o.kind == Kind.REMOTE]
        if remote and task.retries_left != 0:
            task.live = len(remote)
            self.lineage[task.id] = task  # its arguments stay pinned, for a rebuild
            return
        self.release_args(task)

    def release_args(self, task: _Task) -> None:
        """A task is done for good: unpin its arguments, drop its payload."""
        for oid in task.deps:
            self.node._unpin(oid)
        for oid in task.contained:
            self.node._unpin(oid)
        task.payload = None

    def _on_peer_started(self, conn: Any, msg: list[Any]) -> None:
        by_owner: dict[int, list[str]] = {}
        for rid in msg[1]:
            obj = self.node.objects.get(rid)
            if obj is not None and obj.owner is not None:
                by_owner.setdefault(obj.owner, []).append(rid)
        for cid, rids in by_owner.items():
            self.node._send(cid, [Op.STARTED, rids])

    def entry_for(self, cid: int | None, obj: _Obj, msg: list[Any]) -> list[Any]:
        """``msg`` (an OBJECT message) as ``cid`` must see it: a peer gets a large
        object as REMOTE@here."""
        if obj.kind == Kind.SHM and isinstance(self.node.conns.get(cid), _Peer):
            return [Op.OBJECT, obj.id, Kind.REMOTE, self.node.node_id, obj.size, obj.contained]
        return msg

    # -------------------------------------------------------------- placement
    def place(self, task: _Task) -> _Peer | None:
        """Where a ready task runs: None for here, or the peer to forward it to."""
        strategy = task.strategy
        if strategy == "LOCAL" or len(self.members.nodes) < 2:
            return None
        demand = task.demand
        if isinstance(strategy, list):  # ["NODE", node_id, soft]
            _, node_id, soft = strategy
            if node_id == self.node.node_id:
                if self.node.pool.feasible(demand) or not soft:
                    return None
            elif self.members.is_alive(node_id) and (
                    not soft or self._fits_remote(node_id, demand)):
                return self.peer(node_id)
            elif not soft:
                self.node._fail_task(task, ErrorKind.UNAVAILABLE,
                                f"task {task.name!r} must run on node {node_id}, which is "
                                "not alive (use NodeAffinity(..., soft=True) to allow others)")
                return None
        elif strategy == "SPREAD":
            nodes = [e.node_id for e in self.members.alive() if self._feasible_on(e, demand)]
            if nodes:
                nodes.sort()
                self._spread += 1
                pick = nodes[self._spread % len(nodes)]
                return None if pick == self.node.node_id else self.peer(pick)
        return self._default_place(task)

    def place_actor(self, spec: dict[str, Any]) -> _Peer | None:
        """Where a new actor lives: None for here, or the peer to create it on.
        Raises ValueError when no live node can ever host it."""
        strategy = spec.get("strategy")
        demand = spec["demand_create"]
        if strategy == "LOCAL":
            return None
        if isinstance(strategy, list):  # ["NODE", node_id, soft]
            _, node_id, soft = strategy
            if node_id == self.node.node_id and (self.node.pool.feasible(demand) or not soft):
                return None
            if node_id != self.node.node_id and self.members.is_alive(node_id):
                return self.peer(node_id)
            if not soft:
                raise ValueError(f"no alive node with id {node_id!r} to place the actor on")
        elif strategy == "SPREAD":
            nodes = sorted(e.node_id for e in self.members.alive()
                           if self._feasible_on(e, demand))
            if nodes:
                self._spread += 1
                pick = nodes[self._spread % len(nodes)]
                return None if pick == self.node.node_id else self.peer(pick)
        if not self.node.pool.feasible(demand):
            return self.best_remote(demand, need_room=False)
        if not self.node.pool.fits(demand):
            return self.best_remote(demand, need_room=True)
        return None

    def create_remote_actor(self, peer: _Peer, conn: Any, actor_id: str,
                             spec: dict[str, Any], payload: Any, deps: list[str],
                             contained: list[str]) -> None:
        """Create an actor on ``peer`` for client ``conn``; remember where it went (for
        its name, and calls arriving here)."""
        spec = {**spec, "strategy": "LOCAL", "owner_node": self.node.node_id}
        entry = self.node.remote_actors.get(actor_id)
        if entry is None:
            # Kept (arguments pinned) so the actor can be made again elsewhere if its
            # node dies and max_restarts allows.
            entry = {"node": peer.node_id, "spec": spec, "payload": payload, "deps": deps,
                     "contained": contained, "owner": conn.id if conn is not None else None,
                     "restarts": 0}
            for oid in deps + contained:
                self.node._pin(oid)
        entry["node"] = peer.node_id
        self.node.remote_actors[actor_id] = entry
        self.charge(peer, spec["demand_create"])

        def done(ok: bool, value: Any) -> None:
            if not ok or not isinstance(value, list):
                self.drop_remote_actor(actor_id)
                return
            rid, rspec = value
            if rid != actor_id:  # get_if_exists found another
                self.drop_remote_actor(actor_id)
                return
            entry["spec"] = rspec
            if rspec.get("name") is not None:
                self.node.named[(rspec.get("namespace") or "default", rspec["name"])] = rid

        self.relay(peer, Call.CREATE_ACTOR, [actor_id, spec, payload, deps, contained],
                    conn.id if conn is not None else None, self.node._request_id, done)

    def drop_remote_actor(self, actor_id: str) -> None:
        entry = self.node.remote_actors.pop(actor_id, None)
        if entry is None:
            return
        for oid in entry["deps"] + entry["contained"]:
            self.node._unpin(oid)

    def _restart_remote_actor(self, actor_id: str, why: str) -> None:
        """An actor we placed on a node that died: make it again elsewhere, if its
        ``max_restarts`` allows and its creator is still here."""
        entry = self.node.remote_actors[actor_id]
        spec = dict(entry["spec"])
        limit = spec.get("max_restarts", 0)
        owner = self.node.conns.get(entry["owner"]) if entry["owner"] is not None else None
        if owner is None or not (limit == -1 or entry["restarts"] < limit):
            self.drop_remote_actor(actor_id)
            self.node.locator.gone(actor_id, spec)  # the head frees its name
            return
        entry["restarts"] += 1
        spec["strategy"] = None
        spec.pop("node_id", None)
        sys.stderr.write(f"fedexec: restarting actor {actor_id} elsewhere: {why}\n")
        try:
            peer = self.place_actor(spec)
        except ValueError:
            peer = None
            if not self.node.pool.feasible(spec["demand_create"]) and \
                    spec.get("await_node") == "group":
                self.drop_remote_actor(actor_id)
                self.node.locator.gone(actor_id, spec)
                return
        args = [entry["payload"], entry["deps"], entry["contained"]]
        if peer is None and not self.node.pool.feasible(spec["demand_create"]) and \
                spec.get("await_node") != "group":
            # No live node fits it: it waits for a node the autoscaler launches, or,
            # when none may, it is dead (see pending_actors.py).
            with contextlib.suppress(Exception):
                self.node.pending.restart(owner, actor_id, spec, args, entry["restarts"])
            self.drop_remote_actor(actor_id)  # after: it pins the arguments itself
            return
        if peer is None:  # here, after all
            spec["strategy"] = "LOCAL"
            with contextlib.suppress(Exception):
                self.node.actor_table.create(owner, actor_id, spec, args[0], args[1], args[2],
                                        restart=True)
            self.drop_remote_actor(actor_id)  # after: it pins the arguments itself
            return
        self.create_remote_actor(peer, None, actor_id, spec, *args)

    def forward_call(self, task: _Task, peer: _Peer) -> None:
        """Send an actor call to the node its actor lives on (in order, at once: that
        node waits for its arguments)."""
        task.state = "FORWARDED"
        task.node = peer.id
        self.node._send(peer.id, [Op.ACTOR_CALL, task.actor_id, task.id, task.return_ids,
                             task.name, task.deps, task.contained, task.payload])

    # ------------------------------------------------------- forwarded work
    def charge(self, peer: _Peer, demand: Mapping[str, float]) -> None:
        """Work forwarded to ``peer`` (a SUBMIT or a CREATE_ACTOR): its CPUs count
        against it until it says it took it in (see "Forwarded work" above)."""
        cpu = demand.get("CPU", 0.0)
        peer.forwarded += 1
        peer.forwards.append((peer.forwarded, cpu, time.monotonic()))
        peer.sent += cpu

    def took(self, peer: _Peer) -> None:
        """Work forwarded here by ``peer`` came (it charged it: ``charge``)."""
        peer.taken += 1

    def _on_fwd_seen(self, conn: Any, msg: list[Any]) -> None:
        """A peer took in the first ``taken`` forwards of ours; what it has free as
        of report ``beat``."""
        if not isinstance(conn, _Peer):
            return
        _, taken, beat, available, queued = msg
        self.members.report(conn.node_id, beat, available, queued)
        self._settle_forwards(conn, taken)

    def _settle_forwards(self, peer: _Peer, taken: int) -> None:
        forwards, stale = peer.forwards, time.monotonic() - _FORWARD_TTL_S
        if forwards and (forwards[0][0] <= taken or forwards[0][2] < stale):
            while forwards and (forwards[0][0] <= taken or forwards[0][2] < stale):
                peer.sent -= forwards.popleft()[1]
            if not forwards:
                peer.sent = 0.0  # (no float drift)
            self.node._dirty = self.spill_due = True

    def _feasible_on(self, entry: Any, demand: dict[str, float]) -> bool:
        return fits(demand, entry.total)

    def _fits_remote(self, node_id: str, demand: dict[str, float]) -> bool:
        """Does ``demand`` fit the node's last reported free resources, counting
        what we sent it since?"""
        entry = self.members.nodes.get(node_id)
        if entry is None or not entry.alive:
            return False
        peer = self.peers.get(node_id)
        sent = peer.sent if peer is not None else 0.0
        for k, v in demand.items():
            free = entry.available.get(k, 0.0) - (sent if k == "CPU" else 0.0)
            if free + 1e-9 < v:
                return False
        return True

    def _default_place(self, task: _Task) -> _Peer | None:
        demand = task.demand
        if not self.node.pool.feasible(demand):
            return self.best_remote(demand, need_room=False)
        # Locality: follow the argument bytes when most of them are elsewhere.
        here = 0
        there: dict[str, int] = {}
        for oid in task.deps:
            obj = self.node.objects.get(oid)
            if obj is None or not obj.ready:
                continue
            if obj.kind == Kind.REMOTE:
                there[obj.payload[0]] = there.get(obj.payload[0], 0) + obj.size
            else:
                here += obj.size
        if there:
            node_id, size = max(there.items(), key=lambda kv: kv[1])
            if size > here and size >= _LOCALITY_MIN and self.members.is_alive(node_id):
                entry = self.members.nodes[node_id]
                if self._feasible_on(entry, demand):
                    return self.peer(node_id)
        return None

    def best_remote(self, demand: dict[str, float], need_room: bool) -> _Peer | None:
        # A shape no other node can ever run stays so until a node joins, dies or
        # changes its total: tasks of that shape queue here without a pass over every
        # node each (10,000 of them on a 500-node cluster stalled the head for 4 s).
        shape = None if need_room else frozenset(demand.items())
        if shape is not None and self._fits_nowhere.get(shape) == self.members.shape_version:
            return None
        best, best_free = None, None
        for entry in self.members.alive():
            if entry.node_id == self.node.node_id or not self._feasible_on(entry, demand):
                continue
            fits = self._fits_remote(entry.node_id, demand)
            if need_room and not fits:
                continue
            peer = self.peers.get(entry.node_id)
            free = entry.available.get("CPU", 0.0) - (peer.sent if peer else 0.0)
            if fits:
                free += 1e6  # room now beats a bigger node that is busy
            if best_free is None or free > best_free:
                best, best_free = entry.node_id, free
        if best is None:
            if shape is not None:
                if len(self._fits_nowhere) > 1024:
                    self._fits_nowhere.clear()
                self._fits_nowhere[shape] = self.members.shape_version
            return None
        return self.peer(best)

    def forward(self, task: _Task, peer: _Peer) -> None:
        """Send a ready task to ``peer`` to run there (it stays ours: see docstring)."""
        task.state = "FORWARDED"
        task.node = peer.id
        self.transfers["forwarded_tasks"] += 1
        self.charge(peer, task.demand)
        self.node._send(peer.id, [Op.SUBMIT, task.id, task.return_ids, task.name, task.demand,
                             task.retries_left, task.deps, task.contained, task.payload,
                             "LOCAL"])

    def spill(self) -> None:
        """Spillback: forward queued tasks that cannot start here now to nodes that
        have room (or, for tasks this node can never run, to any node that can).
        Runs only when something changed (``_spill_due``: a task queued, a report
        or view arrived, a node came or went), per resource shape, oldest first."""
        if not self.spill_due or len(self.members.nodes) < 2:
            return
        self.spill_due = False
        for demand, task_ids in self.node.core.queued_tasks():  # (actors stay)
            if self.node.pool.fits(demand):
                continue
            feasible_here = self.node.pool.feasible(demand)
            for task_id in task_ids:
                item = self.node.tasks[task_id]
                if item.strategy is not None:
                    continue  # tasks placed by strategy stay
                peer = self.best_remote(demand, need_room=feasible_here)
                if peer is None:
                    break  # no room anywhere now: the rest waits for a report
                self.node.core.handle(Withdraw(task_id))
                self.forward(item, peer)

    # ------------------------------------------------------------- relaying
    def relay(self, peer: _Peer, call: int, args: list[Any], cid: int | None,
               req_id: int, on_reply: Any = None) -> int:
        """Ask ``peer`` a REQUEST on behalf of client ``cid`` (None: nobody); its REPLY
        goes back (after ``on_reply(ok, value)``, if given). Returns the relay's id."""
        rid = self._next_relay
        self._next_relay += 1
        self.relays[rid] = (cid, req_id, peer.node_id, on_reply)
        self.node._send(peer.id, [Op.REQUEST, rid, int(call), args])
        return rid

    def _on_peer_reply(self, conn: Any, msg: list[Any]) -> None:
        found = self.relays.pop(msg[1], None)
        if found is not None:
            if found[3] is not None:
                found[3](msg[2], msg[3])
            self.node._send(found[0], [Op.REPLY, found[1], msg[2], msg[3]])

    # ------------------------------------------------------ cluster-wide state
    def _call_gather(self, conn: Any, call: int, args: list[Any],
                     timeout: float = _GATHER_TIMEOUT) -> Any:
        """GATHER: run ``call`` (STATS, LIST or AUTOSCALER_REPORT only) here and on every other node over
        the peer links; reply ``{node_id: [ok, value or error message]}`` for every
        node of the table: a dead node says so, one that does not answer within
        ``timeout`` seconds is reported unreachable."""
        if call not in _GATHERABLE:
            raise ValueError(f"GATHER takes STATS, LIST or AUTOSCALER_REPORT, not call {call}")
        here = self.node.call_table[call](conn, *args)  # a bad argument fails here, once
        gather = _Gather(conn.id, self.node._request_id, float(timeout))
        gather.results[self.node.node_id] = [True, here]
        for entry in self.members.nodes.values():
            if entry.node_id == self.node.node_id:
                continue
            if not entry.alive:
                gather.results[entry.node_id] = [False, "NodeDiedError: the node is dead"]
                continue
            node_id = entry.node_id
            rid = self.relay(self.peer(node_id), call, args, None, 0,
                              lambda ok, value, n=node_id: self._gathered(gather, n, ok, value))
            gather.waiting[rid] = node_id
        if not gather.waiting:
            return gather.results
        self.gathers.append(gather)
        return _DEFER

    def _gathered(self, gather: _Gather, node_id: str, ok: bool, value: Any) -> None:
        if gather.done:
            return
        if not ok and value is None:  # the node died while we asked (see _node_dead)
            value = "NodeDiedError: the node died while being asked"
        gather.results[node_id] = [ok, value]
        for rid, n in list(gather.waiting.items()):
            if n == node_id:
                del gather.waiting[rid]
        if not gather.waiting:
            self._gather_reply(gather)

    def _gather_reply(self, gather: _Gather) -> None:
        gather.done = True
        with contextlib.suppress(ValueError):
            self.gathers.remove(gather)
        self.node._send(gather.cid, [Op.REPLY, gather.req, True, gather.results])

    def _expire_gathers(self, now: float) -> None:
        """Answer the gathers whose time is up; the nodes still silent are unreachable."""
        for gather in [g for g in self.gathers if now >= g.deadline]:
            for rid, node_id in gather.waiting.items():
                self.relays.pop(rid, None)
                gather.results[node_id] = [
                    False, "ClusterUnreachableError: the node did not answer within "
                           f"{gather.timeout:g} s (unreachable or busy)"]
            gather.waiting.clear()
            self._gather_reply(gather)

    # ------------------------------------------------------------- answers
    def refresh_own(self) -> None:
        """Our own row reports what is free now (not at the last tick)."""
        own = self.members.nodes.get(self.node.node_id)
        if own is not None:
            own.available = self.node.pool.available()

    def cluster_nodes(self) -> list[dict[str, Any]]:
        self.refresh_own()
        return [{"node_id": e.node_id, "address": e.address or self.node.socket_path,
                 "alive": e.alive, "resources": dict(e.total),
                 "available": dict(e.available), "is_head": e.node_id == self.head_id,
                 "queued": e.queued}
                for e in self.members.nodes.values()]

    #: The ops it handles (from other nodes), dispatched by the node's ``op_table``.
    OPS: dict[int, Callable[[Federation, Any, list[Any]], None]] = {
        Op.HEARTBEAT: _on_heartbeat,
        Op.FWD_SEEN: _on_fwd_seen,
        Op.VIEW: _on_view,
        Op.NODE_DEAD: _on_node_dead,
        Op.WELCOME: _on_welcome,
        Op.OBJECT: _on_peer_object,
        Op.STARTED: _on_peer_started,
        Op.REPLY: _on_peer_reply,
    }

    def handlers(self) -> dict[int, Callable[[Any, list[Any]], None]]:
        """Its message handlers, by op, bound (the node's dispatch table takes them)."""
        return {**{op: types.MethodType(fn, self) for op, fn in self.OPS.items()},
                **self.transfer.handlers()}

    def calls(self) -> dict[int, Callable[..., Any]]:
        """Its REQUEST handlers, by call."""
        return {Call.GATHER: self._call_gather}
