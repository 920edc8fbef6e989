"""The ``native`` backend's client: what a driver (and every worker) uses to talk to
its node manager.

One authenticated connection carries everything, in order. ``submit`` pickles the
call, replaces top-level ref arguments by :class:`DepSlot` markers and sends one
SUBMIT; the node manager pushes OBJECT messages back, which complete the refs on
the reader thread. Reference counting: each process holds at most one
``ObjectRef`` instance per id (``_refs``); creating one for an id it did not make
sends INCREF (and SUBSCRIBE, so the ref completes), collecting it sends DECREF.
Those changes queue in ``_refcount_ops`` (``__del__`` may run in any thread and
must not lock) and are written, in order, before the next message. Actor calls
go straight to the actor's worker when they can (``direct.ActorLinks``), still
registered with the node manager by an ACTOR_CALL naming that worker. With
caller leases (on by default; ``FEDEXEC_TASK_LEASES=0`` turns them off), a driver's
tasks whose ref arguments (if any) are its own leased results go straight to a
worker leased to it (``leases.TaskLeases``: LEASE_EXEC there, LEASE_DONE back, no
SUBMIT); their results are held here until a ref to one is pickled, or passed to a
task the hub runs (``ref_escaping``: PROMISE or PUT first), and dropping one the
node manager never knew sends no DECREF.

Why this module is over 600 lines: ``NativeBackend`` is the whole Backend
interface (tasks, objects, actors, placement groups, cancelling, cluster queries)
over one connection, and its parts share that connection, the refs table and the
flusher. Split out already: leases, direct actor links, values, read_here. The
next seam is the refs table and reference counting (``_refs``, ``_refcount_ops``,
``_on_object``, ``ref_escaping``) as a component.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from ... import serialization
from ..._ids import new_id, task_of
from ..._runtime import RuntimeContext, TaskContext, current_task
from ...actors import ActorHandle, is_async_class, public_methods
from ...exceptions import (
    BrokenExecutorError,
    ClusterUnreachableError,
    FedexecError,
    NodeDiedError,
    ObjectLostError,
    ObjectStoreFullError,
)
from ...options import ActorOptions, MethodOptions, PlacementGroupStrategy, TaskOptions
from ...placement import PlacementGroup
from ...refs import ObjectRef
from .._net import host_of, node_ip
from .._scheduling import fits
from ..base import Backend
from . import _values as values
from . import cluster
from .channel import Channel
from .direct import ActorLinks, Outboxes
from .leases import TaskLeases, leases_enabled
from .pending_actors import largest
from .protocol import Call, ErrorKind, Kind, Op, client_handshake
from .read_here import read_until_done
from .store import write_object

__all__ = ["NativeBackend"]

_log = logging.getLogger("fedexec")

#: how long a node's table may lag the head's (a heartbeat tick or two): a shape that
#: fits no node it knows is asked about again for this long before it is refused
_VIEW_LAG_S = 1.5
_CALL_TAG = 0x80  # object ids of actor calls end in 0x80 + index; puts end in "ff"


_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes, values.DepSlot})

#: What a control call does, for the error saying it cannot be done any more.
_WHAT = {
    Call.CLUSTER_RESOURCES: "report its resources",
    Call.AVAILABLE_RESOURCES: "report its resources",
    Call.NODES: "list its nodes",
    Call.GET_ACTOR: "look up a named actor",
    Call.KILL_ACTOR: "kill an actor",
    Call.CREATE_ACTOR: "create an actor",
    Call.PLACEMENT_GROUP: "create a placement group",
    Call.REMOVE_PLACEMENT_GROUP: "remove a placement group",
    Call.CANCEL_PENDING: "cancel a task",
    Call.METRICS: "record metrics",
}


def _in_group(options: Any, demand: dict[str, float]) -> dict[str, float] | None:
    """``demand`` renamed into its placement-group bundle, or None if not in a group."""
    strategy = options.scheduling_strategy
    if not isinstance(strategy, PlacementGroupStrategy):
        return None
    from .placement_groups import bundle_demand

    pg = strategy.placement_group
    index = strategy.bundle_index
    if index >= len(pg.bundle_specs):
        raise ValueError(f"bundle_index {index} is out of range: the group has "
                         f"{len(pg.bundle_specs)} bundles")
    return bundle_demand(demand, pg.id, index)


def _live_totals(nodes: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The total resources of each live node of a NODES answer."""
    return [dict(n["resources"]) for n in nodes if n.get("alive", True)]


def _all_atoms(items: Any) -> bool:
    """True if every item is of a type the plain pickler handles alone."""
    for item in items:
        if type(item) not in _ATOMS:
            return False
    return True


def _ref_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[ObjectRef[Any], ...]:
    """The top-level ref arguments, in the order ``_pack_args`` numbers them."""
    return tuple(a for a in (*args, *kwargs.values()) if isinstance(a, ObjectRef))


class _RefTable:
    """``id -> the live ObjectRef of this process`` (weak; cheaper than a
    ``WeakValueDictionary``). ``discard`` is called from ``ObjectRef.__del__``."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[str, weakref.ref[ObjectRef[Any]]] = {}

    def get(self, obj_id: str) -> ObjectRef[Any] | None:
        w = self._d.get(obj_id)
        return None if w is None else w()

    def add(self, obj_id: str, ref: ObjectRef[Any]) -> None:
        self._d[obj_id] = weakref.ref(ref)

    def discard(self, ref: ObjectRef[Any]) -> bool:
        """Forget ``ref``; True if it was this process's instance for its id."""
        w = self._d.get(ref._id)
        if w is None:
            return False
        live = w()
        if live is not None and live is not ref:
            return False  # a newer instance took the id over
        self._d.pop(ref._id, None)
        return True

    def values(self) -> list[ObjectRef[Any]]:
        return [r for w in list(self._d.values()) if (r := w()) is not None]


