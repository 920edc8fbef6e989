"""The node manager: one process per node that schedules, tracks objects, and runs
the worker pool.

Every driver and worker holds one authenticated Unix-socket connection to it; all
traffic of a process goes over that one ordered connection, so a reference handed
on in a task is always pinned before its sender can drop it. The manager never
unpickles: payloads are opaque bytes to it. It is single-threaded (a ``selectors``
loop), which is also what lets it ``fork`` workers safely::

     driver ──SUBMIT/PUT/INCREF/DECREF/SUBSCRIBE/REQUEST──▶ ┌──────────────┐
        ▲                                                    │ node manager │──EXECUTE──▶ worker
        └──────────────OBJECT / REPLY────────────────────────│  objects     │◀─TASK_DONE─ worker
                                                             │  scheduler   │──ACTOR_*──▶ actor worker
                                                             └──────────────┘
     driver ═══LEASE_EXEC══▶ leased worker ═══LEASE_DONE═══▶ driver   (not through here:
     driver ─REQUEST LEASE / LEASE_RETURN / PROMISE─▶ NM      see leases.py and
     NM ─LEASE_RECALL─▶ driver;  leased worker ─LEASE_PUT / LEASE_RUNNING─▶ NM
                                                              lease_desk.py)
     driver ═══DIRECT_CALL══▶ actor worker ═══DIRECT_REPLY══▶ driver  (see direct.py)

With caller leases (on by default; ``FEDEXEC_TASK_LEASES=0`` turns them off), a driver's eligible tasks go
to a worker the core leased to it (``LeaseRequested``) and their results come straight back: this process sees only the lease, the
results it must hold (in the store, or holding refs: LEASE_PUT) and the results
that left the driver (PROMISE, then PUT).
State::

    objects   {obj id: _Obj}     state PENDING|READY, where (INLINE bytes | SHM file |
                                 ERROR blob | FAILED kind), holders (connection ids
                                 holding a ref), pins (tasks, containing objects),
                                 subscribers, the tasks waiting on it
    tasks     {task id: _Task}   WAITING (args) | PULLING | FORWARDED, or in the
                                 core's hands (``entry``: QUEUED -> ASSIGNED) -> done
    workers   {worker id: _Worker}  its process and connection; ``slot``: the core's
                                 view (STARTING -> IDLE <-> LEASED | ACTOR)
    actors    {actor id: _Actor} PENDING -> ALIVE -> (RESTARTING -> ALIVE)* -> DEAD,
                                 with the calls not yet forwarded, in order (the
                                 actors table's, ``actors.py``: its schema there)
    core      LocalScheduler     the pure local scheduler (core/scheduler.py): queue
                                 per resource shape, resource and GPU booking, which
                                 task runs on which worker, retries on worker death

    (records: ``records.py``)

The local scheduling decisions are the core's: this shell turns messages and
reaped processes into its events and executes its actions (``_run``): fork a
worker, send EXECUTE / ACTOR_INIT / CANCEL_TASK / REVOKE, kill, complete a task.

Components (objects it owns, each over a typed Protocol of what it uses of the
node manager, never through mixins)::

    core        LocalScheduler     core/scheduler.py   local scheduling (pure)
    actor_table ActorTable         actors.py           actors: lifecycle, restarts,
                                                       call queues, direct calls
    federation  Federation         federation.py       the head, peers, heartbeats,
                                                       forwarding, node loss, lineage
      .transfer Transfers          transfers.py        FETCH / PULL / CHUNK
    locator     ActorLocator       actor_directory.py  named actors, actor locations
    pending     PendingActorsHost  pending_actors.py   actors waiting for a node
    placement   PlacementGroups    placement_groups.py two-phase bundle reservation
    processes   WorkerProcesses    processes.py        fork, logs, reaping, OOM kills
    reports     NodeReports        reports.py          STATS, LIST, DESCRIBE, ...
    event_stream EventStream       events.py           task/actor/object events to
                                                       the head, the head's log
    persistence HeadPersistence    persistence.py      the head's state on its disk

Dispatch: a message goes to ``op_table[op]`` (this class's ``_handlers`` bound,
plus each component's ``handlers()``: the federation's, its transfers', the actors
table's, the event stream's); a REQUEST to ``call_table[call]`` (``_calls`` bound,
plus each component's ``calls()``). Handlers are bound methods,
so a message costs one call whichever object handles it.

Why this module is still over 600 lines: what remains is the loop and the
connections, the objects table and the tasks table, which the per-task paths
(SUBMIT, TASK_DONE, OBJECT) cross in one call chain. The next seam is the objects
table (holders, pins, subscribers, freeing), as a component like the ones above,
keeping the per-task call count (node-manager Python calls per task, cProfile,
see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import math
import os
import selectors
import shutil
import signal
import socket
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from ..._ids import new_id
from ..._metric_table import FixedHistogram, MetricTable
from ..._pids import pid_alive
from ...exceptions import FedexecError, ProtocolError
from .actor_directory import ActorLocator
from .actors import ActorTable
from .core.events import (
    Action,
    CancelRequested,
    CancelRunning,
    Dispatch,
    Failed,
    HandedBack,
    KillWorker,
    Pipeline,
    RecallLease,
    Reply,
    RevokeRequested,
    RevokeTask,
    SpawnWorker,
    StartActor,
    TaskAbandoned,
    TaskFinished,
    TaskStarted,
    TaskSubmitted,
    Tick,
    WorkerBlocked,
    WorkerDied,
    WorkerReady,
    WorkerUnblocked,
)
from .core.scheduler import LocalScheduler
from .events import EventStream
from .federation import Federation
from .lease_desk import LeaseDesk
from .memory_monitor import (
    DEFAULT_INTERVAL_S,
    DEFAULT_THRESHOLD,
    MemoryMonitor,
)
from .pending_actors import PendingActorsHost
from .persistence import HeadPersistence
from .placement_groups import PlacementGroups
from .processes import WorkerProcesses
from .protocol import (
    FORBIDDEN,
    NODE_ONLY_CALLS,
    ROLES,
    Call,
    ErrorKind,
    Kind,
    Op,
    ServerHandshake,
    encode_error,
    pack_frame,
)
from .records import _DEFER, _Actor, _Conn, _Obj, _Peer, _Task, _Worker
from .reports import NodeReports
from .store import StoreManager, default_pool_capacity

__all__ = ["NodeManager", "main"]

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_MAX_PIPELINE = 64
_MAX_WORKERS = 256
_TAKE_WAIT = 5.0  # s a CANCEL_QUEUED waits for starting workers to take their tasks


_LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0, 300.0)



class NodeManager:
    """The node manager process's state and event loop (see the module docstring)."""

    def __init__(self, config: dict[str, Any], token: bytes):
        self.config = config
        self.token = token
        self.node_id = config["node_id"]
        self.session_dir = config["session_dir"]
        self.socket_path = os.path.join(self.session_dir, "node.sock")
        total = {"CPU": float(config["num_cpus"]), "memory": float(config["memory"])}
        if config.get("num_gpus"):
            total["GPU"] = float(config["num_gpus"])
        total.update(config.get("resources") or {})
        # As in Ray: the store's capacity shows in cluster_resources() (libraries size
        # their memory budgets by it); nothing takes it, so it stays available.
        total["object_store_memory"] = float(config["object_store_memory"])
        n_gpus = int(config.get("num_gpus") or 0)
        gpu_names = (list(config.get("gpu_ids") or []) + [str(i) for i in range(n_gpus)])[:n_gpus]
        self.core = LocalScheduler(total, gpu_names, max(1, math.ceil(float(config["num_cpus"]))),
                                   new_id, _MAX_WORKERS, _MAX_PIPELINE)
        self.pool = self.core.pool  # read for reports; placement groups book bundles on it
        self._executors: dict[type, Any] = {
            SpawnWorker: self._do_spawn, Dispatch: self._do_dispatch,
            TaskStarted: self._do_started, StartActor: self._do_start_actor,
            KillWorker: self._do_kill, CancelRunning: self._do_cancel_running,
            RevokeTask: self._do_revoke, Reply: self._do_reply, Failed: self._do_failed,
        }
        self.leases = LeaseDesk(self)  # caller leases (see lease_desk.py)
        self._executors[RecallLease] = self.leases.recall
        capacity = int(config["object_store_memory"])
        self.store = StoreManager(config["store_dir"], config["spill_dir"], capacity,
                                  pool_capacity=default_pool_capacity(capacity))
        self.objects: dict[str, _Obj] = {}
        self.tasks: dict[str, _Task] = {}
        self.workers: dict[str, _Worker] = {}
        self.workers_by_pid: dict[int, _Worker] = {}
        self.actor_table = ActorTable(self)  # actors, their calls, the actor REQUESTs
        # The actors table's; these name the same objects.
        self.actors: dict[str, _Actor] = self.actor_table.actors
        self.named = self.actor_table.named
        self.remote_actors = self.actor_table.remote_actors
        self.conns: dict[int, _Conn] = {}
        self._next_conn = 1
        self.sel = selectors.DefaultSelector()
        self.stopping = False
        self.parent_pid = config.get("parent_pid") or os.getppid()
        self.initializer = config.get("initializer")  # opaque pickled bytes or None
        self.revokes: dict[str, dict[str, Any]] = {}
        self.cancel_waits: list[tuple[int, int, float]] = []  # deferred CANCEL_QUEUED
        self._dirty = False  # something may be schedulable: _dispatch at the loop's end
        self._pending_out: set[_Conn] = set()  # connections with output to flush
        self._request_id = 0
        self._wake_r, self._wake_w = os.pipe()
        self.tcp_address: str | None = None
        self.started = time.time()
        self.memory = MemoryMonitor(
            float(config.get("memory_usage_threshold", DEFAULT_THRESHOLD)),
            float(config.get("memory_monitor_interval_s", DEFAULT_INTERVAL_S)))
        self.federation = Federation(self)  # the head, peers, transfers, forwarding
        # The cluster view is the federation's; these name the same objects.
        self.members = self.federation.members
        self.peers = self.federation.peers
        self.is_head = self.federation.is_head
        self.interval = self.federation.interval
        self.locator = ActorLocator(self)  # named actors and where actors live (head)
        self.pending = PendingActorsHost(self)  # actors waiting for a node to host them
        self.placement = PlacementGroups(self)  # placement groups asked of / held on it
        self.processes = WorkerProcesses(self)  # forking, logs, reaping, the memory monitor
        self.reports = NodeReports(self)  # STATS, LIST, DESCRIBE...: read-only answers
        self.event_stream = EventStream(self)  # task/actor/object events to the head
        self.persistence = HeadPersistence(self)  # the head's state on its disk
        # REQUEST handlers by call: the node's own (``_calls``), bound here, and its
        # components'.
        self.call_table: dict[int, Callable[..., Any]] = {
            call: types.MethodType(fn, self) for call, fn in self._calls.items()}
        self.call_table.update(self.actor_table.calls())
        self.call_table.update(self.locator.calls())
        self.call_table.update(self.pending.calls())
        self.call_table.update(self.placement.calls())
        self.call_table.update(self.federation.calls())
        self.call_table.update(self.reports.calls())
        # Message handlers by op, the same way (``_handlers``, then the federation's).
        self.op_table: dict[int, Callable[[Any, list[Any]], None]] = {
            op: types.MethodType(fn, self) for op, fn in self._handlers.items()}
        self.op_table.update(self.federation.handlers())
        self.op_table.update(self.actor_table.handlers())
        self.op_table.update(self.event_stream.handlers())
        self.metrics = MetricTable()  # user metrics recorded on this node (METRICS)
        self.latency = (  # this node's tasks: submitted here -> started, started -> done
            FixedHistogram("fedexec_scheduling_latency_seconds",
                           "a task's wait from reaching a node to starting on its worker",
                           _LATENCY_BOUNDS),
            FixedHistogram("fedexec_task_duration_seconds",
                           "a task's run time on its worker, as its node saw it",
                           _LATENCY_BOUNDS))
        self.ran = {"FINISHED": 0, "FAILED": 0}  # tasks that ran to an end on a worker here

    @property
    def head_id(self) -> str | None:
        """The head's node id (the federation's: a replaced head has a new one)."""
        return self.federation.head_id

    # ------------------------------------------------------------------ loop
    def serve(self, ready_fd: int | None) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        listener.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        listener.listen(256)
        listener.setblocking(False)
        self.listeners = [listener]
        self.sel.register(listener, _READ, "listen")
        if self.config.get("tcp_port") is not None:
            tcp = socket.create_server((self.config.get("tcp_host") or "127.0.0.1",
                                        int(self.config["tcp_port"])), backlog=256)
            tcp.setblocking(False)
            host, port = tcp.getsockname()[:2]
            self.tcp_address = f"{host}:{port}"
            self.listeners.append(tcp)
            self.sel.register(tcp, _READ, "listen")
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.sel.register(self._wake_r, _READ, "wake")
        self.federation.start()
        self._run(self.core.start())
        if ready_fd is not None:
            os.write(ready_fd, f"ready {self.tcp_address or ''}\n".encode())
            os.close(ready_fd)
        last_check = time.monotonic()
        try:
            while not self.stopping:
                for key, mask in self.sel.select(0.0 if self.federation.transfer.serving else
                                                 min(1.0, self.interval, self.processes.memory_wait)):
                    data = key.data
                    if data == "listen":
                        self._accept(key.fileobj)  # type: ignore[arg-type]
                    elif data == "wake":
                        self._drain_wake()
                    elif isinstance(data, _Worker):
                        self.processes.read_log(data)
                    else:
                        if mask & _READ:
                            self._read(data)
                        if mask & _WRITE and data.id in self.conns:
                            self._write(data)
                if self._dirty:
                    self._dispatch()
                now = time.monotonic()
                self.federation.tick(now)
                self.event_stream.tick(now)
                self.processes.check_memory(now)
                if self.leases.lent and len(self.members.nodes) > 1:
                    self.leases.not_alone()
                if self.placement.pgs:
                    self.placement.retry(now)
                if self.federation.transfer.serving:
                    self.federation.transfer.serve_pulls()
                self._flush()
                if now - last_check > 1.0:
                    last_check = now
                    if self.config.get("embedded") and os.getppid() != self.parent_pid:
                        self.stopping = True  # our driver died: nobody owns us any more
                    owner = self.config.get("owner_pid")
                    if owner and not pid_alive(owner):
                        self.stopping = True  # whoever started us (e.g. a test) is gone
        finally:
            self._shutdown()

    def _on_term(self, *_: Any) -> None:
        self.stopping = True

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        self.processes.reap()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            auth = ServerHandshake(self.token)
            conn = _Conn(self._next_conn, sock, auth)
            self._next_conn += 1
            self.conns[conn.id] = conn
            conn.wbuf += auth.greeting()
            self.sel.register(sock, _READ | _WRITE, conn)
            conn.watching_write = True

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        if conn.auth is not None:
            step = conn.auth.feed(data)
            if step.reply:
                conn.wbuf += step.reply
                self._pending_out.add(conn)
            if not step.done:
                return
            if step.error is not None:
                what = "a link it dialed failed" if conn.dialing is not None else \
                    "refused a connection"
                self._refuse(conn, f"{what}: {step.error}")
                return
            conn.auth = None
            if step.role:  # (a link we dialed took its role when dialed: node)
                conn.declared, conn.forbidden = step.role, FORBIDDEN[step.role]
            if conn.dialing is not None:
                self.federation.dialed(conn)
                if conn.id not in self.conns:
                    return
            data = step.leftover
            if not data:
                return
        try:
            frames = conn.reader.feed(data)
        except Exception as exc:
            self._refuse(conn, f"closed the connection of {self._origin(conn)}: {exc}")
            return
        forbidden = conn.forbidden
        for frame in frames:
            for msg in frame if isinstance(frame, list) else [frame]:
                try:
                    refused = msg[0] in forbidden  # (an unknown op: _handle says so)
                except Exception:  # not [op, ...]: _handle says so
                    refused = False
                if refused:
                    self._refuse_op(conn, msg)
                    return
                self._handle(conn.peer or conn, msg)
                if conn.id not in self.conns:
                    return

    def _refuse(self, conn: _Conn, why: str) -> None:
        """Log ``why``, send what is queued for ``conn`` (best effort), close it."""
        self._log(why)
        if conn.out:
            conn.wbuf += pack_frame(conn.out)
            conn.out = []
        with contextlib.suppress(OSError):
            conn.sock.send(conn.wbuf[conn.woff:])
        self._close(conn)

    def _refuse_op(self, conn: _Conn, msg: list[Any]) -> None:
        """``conn`` sent an op its role may not send: REFUSED, then close it."""
        error = ProtocolError(
            f"a {conn.declared} connection may not send {_op_name(msg)} (the node manager "
            f"closed it): only {', '.join(r for r, ops in ROLES.items() if msg[0] in ops)} "
            "connections do; a fedexec bug, or a client that is not fedexec")
        conn.out.append([Op.REFUSED, msg[0], encode_error(error)])
        self._refuse(conn, f"closed the connection of {self._origin(conn)}: {error}")

    def _want_write(self, conn: _Conn, want: bool = True) -> None:
        """Watch ``conn`` for writability only while it has unsent bytes (each change
        is an epoll_ctl call, so it is made only when the interest changes)."""
        if conn.watching_write == want:
            return
        conn.watching_write = want
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(conn.sock, _READ | _WRITE if want else _READ, conn)

    def _write(self, conn: _Conn) -> None:
        buf = conn.wbuf
        if len(buf) > conn.woff:
            try:
                with memoryview(buf) as view, view[conn.woff:] as rest:
                    n = conn.sock.send(rest)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._close(conn)
                return
            conn.woff += n
            if conn.woff >= len(buf):
                buf.clear()
                conn.woff = 0
            elif conn.woff > (8 << 20):  # compact now and then, not per send
                del buf[:conn.woff]
                conn.woff = 0
        if conn.id in self.conns:
            self._want_write(conn, len(buf) > conn.woff)

    def _flush(self) -> None:
        dirty, self._pending_out = self._pending_out, set()
        for conn in dirty:
            if conn.id not in self.conns:
                continue
            if isinstance(conn, _Peer):  # a node: its messages go out on its link
                link = self.federation.peer_link(conn)
                if link is None:
                    continue  # kept until it is reachable, or declared dead
                link.out.extend(conn.out)
                conn.out = []
                conn = link
            if conn.out:
                conn.wbuf += pack_frame(conn.out)
                conn.out = []
            if len(conn.wbuf) > conn.woff:
                self._write(conn)

    def _send(self, cid: int | None, msg: list[Any]) -> None:
        conn = self.conns.get(cid) if cid is not None else None
        if conn is not None:
            conn.out.append(msg)
            self._pending_out.add(conn)

    def _out(self, conn: _Conn) -> list[Any]:
        """``conn``'s outgoing message list (it is flushed at the end of the turn)."""
        self._pending_out.add(conn)
        return conn.out

    def _close(self, conn: _Conn) -> None:
        if self.conns.pop(conn.id, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()
        if conn.peer is not None:
            self.federation.link_closed(conn)
            return  # its holds are the peer's: released when the node is declared dead
        if conn.dialing is not None:
            self.federation.dial_failed(conn)
            return
        if conn.role == "driver":
            self.leases.caller_gone(conn.id)
        for obj_id in conn.held:
            obj = self.objects.get(obj_id)
            if obj is not None:
                obj.holders.discard(conn.id)
                self._maybe_free(obj)
        for obj_id in conn.creating:
            self.store.abort(obj_id)
        if conn.worker is not None:
            self._worker_died(conn.worker, "its connection closed")
        elif conn.role == "driver" and self.config.get("embedded"):
            self.stopping = True  # the driver that started us is gone

    # -------------------------------------------------------------- messages
    def _handle(self, conn: _Conn | _Peer, msg: list[Any]) -> None:
        try:
            handler = self.op_table.get(msg[0]) if isinstance(msg, list) and msg else None
        except TypeError:  # an op that is not even hashable
            handler = None
        if handler is None:
            self._log(f"dropped a message with an unknown op from {self._origin(conn)}: "
                      f"{_op_name(msg)} (a client of another fedexec version?)")
            self._fail_message(conn, msg, f"the node manager does not know {_op_name(msg)}")
            return
        try:
            handler(conn, msg)
        except Exception as exc:  # a bug must not take the node down: log, fail, carry on
            import traceback

            self._log(f"error handling {_op_name(msg)} from {self._origin(conn)}:\n"
                      f"{traceback.format_exc()}")
            self._fail_message(conn, msg, f"the node manager failed handling "
                               f"{_op_name(msg)}: {type(exc).__name__}: {exc} (a fedexec "
                               "bug; its traceback is in the node manager's log)")

    def _log(self, text: str) -> None:
        """A line (or more) in the node manager's log (its stderr)."""
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"fedexec node manager {self.node_id}: {text.rstrip()}\n")
            sys.stderr.flush()

    @staticmethod
    def _origin(conn: _Conn | _Peer) -> str:
        role = getattr(conn, "role", "node")
        return f"{getattr(conn, 'declared', '?') if role == '?' else role} pid " \
               f"{getattr(conn, 'pid', '?')}"

    def _fail_message(self, conn: _Conn | _Peer, msg: Any, why: str) -> None:
        """Answer a message that could not be handled so its sender does not wait
        forever: an error REPLY to a REQUEST; the task it submitted or completed, or
        the objects it put or asked for, fail with ``why`` (ErrorKind.INTERNAL)."""
        if not isinstance(msg, list) or not msg:
            return  # nothing tells what it was about
        try:
            op = msg[0]
            if op == Op.REQUEST:
                if isinstance(msg[1], int) and msg[1]:
                    self._send(conn.id, [Op.REPLY, msg[1], False,
                                         encode_error(FedexecError(why))])
                return
            task_id, obj_ids = _about(msg)
            task = self.tasks.get(task_id) if isinstance(task_id, str) else None
            if task is not None:
                obj_ids = list(task.return_ids)
                with contextlib.suppress(Exception):
                    self._fail_task(task, ErrorKind.INTERNAL, why)
            failed = [ErrorKind.INTERNAL, why]
            for oid in obj_ids:
                obj = self.objects.get(oid)
                if obj is not None and op == Op.PUT:  # (half) set by the failed PUT
                    obj.ready, obj.contained = False, []
                if obj is not None and not obj.ready:
                    self._set_object(obj, [oid, Kind.FAILED, *failed])
                elif task is None:  # nothing here completes it: tell the sender
                    self._send(conn.id, [Op.OBJECT, oid, Kind.FAILED, *failed])
        except Exception:  # a message too malformed to tell what it was about
            import traceback

            self._log(f"could not fail what {_op_name(msg)} was about:\n"
                      f"{traceback.format_exc()}")

    def _on_hello(self, conn: _Conn, msg: list[Any]) -> None:
        role, pid, worker_id = msg[1], msg[2], msg[3]
        if role != getattr(conn, "declared", "node"):
            self._refuse(conn, f"closed the connection of pid {pid}: its HELLO says "
                         f"{role!r}, not the role it connected as")
            return
        if role == "node":
            self.federation.node_hello(conn, msg)
            return
        conn.role, conn.pid = role, pid
        if len(msg) > 4 and isinstance(msg[4], dict):
            conn.remote = bool(msg[4].get("remote_store"))
        if role == "worker":
            worker = self.workers.get(worker_id)
            if worker is None:
                self._close(conn)
                return
            worker.conn = conn
            conn.worker = worker
            if len(msg) > 4 and isinstance(msg[4], dict):
                self.leases.worker_hello(worker_id, msg[4])
            self._run(self.core.handle(WorkerReady(worker_id)))
            self._dirty = True

    def _on_submit(self, conn: _Conn, msg: list[Any]) -> None:
        _, task_id, return_ids, name, demand, max_retries, deps, contained, payload = msg[:9]
        task = _Task(task_id, return_ids, name, demand, max_retries, deps, contained, payload,
                     conn.id)
        if len(msg) > 9:
            task.strategy = msg[9]
        if len(msg) > 10 and msg[10]:  # submitted by a caller's leased task
            self.leases.child(msg[10], task.id)
        if isinstance(conn, _Peer):
            self.federation.adopt(conn, deps + contained)
            self.federation.took(conn)
        self._register_task(conn, task)
        self._await_deps(task, self._enqueue, localize=False)

    def _register_task(self, conn: _Conn, task: _Task) -> None:
        self.tasks[task.id] = task
        for rid in task.return_ids:
            obj = self.objects.get(rid)
            if obj is None or obj.ready:
                obj = _Obj(rid, conn.id)
            else:  # promised by a caller whose leased worker died (see lease_desk.py)
                self.leases.fulfilled(conn.id, rid)
                obj.owner = conn.id
            obj.holders.add(conn.id)
            obj.task = task.id
            self.objects[rid] = obj
            conn.held.add(rid)
        for oid in task.deps:
            self._pin(oid)
        for oid in task.contained:
            self._pin(oid)
        worker = conn.worker
        running = self.core.running_task(worker.id) if worker is not None else None
        parent = self.tasks.get(running.id) if running is not None else None
        if parent is not None:  # submitted by the task its worker runs
            task.parent = parent.id
            parent.children.append(task.id)

    def _await_deps(self, item: Any, ready: Any, localize: bool = True) -> None:
        """Call ``ready(item)`` once its dependencies are computed (``localize``:
        and their bytes are on this node, pulled from others if need be)."""
        missing = 0
        remote = None
        cont = ready
        for oid in item.deps:
            obj = self.objects.get(oid)
            if obj is None:
                obj = self._lost(oid)
            if not obj.ready:
                if localize and cont is ready:  # look again once all are computed
                    cont = lambda i, r=ready: self._await_deps(i, r)  # noqa: E731
                obj.waiters.append((item, cont))
                missing += 1
            elif localize and obj.kind == Kind.REMOTE:
                if cont is ready:
                    cont = lambda i, r=ready: self._await_deps(i, r)  # noqa: E731
                remote = remote or []
                remote.append(obj)
                missing += 1
        item.missing = missing
        if remote:
            for obj in remote:
                self.federation.transfer.localize(obj, lambda i=item, c=cont: self._dep_local(i, c))
        elif missing == 0:
            ready(item)

    @staticmethod
    def _dep_local(item: Any, ready: Any) -> None:
        item.missing -= 1
        if item.missing == 0:
            ready(item)

    def _lost(self, oid: str) -> _Obj:
        obj = _Obj(oid, None)
        obj.ready = True
        obj.kind = Kind.FAILED
        obj.payload = [ErrorKind.OBJECT_LOST,
                       f"object {oid} was freed or never existed on this node"]
        self.objects[oid] = obj
        return obj

    def _failed_dep(self, item: Any) -> _Obj | None:
        for oid in item.deps:
            obj = self.objects.get(oid)
            if obj is not None and obj.kind in (Kind.ERROR, Kind.FAILED):
                return obj
        return None

    def _enqueue(self, task: _Task) -> None:
        """A task's arguments are computed: run it here, or forward it to a peer."""
        if task.state != "WAITING":
            return
        bad = self._failed_dep(task)
        if bad is not None:
            self._finish_task(task, [[rid, bad.kind, *bad.payload] for rid in task.return_ids])
            return
        if len(self.members.nodes) > 1:
            peer = self.federation.place(task)
            if task.state != "WAITING":
                return  # failed while placing
            if peer is not None:
                self.federation.forward(task, peer)
                return
            if any(self.objects[d].kind == Kind.REMOTE for d in task.deps):
                task.state = "PULLING"
                self._await_deps(task, self._queue_here)
                return
        self._queue_here(task)

    def _queue_here(self, task: _Task) -> None:
        if task.state not in ("WAITING", "PULLING"):
            return
        bad = self._failed_dep(task)
        if bad is not None:
            self._finish_task(task, [[rid, bad.kind, *bad.payload] for rid in task.return_ids])
            return
        self.core.submitted(TaskSubmitted(task.id, task.name, task.demand, task.retries_left,
                                          task))  # QUEUED
        self._dirty = True
        self.federation.spill_due = True

    def _new_object(self, obj_id: str, owner: int | None) -> _Obj:
        return _Obj(obj_id, owner)

    def _on_put(self, conn: _Conn, msg: list[Any]) -> None:
        _, obj_id, kind, *rest = msg
        obj = self.objects.get(obj_id)
        if obj is not None and not obj.ready:  # a promise kept (see lease_desk.py):
            self.leases.fulfilled(conn.id, obj_id)  # held as PROMISE said, if not
        else:                                       # dropped since
            obj = _Obj(obj_id, conn.id)
            obj.holders.add(conn.id)
            conn.held.add(obj_id)
            self.objects[obj_id] = obj
        if kind == Kind.SHM:
            conn.creating.discard(obj_id)
            self.store.seal(obj_id)
        elif kind == Kind.INLINE and getattr(conn, "remote", False):
            rest = self._store_inline(obj_id, rest)  # a remote driver's large value
            kind = Kind.SHM if rest[0] is None else kind
            rest = rest[1:] if rest[0] is None else rest
        obj.owner = None  # the putter completed its ref itself
        self._set_object(obj, [obj_id, kind, *rest])

    def _store_inline(self, obj_id: str, rest: list[Any]) -> list[Any]:
        """Write a large inline value into the store (it came from a remote driver):
        ``[None, path, size, contained]``, or ``rest`` unchanged if small or full."""
        data, buffers, contained = rest
        size = len(data) + sum(len(b) for b in buffers)
        if size <= 100 * 1024:
            return rest
        from .store import object_size, write_object

        try:
            path, staging = self.store.reserve_segment(obj_id, object_size(data, buffers))
            write_object(path, data, buffers, staging)
            self.store.seal(obj_id)
        except Exception:
            with contextlib.suppress(Exception):
                self.store.abort(obj_id)
            return rest  # kept in memory instead
        return [None, path, os.path.getsize(path), contained]

    def _on_create(self, conn: _Conn, msg: list[Any]) -> None:
        _, obj_id, size = msg
        try:
            path, staging = self.store.reserve_segment(obj_id, size, writer=conn.id)
        except Exception as exc:
            self._send(conn.id, [Op.CREATED, obj_id, None, str(exc), ""])
            return
        conn.creating.add(obj_id)
        self._send(conn.id, [Op.CREATED, obj_id, path, "", staging])

    def _on_incref(self, conn: _Conn, msg: list[Any]) -> None:
        for oid in msg[1]:
            obj = self.objects.get(oid)
            if obj is not None:
                obj.holders.add(conn.id)
                conn.held.add(oid)

    def _on_decref(self, conn: _Conn, msg: list[Any]) -> None:
        for oid in msg[1]:
            conn.held.discard(oid)
            obj = self.objects.get(oid)
            if obj is not None:
                obj.holders.discard(conn.id)
                self._maybe_free(obj)
            elif conn.role == "driver":
                self.leases.decref_unknown(conn.id, oid)

    def _on_subscribe(self, conn: _Conn, msg: list[Any]) -> None:
        lost = msg[2] if len(msg) > 2 else None  # a peer lost its copy on that node
        for oid in msg[1]:
            obj = self.objects.get(oid)
            if obj is None:
                obj = self._lost(oid)
            if obj.ready and not self.federation.lost_there(obj, lost):
                self._send(conn.id, self.federation.entry_for(conn.id, obj, self._deliverable(obj)))
            else:
                obj.subscribers.add(conn.id)

    def _deliverable(self, obj: _Obj) -> list[Any]:
        if obj.kind == Kind.SHM:
            try:
                self.store.ensure_local(obj.id)  # restore it if it was spilled
            except Exception as exc:
                return [Op.OBJECT, obj.id, Kind.FAILED, ErrorKind.OBJECT_LOST, str(exc)]
        return obj.message()

    def _on_cancel(self, conn: _Conn, msg: list[Any]) -> None:
        _, task_id, force, recursive = msg
        self._cancel(task_id, force, recursive)

    def _on_request(self, conn: _Conn, msg: list[Any]) -> None:
        _, req_id, call, args = msg
        self._request_id = req_id
        try:
            handler = self.call_table.get(call)
            if call in NODE_ONLY_CALLS and not isinstance(conn, _Peer):
                raise ProtocolError(f"only another node may make control call "
                                    f"{Call(call).name}, not {self._origin(conn)}")
            if handler is None:
                raise ValueError(f"the node manager does not know control call {call!r} "
                                 "(a client of another fedexec version?)")
            value = handler(conn, *args)
            if value is _DEFER:
                return  # answered later (see _revoke)
            reply = [Op.REPLY, req_id, True, value]
        except Exception as exc:  # the caller gets it back with its type (encode_error)
            reply = [Op.REPLY, req_id, False, encode_error(exc)]
        self._send(conn.id, reply)

    # ----------------------------------------------------- direct calls

    def _on_task_done(self, conn: _Conn, msg: list[Any]) -> None:
        _, task_id, results = msg
        worker = conn.worker
        if worker is None:
            return
        for r in results:
            if r[1] == Kind.SHM:
                self.store.seal(r[0])
                conn.creating.discard(r[0])
        actor_id = worker.slot.actor
        if actor_id is None:
            execute = self._executors
            for action in self.core.finished(TaskFinished(worker.id, task_id, results,
                                                          time.monotonic())):
                execute[type(action)](action)  # (_run, inlined: once per task)
        else:
            actor = self.actors.get(actor_id)
            if actor is not None:
                actor.inflight.pop(task_id, None)
            self._do_reply(Reply(task_id, results))  # (replied as the core's tasks are)
        self._dirty = True

    def _on_blocked(self, conn: _Conn, msg: list[Any]) -> None:
        if conn.worker is not None:
            self._run(self.core.handle(WorkerBlocked(conn.worker.id, tuple(msg[1]))))
            self._dirty = True

    def _on_handback(self, conn: _Conn, msg: list[Any]) -> None:
        if conn.worker is not None:
            self._run(self.core.handle(HandedBack(conn.worker.id, tuple(msg[1]))))
            self._dirty = True

    def _on_unblocked(self, conn: _Conn, msg: list[Any]) -> None:
        if conn.worker is not None:
            self._run(self.core.handle(WorkerUnblocked(conn.worker.id)))

    _handlers: dict[int, Any] = {
        Op.HELLO: _on_hello,
        Op.SUBMIT: _on_submit,
        Op.PUT: _on_put,
        Op.CREATE: _on_create,
        Op.INCREF: _on_incref,
        Op.DECREF: _on_decref,
        Op.SUBSCRIBE: _on_subscribe,
        Op.CANCEL: _on_cancel,
        Op.REQUEST: _on_request,
        Op.TASK_DONE: _on_task_done,
        Op.BLOCKED: _on_blocked,
        Op.UNBLOCKED: _on_unblocked,
        Op.HANDBACK: _on_handback,
        Op.LEASE_RETURN: lambda self, conn, msg: self.leases.on_return(conn, msg),
        Op.PROMISE: lambda self, conn, msg: self.leases.on_promise(conn, msg),
        Op.LEASE_BACKLOG: lambda self, conn, msg: self.leases.on_backlog(conn, msg),
        Op.LEASE_ENDED: lambda self, conn, msg: self.leases.on_ended(conn, msg),
        Op.LEASE_PUT: lambda self, conn, msg: self.leases.on_put(conn, msg),
        Op.LEASE_RUNNING: lambda self, conn, msg: self.leases.on_running(conn, msg),
    }

    # --------------------------------------------------------------- objects
    def _pin(self, oid: str) -> None:
        obj = self.objects.get(oid)
        if obj is not None:
            obj.pins += 1

    def _unpin(self, oid: str) -> None:
        obj = self.objects.get(oid)
        if obj is not None:
            obj.pins -= 1
            self._maybe_free(obj)

    def _maybe_free(self, obj: _Obj) -> None:
        if obj.holders or obj.pins > 0 or not obj.ready or obj.waiters:
            return
        if self.objects.get(obj.id) is not obj:
            return  # freed already (re-entered while completing it)
        if obj.id in self.federation.transfer.pulls or obj.id in self.federation.transfer.incoming:
            return  # being pulled here: freed when that ends
        del self.objects[obj.id]
        self.event_stream.object_freed()
        if obj.kind == Kind.SHM:
            self.store.free(obj.id)
        if obj.home is not None:
            self._send(obj.home, [Op.DECREF, [obj.id]])
        if obj.task is not None and obj.task in self.federation.lineage:
            self.federation.lineage_release(obj)
        for oid in obj.contained:
            self._unpin(oid)

    def _set_object(self, obj: _Obj, result: list[Any]) -> None:
        """Complete ``obj`` with a result entry ``[id, kind, ...]`` and notify."""
        kind = result[1]
        obj.ready = True
        self.event_stream.object_made()
        obj.kind = kind
        obj.payload = list(result[2:])
        if kind == Kind.INLINE:
            obj.contained = list(result[4])
            obj.size = len(result[2]) + sum(len(b) for b in result[3])
        elif kind in (Kind.SHM, Kind.REMOTE):
            obj.contained = list(result[4])
            obj.size = result[3]
        for oid in obj.contained:
            self._pin(oid)
        msg = obj.message()
        if obj.owner is not None:
            self._send(obj.owner, self.federation.entry_for(obj.owner, obj, msg))
        for cid in obj.subscribers:
            if cid != obj.owner:
                self._send(cid, self.federation.entry_for(cid, obj, msg))
        obj.subscribers.clear()
        waiters, obj.waiters = obj.waiters, []
        for item, ready in waiters:
            item.missing -= 1
            if item.missing == 0:
                ready(item)
        self._maybe_free(obj)

    # ----------------------------------------------------------------- tasks
    def _finish_task(self, task: _Task, results: list[list[Any]],
                     failed: bool | None = None) -> None:
        """``task`` ended with ``results`` (``failed``: one of them is an error, when
        the caller knows)."""
        if self.tasks.pop(task.id, None) is None:
            return
        if task.id in self.core.tasks:  # ended here, not by the core (a bad message)
            self.core.handle(TaskAbandoned(task.id))
        if failed is None:
            failed = any(r[1] in (Kind.ERROR, Kind.FAILED) for r in results)
        self.event_stream.task_ended(task, failed)
        task.state = "DONE"
        for r in results:
            obj = self.objects.get(r[0])
            if obj is None:  # nobody holds it any more; still free its storage
                if r[1] == Kind.SHM:
                    self.store.free(r[0])
                continue
            if not obj.ready:
                self._set_object(obj, r)
        self.federation.release_args(task)

    def _fail_task(self, task: _Task, kind: ErrorKind, message: str) -> None:
        self._finish_task(task, [[rid, Kind.FAILED, kind, message] for rid in task.return_ids])

    def _dispatch(self) -> None:
        """Start what can start (run once per loop turn, after all input is handled)."""
        self._dirty = False
        core = self.core
        queue = core.queue  # (read: its length; the hot path skips core.queued())
        if core.idle and len(queue):
            execute = self._executors
            for action in core.tick(Tick(time.monotonic())):
                execute[type(action)](action)  # (_run, inlined: once per task)
        if len(queue):
            if len(self.members.nodes) > 1:
                self.federation.spill()
            if len(queue):
                # A node of a cluster (it listens on TCP) keeps a queue as long as four
                # times the cluster's CPUs unpipelined: other nodes, present or
                # joining, may take it.
                keep = int(4 * self.members.totals().get("CPU", 0.0)) if self.tcp_address else 0
                self._run(core.pipeline(Pipeline(keep)))
        if self.cancel_waits:
            self._settle_cancels()

    # ------------------------------------------------------ core actions
    def _run(self, actions: list[Action]) -> None:
        """Execute the core's actions, in order."""
        for action in actions:
            self._executors[type(action)](action)

    def _do_spawn(self, a: SpawnWorker) -> None:
        self.processes.spawn(a.worker_id)

    def _do_dispatch(self, a: Dispatch) -> None:
        worker = self.workers[a.worker_id]
        gpus = list(a.gpus)
        msgs = []
        for task_id in a.task_ids:
            task = self.tasks[task_id]
            msgs.append([Op.EXECUTE, task.id, task.return_ids, task.payload,
                         [self._dep_entry(oid) for oid in task.deps], task.name, gpus])
        if worker.conn is not None:
            self._out(worker.conn).extend(msgs)

    def _do_started(self, a: TaskStarted) -> None:
        """Tell the owner its task is running now (``Future.running()``)."""
        task = self.tasks[a.task_id]
        first = not task.started
        task.started = a.at
        if first:
            self.latency[0].observe(task.started - task.submitted)
        self._send(task.owner, [Op.STARTED, task.return_ids])

    def _do_start_actor(self, a: StartActor) -> None:
        actor = self.actors[a.actor_id]
        worker = self.workers[a.worker_id]
        actor.started = a.at
        actor.worker = worker
        deps = [self._dep_entry(oid) for oid in actor.deps if oid in self.objects]
        if worker.conn is not None:
            self._out(worker.conn).append([Op.ACTOR_INIT, actor.id, actor.spec, actor.payload,
                                           deps, list(a.gpus)])

    def _do_kill(self, a: KillWorker) -> None:
        worker = self.workers.get(a.worker_id)
        if worker is not None:
            self.processes.kill(worker)
            self._worker_gone(worker, a.why, [])

    def _do_cancel_running(self, a: CancelRunning) -> None:
        worker = self.workers.get(a.worker_id)
        if worker is not None and worker.conn is not None:
            self._out(worker.conn).append([Op.CANCEL_TASK, a.task_id])

    def _do_revoke(self, a: RevokeTask) -> None:
        worker = self.workers.get(a.worker_id)
        if worker is not None and worker.conn is not None:
            self._out(worker.conn).append([Op.REVOKE, a.task_id])

    def _do_reply(self, a: Reply) -> None:
        """A worker ran the task to an end: count it, complete its results."""
        task = self.tasks.get(a.task_id)
        if task is None:
            return
        if task.started:
            self.latency[1].observe(time.monotonic() - task.started)
        results = a.results
        failed = any(r[1] in (Kind.ERROR, Kind.FAILED) for r in results)
        self.ran["FAILED" if failed else "FINISHED"] += 1
        self._finish_task(task, results, failed)
        self._revoked(task.id, results)

    def _do_failed(self, a: Failed) -> None:
        task = self.tasks.get(a.task_id)
        if task is not None:
            results = [[rid, Kind.FAILED, a.kind, a.message] for rid in task.return_ids]
            self._finish_task(task, results)
            self._revoked(task.id, results)

    def _dep_entry(self, oid: str) -> list[Any]:
        obj = self.objects[oid]
        return self._deliverable(obj)[1:]

    def _cancel(self, task_id: str, force: bool, recursive: bool) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            if recursive:  # a caller's leased task (see lease_desk.py): its children
                for child in self.leases.children.pop(task_id, ()):
                    self._cancel(child, force, True)
            return
        children = list(task.children) if recursive else []
        if task.actor_id is not None:
            actor = self.actors.get(task.actor_id)
            if actor is not None and task in actor.queue:
                actor.queue.remove(task)
                self._fail_task(task, ErrorKind.CANCELLED, f"{task.name} was cancelled")
            elif actor is not None and actor.worker is not None and actor.worker.conn:
                self._out(actor.worker.conn).append([Op.CANCEL_TASK, task_id])
            elif actor is None:
                self.pending.cancel_call(task)
        elif task.id in self.core.tasks:  # queued or running here: the core decides
            self._run(self.core.handle(CancelRequested(task_id, force)))
        elif task.state in ("WAITING", "PULLING"):
            task.state = "CANCELLED"
            self._fail_task(task, ErrorKind.CANCELLED, f"task {task.name!r} was cancelled")
        elif task.state == "FORWARDED" and task.node is not None:
            self._send(task.node, [Op.CANCEL, task_id, force, recursive])
        for child in children:
            self._cancel(child, force, True)

    # --------------------------------------------------------------- workers
    def _retire(self, worker: _Worker) -> None:
        if worker.conn is not None:
            self._out(worker.conn).append([Op.EXIT])

    def _worker_died(self, worker: _Worker, why: str,
                     error: tuple[ErrorKind, str] | None = None) -> None:
        """A worker's process or connection is gone: the core decides what becomes
        of its tasks (``error``: what its running task fails with if no retry is left)."""
        if worker.slot.state == "DEAD":
            return
        self._worker_gone(worker, why, self.core.handle(
            WorkerDied(worker.id, why, worker.pid, error, replace=not self.stopping)))

    def _worker_gone(self, worker: _Worker, why: str, actions: list[Action]) -> None:
        """Close a dead worker's connection, execute what the core decided about it,
        restart its actor if it had one."""
        if worker.conn is not None:
            conn, worker.conn = worker.conn, None
            conn.worker = None
            self._close(conn)
        self._run(actions)
        self.workers.pop(worker.id, None)
        self.leases.worker_gone(worker.id)
        if worker.slot.actor is not None:
            actor = self.actors.get(worker.slot.actor)
            if actor is not None and actor.worker is worker:
                self.actor_table.lost(actor, why)
        if not self.stopping:
            self._dirty = True

    # ---------------------------------------------------------------- actors

    # ----------------------------------------------------------------- calls

    def _call_shutdown(self, conn: _Conn) -> bool:
        self.stopping = True
        return True

    def _call_cancel_pending(self, conn: _Conn, task_id: str) -> Any:
        """``Future.cancel()``: cancel only if the task has not started."""
        task = self.tasks.get(task_id)
        if task is None:
            return False
        if task.actor_id is not None:
            actor = self.actors.get(task.actor_id)
            if actor is not None and task in actor.queue:
                actor.queue.remove(task)
                self._fail_task(task, ErrorKind.CANCELLED, f"{task.name} was cancelled")
                return True
            return self.pending.cancel_call(task)
        if task.state in ("WAITING", "QUEUED", "PULLING"):
            self._cancel(task_id, False, False)
            return True
        if task.state == "FORWARDED" and task.node is not None:
            peer = self.conns.get(task.node)
            if isinstance(peer, _Peer):
                self.federation.relay(peer, Call.CANCEL_PENDING, [task_id], conn.id, self._request_id)
                return _DEFER
            return False
        if self.core.revocable(task.id):
            self._revoke([task], conn.id, self._request_id)
            return _DEFER
        return False

    def _call_cancel_queued(self, conn: _Conn) -> Any:
        """``shutdown(cancel_futures=True)``: cancel every task of ``conn`` that no
        worker has taken. As in the stdlib pools, what the pool takes at once counts as
        taken: the tasks this turn hands out (the submits may have come in the same
        frame) and those the workers being started will take; the reply waits for
        those workers to connect (at most ``_TAKE_WAIT`` s)."""
        self._dispatch()
        if self._workers_coming():
            self.cancel_waits.append((conn.id, self._request_id,
                                      time.monotonic() + _TAKE_WAIT))
            self._dirty = True  # _dispatch looks again each turn (see _settle_cancels)
            return _DEFER
        return self._cancel_queued(conn.id, self._request_id)

    def _workers_coming(self) -> bool:
        """Workers are starting and some queued work could start on them."""
        return self.core.workers_coming()

    def _settle_cancels(self) -> None:
        """Finish the deferred CANCEL_QUEUED requests whose workers came (or whose
        wait ran out); called at the end of ``_dispatch``."""
        now = time.monotonic()
        if self._workers_coming() and all(now < w[2] for w in self.cancel_waits):
            self._dirty = True
            return
        waits, self.cancel_waits = self.cancel_waits, []
        for cid, req_id, _ in waits:
            if self._cancel_queued(cid, req_id) is not _DEFER:
                self._send(cid, [Op.REPLY, req_id, True, True])

    def _cancel_queued(self, cid: int, req_id: int) -> Any:
        """Cancel the tasks of connection ``cid`` no worker has started: True, or
        ``_DEFER`` when workers must confirm first (``_revoke`` answers ``req_id``)."""
        mine = [t for t in self.tasks.values() if t.owner == cid and t.actor_id is None]
        for task in mine:
            if task.state in ("WAITING", "QUEUED", "PULLING"):
                self._cancel(task.id, False, False)
            elif task.state == "FORWARDED" and task.node is not None:
                # Ask the node it runs on; its answer (req 0) needs no reply here.
                self._send(task.node, [Op.REQUEST, 0, int(Call.CANCEL_PENDING), [task.id]])
        revocable = [t for t in mine if self.core.revocable(t.id)]
        if revocable:
            self._revoke(revocable, cid, req_id)
            return _DEFER
        return True

    def _revoke(self, tasks: list[_Task], cid: int, req_id: int) -> None:
        """Ask workers to drop tasks queued there; answer ``req_id`` with True once
        every one is confirmed dropped (False if one had started after all)."""
        waiting = {"left": len(tasks), "ok": True, "conn": cid, "req": req_id}
        for task in tasks:
            self.revokes[task.id] = waiting
        self._run(self.core.handle(RevokeRequested(tuple(t.id for t in tasks))))

    def _revoked(self, task_id: str, results: list[list[Any]]) -> None:
        waiting = self.revokes.pop(task_id, None)
        if waiting is None:
            return
        dropped = bool(results) and results[0][1] == Kind.FAILED and \
            results[0][2] == ErrorKind.CANCELLED
        waiting["ok"] = waiting["ok"] and dropped
        waiting["left"] -= 1
        if waiting["left"] == 0:
            self._send(waiting["conn"], [Op.REPLY, waiting["req"], True, waiting["ok"]])

    def _job_of(self, payload: Any) -> str:
        """The job a task's payload (its last item: the runtime_env) belongs to: the
        one it names, else the node's own (an embedded runtime's driver)."""
        env = payload[-1] if isinstance(payload, list) and payload else None
        job = env.get("job_id") if isinstance(env, dict) else None
        return str(job or self.config.get("job_id", ""))

    _calls: dict[int, Any] = {
        Call.SHUTDOWN: _call_shutdown,
        Call.CANCEL_PENDING: _call_cancel_pending,
        Call.LEASE: lambda self, conn, demand: self.leases.request(conn, demand,
                                                                   self._request_id),
        Call.CANCEL_QUEUED: _call_cancel_queued,
        Call.LEASE_LOST: lambda self, conn, worker_id: self.leases.lost(worker_id),
    }

    # -------------------------------------------------------------- shutdown
    def _shutdown(self) -> None:
        self.stopping = True
        self.persistence.close(clean=True)
        for conn in list(self.conns.values()):
            if isinstance(conn, _Conn) and conn.out:
                with contextlib.suppress(OSError):
                    conn.sock.setblocking(True)
                    conn.sock.settimeout(0.5)
                    conn.sock.sendall(bytes(conn.wbuf[conn.woff:]) + pack_frame(conn.out))
        for w in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        for w in list(self.workers_by_pid.values()):
            while time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(w.pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid:
                    break
                time.sleep(0.005)
        self.store.cleanup()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
        shutil.rmtree(self.session_dir, ignore_errors=True)
        if self.config.get("shm_dir"):
            shutil.rmtree(self.config["shm_dir"], ignore_errors=True)


def _op_name(msg: Any) -> str:
    """The op of a message, by name when it is one of ours."""
    if not isinstance(msg, list) or not msg:
        return f"a message that is not [op, ...] ({str(msg)[:40]!r})"
    try:
        return Op(msg[0]).name
    except (ValueError, TypeError):
        return f"op {msg[0]!r}"


#: Where a client message names the task it is about and the objects it makes or
#: asks for: {op: (index of the task id or None, index of the object id(s))}.
_ABOUT = {Op.SUBMIT: (1, 2), Op.ACTOR_CALL: (2, 3), Op.TASK_DONE: (1, None),
          Op.DIRECT_DONE: (1, None),
          Op.PUT: (None, 1), Op.FETCH: (None, 1)}


def _about(msg: list[Any]) -> tuple[str | None, list[str]]:
    """(task id, object ids) a message is about, as far as its op tells."""
    where = _ABOUT.get(msg[0])
    if where is None:
        return None, []
    task_at, ids_at = where
    task_id = msg[task_at] if task_at is not None and len(msg) > task_at else None
    ids = msg[ids_at] if ids_at is not None and len(msg) > ids_at else []
    if msg[0] in (Op.TASK_DONE, Op.DIRECT_DONE) and len(msg) > 2 and isinstance(msg[2], list):
        ids = [r[0] for r in msg[2] if isinstance(r, list) and r]  # its results' ids
    ids = [ids] if isinstance(ids, str) else ids
    return task_id, [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def _preload(modules: list[str]) -> None:
    """Import ``modules`` here, before any worker is forked, so that workers start
    with them imported (the ``worker_preload`` option). A module that fails is
    logged and left to the workers to import themselves."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the workers will meet (and report) it themselves
            print(f"fedexec node: worker_preload could not import {name!r}: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def main() -> None:
    """Entry point: ``python -m fedexec.backends.native.node`` with the config as JSON
    on stdin (token included) and fd 3 (if open) to report readiness."""
    raw = sys.stdin.buffer.read()
    config = json.loads(raw)
    token = bytes.fromhex(config.pop("token"))
    ready_fd = config.pop("ready_fd", None)
    for path in reversed(config.get("sys_path") or []):
        if path not in sys.path:
            sys.path.insert(0, path)
    if config.get("cwd"):
        with contextlib.suppress(OSError):
            os.chdir(config["cwd"])
    _preload(config.get("worker_preload") or [])
    manager = NodeManager(config, token)
    try:
        manager.serve(ready_fd)
    except OSError as exc:
        if exc.errno != errno.EINTR:
            raise
    # Everything is cleaned up (``_shutdown``): skip the interpreter's finalization,
    # ~50 ms of tearing down modules that every embedded runtime's shutdown waited
    # for. Workers exit the same way.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    # Run the package's copy of this module, not ``__main__``: one copy of its
    # classes and markers, whatever imports ``.node``.
    from fedexec.backends.native import node as _node

    _node.main()