def _say_dashboard(info: dict[str, Any]) -> None:
    """Tell the driver's user where its embedded runtime's dashboard is (with the
    sign-in token: the runtime is theirs) or why there is none."""
    if info.get("dashboard_url"):
        print(f"fedexec: dashboard at {info['dashboard_url']} (sign in: "
              f"{info['dashboard_url']}/?token={info['token'].hex()})", file=sys.stderr)
    elif info.get("dashboard_error"):
        print(f"fedexec: no dashboard: {info['dashboard_error']}", file=sys.stderr)


class NativeBackend(Backend):
    """Client of a native node manager (see the module docstring)."""

    name = "native"
    capabilities = frozenset({
        "actors", "async_actors", "named_actors", "actor_restarts", "zero_copy",
        "cancel_running", "worker_processes", "spilling", "gpus", "placement_groups",
        "multi_node", "lineage_reconstruction",
    })
    tracks_refs = True
    #: Read here and by ``runtime.NodeProcess.launch`` (the embedded node manager).
    options = frozenset({"blocked_warning_s", "remote_store", "log_to_stderr",
                         "heartbeat_interval", "heartbeat_timeout", "memory_usage_threshold",
                         "memory_monitor_interval_s", "worker_preload", "dashboard",
                         "dashboard_host", "dashboard_port",
                         "max_finished_tasks", "state_dir"})

    def __init__(self, config: Any, *, _attach: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self._runtime = None
        if _attach is None:
            _attach = cluster.join(config)  # None: no address, and not in a job
            if _attach is None:
                from .runtime import EmbeddedRuntime

                self._runtime = EmbeddedRuntime.start(config)
                _attach = self._runtime.attach_info()
                _say_dashboard(_attach)
        # A driver joining a cluster sends its import path with its work, so workers
        # started by someone else can import the driver's modules.
        self._import_path = None if self._runtime is not None or _attach.get("worker_id") \
            else [p for p in sys.path if p]
        self.node_id: str = _attach.get("node_id", "")
        self.job_id: str = _attach.get("job_id", "")
        self.worker_id: str = _attach.get("worker_id") or f"driver-{os.getpid()}"
        self.role = _attach.get("role", "driver")
        #: This node's IP as the cluster sees it (refined below for joined drivers).
        self.node_ip = _attach.get("node_ip") or node_ip(None)
        self._refs = _RefTable()
        self._refcount_ops: collections.deque[tuple[int, str]] = collections.deque()
        self._pending: dict[int, Any] = {}
        self._req_ids = itertools.count(1)
        self._creates: dict[str, Any] = {}
        self._restores: dict[str, Any] = {}
        self._fn_cache: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._closed = False
        self._shut_down = False  # shutdown() was called: the runtime is gone on purpose
        self._broken: str | None = None
        self._refused: BaseException | None = None  # why the node manager closed us
        self.on_message: Any = None  # set by a worker loop for the messages it serves
        self._waits: dict[object, tuple[float, list[ObjectRef[Any]]]] = {}
        self._warned: set[object] = set()
        self._warn_after = float(config.backend_options.get("blocked_warning_s", 30.0))
        self.worker_loop: Any = None
        target = _attach.get("target") or ("unix", _attach["socket_path"])
        try:
            sock = cluster.connect(target)
        except BaseException as exc:
            if self._runtime is not None:
                self._runtime.stop()
            if isinstance(exc, ClusterUnreachableError) and _attach.get("hint"):
                raise ClusterUnreachableError(f"{exc}{_attach['hint']}") from exc
            raise
        try:
            client_handshake(sock, _attach["token"], role=_attach.get("role", "driver"))
        except BaseException:
            sock.close()
            if self._runtime is not None:
                self._runtime.stop()
            raise
        # (a worker's is polled: its main thread reads it while idle, see worker.py)
        polled = self.role == "worker"
        self._channel = Channel(sock, self._on_frame, self._on_close,
                                f"fedexec-native-recv-{self.worker_id[-6:]}",
                                before_send=self._drain_refcount_ops, polled=polled)
        self._outboxes = Outboxes()  # direct links (see direct.py): flushed after _channel
        self._token: bytes = _attach["token"]
        self._session_dir = os.path.dirname(_attach["socket_path"]) \
            if _attach.get("socket_path") else None
        self._links = ActorLinks(self, self._token)
        self._leases: TaskLeases | None = None  # (set below, once we know our store)
        self._wake_flusher = threading.Event()
        self._flush_now = False  # the flusher's next turn writes at once (no batching)
        if polled:
            self._links.poller.add(sock, self._channel.pump)
        else:
            self._channel.start()
        self._node_totals = self._live_totals()  # see _feasible
        self._fitting: set[tuple[tuple[str, float], ...]] = set()  # shapes a node fits
        #: True when the node's shared-memory store is not on this machine (a driver
        #: joining by address from elsewhere): large values then travel in messages.
        self.remote_store = False
        cluster_node = False  # our node listens on TCP: other nodes may join it
        if not self.node_id:  # joined a running cluster: ask where we are
            info = self._request(Call.NODE_INFO)
            cluster_node = bool(info.get("address"))
            self.node_id = info["node_id"]
            self.job_id = cluster.driver_job_id(info.get("head_id") or self.node_id)
            self.node_ip = node_ip(host_of(info.get("address")))
            forced = config.backend_options.get("remote_store")
            self.remote_store = bool(forced) if forced is not None else \
                not os.path.isdir(info["store_dir"])
        #: Caller leases (see leases.py): a driver on this node's store only, of a
        #: node no other node can join (the embedded runtime).
        self._leases = TaskLeases(self) if self.role == "driver" and leases_enabled() \
            and not self.remote_store and not cluster_node else None
        if self.role == "driver":
            self.hello()
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                         name="fedexec-native-flush")
        self._flusher.start()

    def hello(self, listen: str | None = None) -> None:
        """Register with the node manager (a worker does it once it can take tasks;
        ``listen``: the socket it takes leased tasks on, see leases.py)."""
        info: dict[str, Any] = {"remote_store": self.remote_store}
        if listen is not None:
            info["listen"] = listen
        self._send([Op.HELLO, self.role, os.getpid(), self.worker_id if self.role == "worker"
                    else None, info])

    # ------------------------------------------------------------- messaging
    def _send(self, msg: list[Any]) -> None:
        self._channel.send(msg)

    def _drain_refcount_ops(self, out: list[Any]) -> None:
        ops = self._refcount_ops
        if not ops:
            return
        kind: int | None = None
        ids: list[str] = []
        while True:
            try:
                op, oid = ops.popleft()
            except IndexError:
                break
            if op != kind:
                ids = []
                out.append([op, ids])
                kind = op
            ids.append(oid)

    def _send_soon(self, msg: list[Any]) -> None:
        """Queue ``msg``; it is written within ~1 ms, or as soon as anyone waits."""
        if self._channel.send_later(msg):
            self._wake_flusher.set()

    def flush(self) -> None:
        """Write every queued message now (the node manager's first)."""
        self._channel.flush()
        self._outboxes.flush()

    def _flush_loop(self) -> None:
        last_report = last_sweep = time.monotonic()
        while not self._closed:
            if self._wake_flusher.wait(0.05):
                self._wake_flusher.clear()
                if self._flush_now:  # work for an idle worker: nothing to batch
                    self._flush_now = False
                else:
                    time.sleep(0.0005)  # let a submit loop fill the batch
                self.flush()
            elif self._refcount_ops:
                self._channel.flush()
            now = time.monotonic()
            if self._leases is not None:
                self._leases.sweep(now)
            loop = self.worker_loop
            if loop is not None and (loop.leased or loop.ended):
                loop.report_running(now)
            if now - last_sweep > 1.0:
                last_sweep = now
                self._links.sweep(now)
            if self._waits and now - last_report > 1.0:
                last_report = now
                with contextlib.suppress(Exception):
                    self._report_long_waits()

    def _ask(self, table: dict[Any, Any], key: Any, msg: list[Any], timeout: float | None,
             gone: BaseException) -> Any:
        """Send ``msg`` and wait for its answer, which the reader thread sets in
        ``table[key]``; raises ``gone`` if the connection is (or gets) closed."""
        import concurrent.futures as cf

        fut: cf.Future[Any] = cf.Future()
        table[key] = fut
        try:
            if self._closed:  # checked after registering: _on_close fails it otherwise
                raise gone
            self._send(msg)
            return fut.result(timeout)
        finally:
            table.pop(key, None)

    def _request_later(self, call: Call, args: list[Any],
                       answered: Any) -> None:
        """Send a control call without waiting: ``answered(ok, value)`` runs on the
        reader thread with its REPLY (``ok`` False, ``value`` the error, if the
        connection closed first)."""
        import concurrent.futures as cf

        req_id = next(self._req_ids)
        fut: cf.Future[Any] = cf.Future()
        self._pending[req_id] = fut

        def done(f: cf.Future[Any]) -> None:
            self._pending.pop(req_id, None)
            error = f.exception()
            if error is not None:
                answered(False, error)
            else:
                answered(*f.result())

        fut.add_done_callback(done)
        if self._closed:
            fut.set_exception(self._gone(_WHAT.get(call, f"answer {call.name}")))
            return
        self._send([Op.REQUEST, req_id, int(call), args])

    def _request(self, call: Call, *args: Any, timeout: float = 60.0) -> Any:
        req_id = next(self._req_ids)
        name = getattr(call, "name", f"call {call!r}")
        try:
            ok, value = self._ask(self._pending, req_id,
                                  [Op.REQUEST, req_id, int(call), list(args)], timeout,
                                  self._gone(_WHAT.get(call, f"answer {name}")))
        except TimeoutError:
            raise FedexecError(f"the node manager did not answer {name} within "
                               f"{timeout} s") from None
        if not ok:
            raise values.reply_error(value)
        return value

    def _gone(self, what: str) -> BaseException:
        """The error for ``what`` once the runtime is gone: the executor was shut down
        (RuntimeError, as the stdlib pools), or its node manager was lost."""
        if self._shut_down:
            return RuntimeError(f"the executor was shut down, so it cannot {what} any "
                                "more; create a new executor for more work")
        if self._refused is not None:
            return self._refused
        return NodeDiedError(f"cannot {what}: the connection to the node manager was lost "
                             "(it exited or was killed); the runtime is gone, create a new "
                             "executor")

    def _object_gone(self, obj_id: str) -> BaseException:
        """The error of a ref whose runtime is gone before its value could be read."""
        if self._shut_down:
            return ObjectLostError(
                f"object {obj_id} cannot be read: the executor that held it was shut down "
                "(before it was computed, or with its shared-memory store); get() the "
                "values you need before shutting the executor down")
        return NodeDiedError(f"object {obj_id} cannot be read: the connection to the node "
                             "manager was lost (it exited or was killed); the runtime is gone")

    def _on_frame(self, frame: list[Any]) -> None:
        for msg in frame:
            op = msg[0]
            if op == Op.OBJECT:
                self._on_object(msg)
            elif op == Op.STARTED:
                refs = self._refs
                for rid in msg[1]:
                    ref = refs.get(rid)
                    if ref is not None and ref._state == "PENDING":
                        ref.set_running_or_notify_cancel()
            elif op == Op.REPLY:
                fut = self._pending.get(msg[1])
                if fut is not None:
                    fut.set_result((msg[2], msg[3]))
            elif op == Op.LEASE_RECALL:
                if self._leases is not None:
                    self._leases.recalled(msg[1])
            elif op == Op.REFUSED:  # the node manager closes the connection, saying why
                self._refused = values.reply_error(msg[2])
            elif op == Op.CREATED:
                fut = self._creates.pop(msg[1], None)
                if fut is not None:
                    fut.set_result((msg[2], msg[3], msg[4]))
            elif self.on_message is not None:
                self.on_message(msg)

    def _on_object(self, msg: list[Any]) -> None:
        entry = msg[1:]
        obj_id, kind = entry[0], entry[1]
        if kind != Kind.REMOTE:  # a FETCH is answered with the bytes here, or an error
            fut = self._restores.pop(obj_id, None)
            if fut is not None:
                fut.set_result(entry)
        ref = self._refs.get(obj_id)
        if ref is None or ref.done():
            return
        if kind == Kind.FAILED and entry[2] == ErrorKind.CANCELLED and ref._cancel_now():
            return  # never started: a stdlib-cancelled future
        # PENDING -> FINISHED directly is a valid Future transition (one lock, not two).
        if kind in (Kind.INLINE, Kind.SHM, Kind.REMOTE):
            ref.set_result(values.lazy(self, entry))
        else:
            err = values.error_of(entry)
            if isinstance(err, BrokenExecutorError):
                self._broken = str(err)
            ref.set_exception(err)

    def _on_close(self) -> None:
        """The connection ended: we closed it (shutdown), or the node manager was lost.
        Whatever still waits on it fails, saying which."""
        lost = not self._closed
        self._closed = True
        for ref in list(self._refs.values()):
            if not ref.done():
                self._fail_ref(ref, self._object_gone(ref.id))
        gone = self._gone("get an answer from the node manager")
        for fut in list(self._pending.values()) + list(self._creates.values()):
            with contextlib.suppress(Exception):
                fut.set_exception(gone)
        for obj_id, fut in list(self._restores.items()):
            with contextlib.suppress(Exception):
                fut.set_exception(self._object_gone(obj_id))
        self._links.close()
        if self._leases is not None:
            self._leases.close()
        if lost and self.role == "worker":
            loop = self.worker_loop
            if loop is not None:
                loop.exit()
            os._exit(0)

    @staticmethod
    def _fail_ref(ref: ObjectRef[Any], err: BaseException) -> None:
        with contextlib.suppress(Exception):
            if ref._state == "PENDING":
                ref.set_running_or_notify_cancel()
            ref.set_exception(err)

    # ----------------------------------------------------------- references
    def ref_released(self, ref: ObjectRef[Any]) -> None:
        if self._refs.discard(ref) and not self._closed:
            leases = self._leases
            if leases is not None and leases.released(ref._id):
                return  # a leased task's result the node manager never knew
            self._refcount_ops.append((Op.DECREF, ref._id))

    def ref_escaping(self, ref: ObjectRef[Any]) -> None:
        if self._leases is not None:
            self._leases.escaping(ref._id)

    def _new_ref(self, obj_id: str, name: str) -> ObjectRef[Any]:
        ref: ObjectRef[Any] = ObjectRef(obj_id, self, name)
        self._refs.add(obj_id, ref)
        return ref

    def resolve_ref(self, ref_id: str) -> ObjectRef[Any]:
        ref = self._refs.get(ref_id)
        if ref is not None:
            return ref
        with self._lock:
            ref = self._refs.get(ref_id)
            if ref is not None:
                return ref
            ref = self._new_ref(ref_id, "")
            self._refcount_ops.append((Op.INCREF, ref_id))
        self._send([Op.SUBSCRIBE, [ref_id]])
        if self._closed:  # nothing will ever complete it
            self._fail_ref(ref, self._object_gone(ref_id))
        return ref

    def fetch(self, obj_id: str) -> list[Any]:
        """Ask for an object's bytes on this node (restored if it was spilled, pulled
        if it is on another node); its INLINE or SHM entry (raises its error)."""
        entry = self._ask(self._restores, obj_id, [Op.FETCH, [obj_id]], None,
                          self._object_gone(obj_id))
        if entry[1] not in (Kind.SHM, Kind.INLINE):
            raise values.error_of(entry)
        return list(entry)

    def write_shm(self, obj_id: str, blob: serialization.Serialized) -> str:
        """Reserve room in the store, write ``blob`` there (into a freed file the
        node hands over, if any); the file's path."""
        from .store import object_size

        size = object_size(blob.data, blob.buffers)
        path, error, staging = self._ask(self._creates, obj_id, [Op.CREATE, obj_id, size],
                                         120, self._gone("store an object"))
        if path is None:
            raise ObjectStoreFullError(error)
        write_object(path, blob.data, blob.buffers, staging, keep_mapped=True)
        return str(path)

    # ------------------------------------------------------------------ tasks
    def _fn_blob(self, fn: Any) -> bytes:
        """The pickled function, cached per function object (as Ray exports a remote
        function once): a function pickled by value is captured at its first use."""
        try:
            blob = self._fn_cache.get(fn)
        except TypeError:
            blob = None
        if blob is None:
            name = getattr(fn, "__qualname__", repr(fn))
            blob = serialization.dumps(fn, what=f"function {name!r}", out_of_band=False).data
            with contextlib.suppress(TypeError):
                self._fn_cache[fn] = blob
        return blob

    def _pack_args(self, obj_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   escape: bool = True) -> tuple[list[str], list[str], list[Any]]:
        """(dep ids, contained ids, [mode, data, buffers]) for a call's arguments.

        Large arguments are written to shared memory as an object of their own (the
        last dep); the caller must call :meth:`_release_args` after sending the call.
        ``escape=False``: the ref arguments (deps) are not made known to the node
        manager here (the caller does, unless a lease takes the task).
        """
        deps: list[str] = []
        if any(isinstance(a, ObjectRef) for a in args):
            new_args = []
            for a in args:
                if isinstance(a, ObjectRef):
                    if escape:
                        self.ref_escaping(a)
                    new_args.append(values.DepSlot(len(deps)))
                    deps.append(a.id)
                else:
                    new_args.append(a)
            args = tuple(new_args)
        if kwargs and any(isinstance(v, ObjectRef) for v in kwargs.values()):
            new_kwargs = {}
            for k, v in kwargs.items():
                if isinstance(v, ObjectRef):
                    if escape:
                        self.ref_escaping(v)
                    new_kwargs[k] = values.DepSlot(len(deps))
                    deps.append(v.id)
                else:
                    new_kwargs[k] = v
            kwargs = new_kwargs
        if _all_atoms(args) and _all_atoms(kwargs.values()):
            # The common case (numbers, strings, dep slots): the C pickler alone.
            return deps, [], [0, pickle.dumps((args, kwargs), 5), []]
        try:
            blob = serialization.dumps((args, kwargs))
        except Exception:
            serialization.dumps(args, what="args")
            serialization.dumps(kwargs, what="kwargs")
            raise
        contained = [r.id for r in blob.contained if isinstance(r, ObjectRef)]
        if blob.nbytes <= values.INLINE_MAX:
            return deps, contained, [0, blob.data, [bytes(b) for b in blob.buffers]]
        # Large arguments go to shared memory once, as an object the task depends on.
        args_id = new_id() + "fe"
        entry, _ = values.encode_blob(self, args_id, blob)
        self._send([Op.PUT, *entry])
        deps.append(args_id)
        return deps, contained, [1, None, None]

    def _release_args(self, deps: list[str]) -> None:
        """After a call was sent: drop our hold on its large-arguments object (the
        call's pin keeps it alive as long as needed)."""
        if deps and deps[-1].endswith("fe"):
            self._refcount_ops.append((Op.DECREF, deps[-1]))

    def _check_submit(self) -> None:
        if self._shut_down:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self._closed:
            raise self._gone("schedule new work")
        if self._broken is not None:
            raise BrokenExecutorError(self._broken)

    def _feasible(self, demand: dict[str, float], what: str) -> bool:
        """Refuse work no node could ever run (``ValueError``). Decided per node (work
        runs on one node, so the cluster's summed totals say nothing): the live
        nodes' totals, then the node types a running autoscaler may launch. True
        when it fits no live node but such a node type: it waits for that node (a
        task queues as pending demand; an actor pends on the node, see
        ``pending_actors.py``)."""
        if self._fits_a_node(demand):
            return False
        from ...autoscaler.advert import autoscaler_node_types  # (~20 ms: only when needed)

        # Asked first: a burst of such work costs one question a second (cached).
        shapes = autoscaler_node_types(self)
        if shapes is not None and any(fits(demand, s) for s in shapes):
            return True  # an autoscaler node type fits: it waits for that node
        # Nodes may have joined since we last looked: ask before refusing. Our node's
        # table lags the head's by up to a heartbeat tick: unless our node is the
        # head, ask again for a while before refusing.
        deadline = time.monotonic() + _VIEW_LAG_S
        while True:
            nodes = self._request(Call.NODES)
            self._node_totals = _live_totals(nodes)
            self._fitting = set()
            if self._fits_a_node(demand):
                return False
            ours = next((n for n in nodes if n["node_id"] == self.node_id), None)
            if (ours is not None and ours.get("is_head")) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        why = (" and no autoscaler runs (start one with 'fedexec up')" if shapes is None else
               " and no running autoscaler may launch a node it fits (node types: "
               f"{shapes})")
        raise ValueError(
            f"{what} asks for {demand} but no single node has that much: the largest node "
            f"has {largest(demand, self._node_totals)} ({len(self._node_totals)} live "
            f"node(s)){why}; it could never run. Ask for less, or start a node with more "
            "(num_cpus=..., num_gpus=..., resources=...), or give the autoscaler a node "
            "type that fits it"
        )

    def _fits_a_node(self, demand: dict[str, float]) -> bool:
        """Does ``demand`` fit one of the live nodes last seen? (A shape found to fit
        is remembered: a burst of submissions does not scan every node each.)"""
        shape = tuple(sorted(demand.items()))
        if shape in self._fitting:
            return True
        if not any(fits(demand, total) for total in self._node_totals):
            return False
        if len(self._fitting) < 1024:
            self._fitting.add(shape)
        return True

    def _live_totals(self) -> list[dict[str, float]]:
        """The total resources of each live node."""
        return _live_totals(self._request(Call.NODES))

    def _env(self, runtime_env: Any) -> Any:
        """The runtime_env sent with work, plus our import path when we joined a
        cluster, the job id when it is not the node's (a joined driver's; inside a
        task, the task's: nested work belongs to its job), and our namespace when it
        is not the default one (tasks inherit it)."""
        extra: dict[str, Any] = {}
        task = current_task()  # work submitted by a task belongs to the task's job
        job_id = task.runtime.job_id if task is not None and task.backend is self \
            else self.job_id
        if self._import_path is not None:
            extra = {"sys_path": self._import_path, "job_id": job_id}
        elif job_id != self.job_id:
            extra["job_id"] = job_id
        namespace = self.namespace_for(None)
        if namespace != "default":
            extra["namespace"] = namespace
        return {**(runtime_env or {}), **extra} if extra else runtime_env

    def _strategy(self, options: Any) -> Any:
        """The wire form of a scheduling strategy (checked against the live nodes)."""
        from ...options import NodeAffinity

        strategy = options.scheduling_strategy
        if strategy == "DEFAULT":
            return None
        if strategy == "SPREAD":
            return "SPREAD"
        if isinstance(strategy, NodeAffinity):
            if strategy.node_id != self.node_id and not strategy.soft:
                alive = {n["node_id"] for n in self.nodes() if n.get("alive", True)}
                if strategy.node_id not in alive:
                    raise ValueError(f"no alive node with id {strategy.node_id!r}; alive "
                                     f"nodes: {sorted(alive)}")
            return ["NODE", strategy.node_id, bool(strategy.soft)]
        raise self._unsupported("placement groups", "placement_groups")

    def submit(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
               options: TaskOptions) -> list[ObjectRef[Any]]:
        self._check_submit()
        name = options.name or getattr(fn, "__qualname__", None) or repr(fn)
        demand = options.demand(1.0)
        in_group = _in_group(options, demand)
        if in_group is not None:
            demand, strategy = in_group, None
        else:
            self._feasible(demand, f"task {name!r}")
            strategy = None if options.scheduling_strategy == "DEFAULT" else \
                self._strategy(options)
        task_id = new_id()
        fn_blob = self._fn_blob(fn)
        leases = self._leases
        # (its ref arguments are made known to the node manager below, unless leased)
        deps, contained, packed = self._pack_args(task_id, args, kwargs, escape=False)
        retry = options.retry_exceptions
        retry_blob = retry if isinstance(retry, bool) else serialization.dumps(retry).data
        payload = [fn_blob, *packed, options.num_returns, retry_blob, options.max_retries,
                   self._env(options.runtime_env)]
        n = options.num_returns
        return_ids = [f"{task_id}{i:02x}" for i in range(n)]
        refs = [self._new_ref(rid, name) for rid in return_ids]
        if leases is not None:
            dep_refs = _ref_args(args, kwargs) if deps else ()
            if leases.submit(task_id, return_ids, name, demand, options, payload,
                             plain=strategy is None and in_group is None and not contained,
                             deps=deps, dep_refs=dep_refs):
                return refs  # straight to a worker leased to us (see leases.py)
            for ref in dep_refs:  # the node manager must know them before the SUBMIT
                self.ref_escaping(ref)
        msg = [Op.SUBMIT, task_id, return_ids, name, demand, options.max_retries, deps,
               contained, payload, strategy]
        loop = self.worker_loop
        if loop is not None and loop.leased and loop.current in loop.leased:
            msg.append(loop.current)  # our task is a caller's: the NM does not know it
        self._send_soon(msg)
        self._release_args(deps)
        return refs

    def put(self, value: Any) -> ObjectRef[Any]:
        self._check_submit()
        obj_id = new_id() + "ff"
        entry, local = values.encode(self, obj_id, value, "the value passed to put()")
        ref = self._new_ref(obj_id, "put")
        ref.set_running_or_notify_cancel()
        ref.set_result(local)
        self._send_soon([Op.PUT, *entry])
        return ref

    @contextlib.contextmanager
    def blocked(self, refs: Any = (), timeout: float | None = None,
                done: Any = None) -> Iterator[None]:
        """Send what is queued before waiting; a worker lends its CPU meanwhile; a
        wait that lasts is reported (see ``_report_long_waits``)."""
        loop = self.worker_loop
        if loop is None or loop.listener is None:
            # Our direct actor calls go first (the node manager takes their
            # registrations in any order, see direct.py); our leased tasks do not
            # (one may read what a PUT queued for the node): ``Outboxes``.
            self._outboxes.flush_calls()
        self.flush()
        token = object()
        self._waits[token] = (time.monotonic(), list(refs))
        try:
            if loop is None:
                if done is None and len(refs) == 1:
                    # one leased task's or direct call's result: read its link here (no
                    # hand-off from the poller)
                    ref = next(iter(refs))
                    link = self._leases.link_of(ref.id) if self._leases is not None \
                        else None
                    if link is None:
                        link = self._links.channel_of(ref.id)
                    if link is not None:
                        read_until_done(self._links.poller, link, ref, timeout)
                yield
            else:
                with loop.blocked():
                    yield
        finally:
            self._waits.pop(token, None)

    def _report_long_waits(self) -> None:
        """Log once per wait that lasts over ``blocked_warning_s`` what it waits on."""
        now = time.monotonic()
        for token, (since, refs) in list(self._waits.items()):
            if now - since < self._warn_after or token in self._warned:
                continue
            self._warned.add(token)
            tasks = sorted({found[0] for r in refs if not r.done()
                            for found in [self._task_of(r)] if found is not None})
            try:
                leased = self._leases.describe(tasks[:20]) if self._leases else {}
                states = self._request(Call.DESCRIBE, tasks[:20], leased,
                                       timeout=10) if tasks else []
            except FedexecError:
                states = []
            lines = "\n".join(f"  - {s}" for s in states) or "  - (objects, not tasks)"
            _log.warning("a get/wait has been blocked for %.0f s on %d object(s):\n%s",
                         now - since, len(refs), lines)
        if len(self._warned) > 1000:
            self._warned = {t for t in self._warned if t in self._waits}

    # ------------------------------------------------------------- cancelling
    @staticmethod
    def _task_of(ref: ObjectRef[Any]) -> tuple[str, bool] | None:
        tag = ref.id[28:]
        if len(ref.id) != 30 or tag in ("ff", "fe"):
            return None
        return task_of(ref.id), int(tag, 16) >= _CALL_TAG

    def cancel_pending(self, ref: ObjectRef[Any]) -> bool:
        found = self._task_of(ref)
        if found is None or ref.done():
            return False
        if self._leases is not None and self._leases.cancel_pending([found[0]]):
            return ref.cancelled()
        ok = self._request(Call.CANCEL_PENDING, found[0])
        if ok:
            ref._cancel_now()
        return ref.cancelled()

    def cancel(self, ref: ObjectRef[Any], *, force: bool, recursive: bool) -> bool:
        found = self._task_of(ref)
        if found is None or ref.done():
            return False
        task_id, is_call = found
        if force and is_call:
            raise ValueError("force-cancelling an actor call is not allowed; kill the actor "
                             "instead")
        if self._leases is not None and self._leases.cancel(task_id, force):
            if recursive:  # the tasks it submitted are the node manager's
                self._send([Op.CANCEL, task_id, force, recursive])
            return True
        self._send([Op.CANCEL, task_id, force, recursive])
        return True

    # ----------------------------------------------------------------- actors
    def create_actor(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any],
                     options: ActorOptions) -> ActorHandle[Any]:
        self._check_submit()
        create = options.demand(1.0)
        life = options.demand(0.0)
        in_group = _in_group(options, create)
        await_node: str | None = None  # what it may wait for if no node fits it yet
        group_id: str | None = None
        if in_group is not None:
            create, life, strategy = in_group, _in_group(options, life) or {}, None
            await_node = "group"  # its group, if not placed yet
            group_id = options.scheduling_strategy.placement_group.id
        else:
            if self._feasible(create, f"actor {cls.__name__!r}"):
                await_node = "node"
            strategy = None if options.scheduling_strategy == "DEFAULT" else \
                self._strategy(options)
            if isinstance(strategy, list) and not strategy[2]:
                await_node = None  # pinned to one node: it does not wait for another
        methods = public_methods(cls)
        is_async = is_async_class(methods)
        actor_id = new_id()
        cls_blob = serialization.dumps(cls, what=f"actor class {cls.__qualname__!r}",
                                       out_of_band=False).data
        deps, contained, packed = self._pack_args(actor_id, args, kwargs)
        spec = {
            "class_name": cls.__name__,
            "methods": methods,
            "is_async": is_async,
            "max_concurrency": options.concurrency(is_async),
            "max_restarts": options.max_restarts,
            "max_task_retries": options.max_task_retries,
            "name": options.name,
            "namespace": self.namespace_for(options.namespace),
            "get_if_exists": options.get_if_exists,
            "demand_create": create,
            "demand_life": life,
            "runtime_env": self._env(options.runtime_env),
            "strategy": strategy,
        }
        if await_node is not None:
            spec["await_node"] = await_node
        if group_id is not None:
            spec["placement_group"] = group_id
        payload = [cls_blob, *packed]
        actor_id, spec = self._request(Call.CREATE_ACTOR, actor_id, spec, payload, deps,
                                       contained)
        self._release_args(deps)
        return self._handle(actor_id, spec)

    def _handle(self, actor_id: str, spec: dict[str, Any]) -> ActorHandle[Any]:
        return ActorHandle(actor_id, self, spec["class_name"], spec["methods"], spec["name"],
                           spec["namespace"], spec.get("node_id"))

    def submit_actor_call(self, handle: ActorHandle[Any], method: str, args: tuple[Any, ...],
                          kwargs: dict[str, Any], options: MethodOptions
                          ) -> list[ObjectRef[Any]]:
        self._check_submit()
        task_id = new_id()
        deps, contained, packed = self._pack_args(task_id, args, kwargs)
        n = options.num_returns
        return_ids = [f"{task_id}{_CALL_TAG + i:02x}" for i in range(n)]
        name = options.name or f"{handle._class_name}.{method}"
        refs = [self._new_ref(rid, name) for rid in return_ids]
        payload = [method, *packed, n]
        # Without refs in its arguments the call may go straight to the actor's worker
        # (see direct.py); the node manager still registers it (the ACTOR_CALL below).
        # A ref nested in an argument goes through the hub too: the worker may get() it
        # before the node manager read the PUT that made it (another connection).
        direct = None if deps or contained else self._links.send(handle.actor_id, task_id, return_ids,
                                                    payload, name)
        self._send_soon([Op.ACTOR_CALL, handle.actor_id, task_id, return_ids, name, deps,
                         contained, payload, handle._location, direct])
        if direct is None:
            self._links.via_hub(handle.actor_id, refs)
        self._release_args(deps)
        return refs

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle[Any]:
        namespace = self.namespace_for(namespace)
        actor_id, spec = self._request(Call.GET_ACTOR, name, namespace)
        return self._handle(actor_id, spec)

    def kill_actor(self, handle: ActorHandle[Any], *, no_restart: bool) -> None:
        self._request(Call.KILL_ACTOR, handle.actor_id, no_restart, handle._location)
        self._links.forget(handle.actor_id)

    def resolve_actor(self, actor_id: str, state: dict[str, Any]) -> ActorHandle[Any]:
        return ActorHandle(actor_id, self, state["class_name"], state["methods"],
                           state.get("name"), state.get("namespace"), state.get("location"))

    # ------------------------------------------------------- placement groups
    def placement_group(self, bundles: Sequence[dict[str, float]], strategy: str,
                        name: str | None) -> PlacementGroup:
        """Ask the node to reserve ``bundles``; ``pg.ready()`` turns True once every
        bundle is reserved (see ``placement_groups.py``)."""
        self._check_submit()
        pg = PlacementGroup(new_id(), [dict(b) for b in bundles], strategy, name)

        def placed(ok: bool, value: Any) -> None:
            if isinstance(value, BaseException):  # the connection closed meanwhile
                pg._ready.set_exception(value)
            elif not ok:
                pg._ready.set_exception(values.reply_error(value))
            else:
                pg._ready.set_result(value is not None)  # None: removed before placed

        self._request_later(Call.PLACEMENT_GROUP, [pg.id, pg.bundle_specs, strategy, name],
                            placed)
        return pg

    def remove_placement_group(self, pg: PlacementGroup) -> None:
        self._request(Call.REMOVE_PLACEMENT_GROUP, pg.id)

    # ---------------------------------------------------------------- cluster
    def cluster_resources(self) -> dict[str, float]:
        return dict(self._request(Call.CLUSTER_RESOURCES))

    def available_resources(self) -> dict[str, float]:
        return dict(self._request(Call.AVAILABLE_RESOURCES))

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._request(Call.NODES))

    def push_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Add user-metric rows (``fedexec.metrics``' deltas) into the node's table."""
        self._request(Call.METRICS, rows, timeout=30.0)

    def stats(self) -> dict[str, Any]:
        """The node manager's counters (objects, tasks, workers, store): for tests."""
        return dict(self._request(Call.STATS))

    def runtime_context(self) -> RuntimeContext:
        return RuntimeContext(self.node_id, self.worker_id, self.job_id, backend=self.name,
                              node_ip_address=self.node_ip,
                              namespace=self.config.namespace or "default")

    def task_context(self, task_id: str | None, actor_id: str | None, extra: Any,
                     job_id: str | None = None, gpus: Any = (),
                     namespace: str | None = None) -> TaskContext:
        """The context a worker sets while running a task or actor method (``job_id``
        and ``namespace``: the submitting driver's; ``gpus``: the ids given to it)."""
        runtime = RuntimeContext(self.node_id, self.worker_id, job_id or self.job_id, task_id,
                                 actor_id, self.name, self.node_ip, tuple(gpus or ()),
                                 namespace or self.config.namespace or "default")
        return TaskContext(self, runtime, extra)

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        self._shut_down = True
        if self._closed:
            if self._runtime is not None:
                self._runtime.stop()
            return
        if cancel_futures:
            if self._leases is not None:
                self._leases.cancel_pending([])
            with contextlib.suppress(FedexecError, RuntimeError):
                self._request(Call.CANCEL_QUEUED)
        if wait:
            self._close_when_done()
        else:  # as the stdlib: return now, let submitted work finish, then stop
            threading.Thread(target=self._close_when_done, daemon=True,
                             name="fedexec-native-shutdown").start()

    def _keep_results(self) -> None:
        """Results still referenced here stay readable after shutdown, as the
        stdlib's futures do: map the large ones in this node's store for good (no
        copy; the mapping outlives the store's files, which go when our references
        are released or with the runtime). Spilled or remote ones are not fetched."""
        for ref in list(self._refs.values()):
            value = ref._result if ref.done() and not ref.cancelled() else None
            if isinstance(value, values.ShmValue):
                value.keep()

    def _close_when_done(self) -> None:
        import concurrent.futures as cf

        pending = [r for r in list(self._refs.values())
                   if not r.done() and self._task_of(r) is not None]
        if pending:
            cf.wait(pending)
        self._keep_results()
        if self._leases is not None:
            self._leases.close()
        self._closed = True
        self._channel.flush()
        self._channel.close()
        self._links.close()
        if self._runtime is not None:
            self._runtime.stop()
