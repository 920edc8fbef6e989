"""``SparkBackend``: fedexec's Backend protocol over a SparkContext.

The driver keeps every task and value; Spark runs leases (see ``_leases``), and
leases run the tasks. Data flow::

    submit ─▶ Task(waiting) ─all direct ref args done─▶ Scheduler(queued)
                                                            │ resources fit (num_cpus...)
                                                            ▼
                   idle lease? ◀─── unassigned (resources held) ───▶ none: the dispatcher
                      │ Assign(spec: fn, args, arg values or              launches a lease
                      ▼          broadcast ids)                           (a Spark job)
    ObjectRef ◀── Stored ◀── Done ◀── running (in a Spark Python worker)

State (under ``_lock``):
    _tasks       {task id: Task}        unfinished tasks
    _by_ref      {ref id: Task}         (a task with num_returns > 1 has several)
    _refs        {ref id: ObjectRef}     weak: every ref of this runtime
    _scheduler   FIFO per shape over the executor's ResourcePool (num_cpus, ...)
    _unassigned  tasks holding their resources, waiting for a lease
    _leases      {lease id: LeaseRecord} leases not ended; _idle_leases, most recent last
    _broken      why the executor is broken (its initializer raised), or None

A task's resources are held from the moment it is dispatched until it ends,
except while it waits in ``get`` (lent to others, as on the other backends).
This module holds the task lifecycle and the public methods; the leases'
messages are handled in ``_handlers`` (channel thread), broadcasts, launches
and idle leases in ``_dispatcher`` (dispatcher thread): both are mixins of
:class:`SparkBackend` sharing the state above.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import logging
import os
import threading
import time
import weakref
from typing import Any

import psutil

from ..._ids import new_id
from ..._runtime import RuntimeContext
from ...exceptions import (
    BrokenExecutorError,
    ObjectLostError,
    TaskCancelledError,
    UnsupportedOnBackendError,
)
from ...options import NodeAffinity, TaskOptions
from ...refs import ObjectRef
from .. import _execution as execution
from .._execution import settle
from .._net import node_ip
from .._scheduling import ResourcePool, Scheduler
from .._shutdown import Closer
from . import _cluster as cluster
from . import _protocol as msg
from . import _session as session
from ._base import SparkBase
from ._channel import Channel
from ._dispatcher import Dispatching
from ._handlers import LeaseHandlers
from ._leases import Launcher, LeaseRecord
from ._tasks import Task, normalize_runtime_env
from ._values import Stored, dump_value, serialize_call

__all__ = ["SparkBackend"]

logger = logging.getLogger(__name__)

_PENDING = cf._base.PENDING


class SparkBackend(LeaseHandlers, Dispatching, SparkBase):
    """Runs fedexec tasks on Spark executors (see the module docstring)."""

    options = frozenset({"spark", "session", "spark_conf", "linger", "broadcast_threshold"})

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        opts = dict(config.backend_options)
        if "spark" in opts and "session" in opts:
            raise ValueError("pass spark= or session= to the 'spark' backend, not both")
        self.linger = _positive(opts.get("linger", 1.0), "linger")
        self.broadcast_threshold = int(_positive(opts.get("broadcast_threshold", 1 << 20),
                                                 "broadcast_threshold"))
        self.sc = session.acquire(config.address, config.num_cpus,
                                  opts.get("spark", opts.get("session")),
                                  opts.get("spark_conf") or {})
        self.local = session.is_local(self.sc)
        self.uid = os.urandom(6).hex()
        self.job_id = os.urandom(4).hex()
        self.app_id = str(self.sc.applicationId)
        self.node_id = cluster.node_id(
            self.app_id, "local" if self.local else cluster.driver_host(self.sc))
        self.slots = max(1, int(self.sc.defaultParallelism))
        total = {"CPU": config.cpu_count(session.detected_cpus(self.sc))}
        if self.local:
            total["memory"] = float(int(psutil.virtual_memory().available * 0.7))
        if config.num_gpus:
            total["GPU"] = float(config.num_gpus)
        total.update(config.resources)
        self._pool = ResourcePool(total)
        self._scheduler = Scheduler(self._pool)
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._wake = threading.Condition(self._lock)
        self._tasks: dict[str, Task] = {}
        self._by_ref: dict[str, Task] = {}
        self._refs: weakref.WeakValueDictionary[str, ObjectRef[Any]] = (
            weakref.WeakValueDictionary())
        self._unassigned: collections.deque[Task] = collections.deque()
        self._leases: dict[str, LeaseRecord] = {}
        self._idle_leases: list[LeaseRecord] = []
        self._broadcasts: weakref.WeakSet[Stored] = weakref.WeakSet()
        self._dropped: collections.deque[Any] = collections.deque()  # broadcasts to destroy
        self._wanted = False
        self._stopping = False
        self._closed = False
        self._broken: str | None = None
        self._launch_failures = 0
        self._starved_warned = False
        self._closer = Closer(self._drain, self._teardown, f"fedexec-spark-{self.uid}-shutdown")
        self._teardown_done = threading.Event()
        self.tasks_run = 0
        self._authkey = os.urandom(32)
        self._initializer = (
            dump_value((config.initializer, tuple(config.initargs)), "initializer, initargs")[0]
            if config.initializer is not None else None)
        name = f"fedexec-spark-{self.uid}"
        host = "127.0.0.1" if self.local else cluster.bind_host(self.sc)
        self._channel = Channel(host, self._authkey, self, name)
        advertised = "127.0.0.1" if self.local else cluster.driver_host(self.sc)
        self._address = (advertised, self._channel.address[1])
        try:
            self._launcher = Launcher(self.sc, self.uid, self._on_job_end)
        except BaseException:
            self._channel.close()
            raise
        self._dispatcher = threading.Thread(target=self._dispatch_loop, daemon=True,
                                            name=f"{name}-dispatch")
        self._dispatcher.start()

    # ================================================================== tasks
    def submit(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
               options: TaskOptions) -> list[ObjectRef[Any]]:
        name = options.name or getattr(fn, "__qualname__", None) or repr(fn)
        self._check_submit(options, name)
        fn_data, call = serialize_call(fn, args, kwargs)
        return self._create_task(name, fn_data, call.data, execution.top_level_refs(args, kwargs),
                                 list(call.contained), options, None, None)

    def _check_submit(self, options: TaskOptions, name: str) -> None:
        if self._broken is not None:
            raise BrokenExecutorError(self._broken_message())
        demand = options.demand(1.0)
        if not self._pool.feasible(demand):
            raise ValueError(
                f"task {name!r} asks for {demand} but this executor has only "
                f"{self._pool.total}; it could never run. Ask for less, or start the "
                "executor with more (num_cpus=..., resources=...)")
        strategy = options.scheduling_strategy
        if isinstance(strategy, NodeAffinity):
            if not strategy.soft:
                ids = [n["node_id"] for n in self.nodes() if n["alive"]]
                if strategy.node_id not in ids:
                    raise ValueError(f"no alive node with id {strategy.node_id!r}")
                if len(ids) > 1:
                    raise UnsupportedOnBackendError(
                        "the 'spark' backend cannot pin a task to one Spark executor (Spark "
                        "places its jobs); use NodeAffinity(..., soft=True)")
        elif strategy not in ("DEFAULT", "SPREAD"):
            raise self._unsupported("placement groups", "placement_groups")

    def _create_task(self, name: str, fn: bytes, call: bytes, deps: list[ObjectRef[Any]],
                     keep: list[Any], options: TaskOptions, parent: Task | None,
                     ref_ids: list[str] | None) -> list[ObjectRef[Any]]:
        env = normalize_runtime_env(options.runtime_env)
        ids = ref_ids or [new_id() for _ in range(options.num_returns)]
        refs: list[ObjectRef[Any]] = [ObjectRef(i, self, name) for i in ids]
        task = Task(name, fn, call, deps, keep, options, refs, options.demand(1.0), env)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._broken is not None:
                raise BrokenExecutorError(self._broken_message())
            for r in refs:
                self._refs[r.id] = r
                self._by_ref[r.id] = task
            self._tasks[task.id] = task
            if parent is not None:
                parent.children.extend(refs)
                parent.holds.extend(refs)
        execution.when_done(deps, lambda: self._deps_ready(task))
        return refs

    def _deps_ready(self, task: Task) -> None:
        error = execution.dependency_error(task.deps)
        if error is not None:
            self._finish(task, error=error)
            return
        with self._lock:
            if task.state != "waiting":
                return  # cancelled meanwhile
            task.state = "queued"
            self._scheduler.enqueue(task, task.demand)
        self._schedule()

    def _schedule(self) -> None:
        """Dispatch what fits, and hand unassigned tasks to idle leases."""
        with self._lock:
            for item, _ in self._scheduler.dispatch():
                item.state = "unassigned"
                item.big = self._big_values(item)
                self._unassigned.append(item)
            sends = self._assign_idle()
            if self._unassigned:
                self._want()
        self._send_assignments(sends)

    def _big_values(self, task: Task) -> list[Stored]:
        out = []
        for d in task.deps:
            value = d._result
            if (isinstance(value, Stored) and value.backend is self
                    and len(value.data) >= self.broadcast_threshold):
                out.append(value)
        return out

    def _fits(self, task: Task, lease: LeaseRecord) -> bool:
        return all(s.broadcast_id is not None and s.broadcast_id in lease.broadcast_ids
                   for s in task.big)

    def _assign_idle(self) -> list[tuple[LeaseRecord, Task]]:
        """Pair unassigned tasks with idle leases (under the lock)."""
        out: list[tuple[LeaseRecord, Task]] = []
        if self._closed and self._stopping:
            return out
        i = len(self._idle_leases) - 1
        while i >= 0 and self._unassigned:
            lease = self._idle_leases[i]
            task = next((t for t in self._unassigned if self._fits(t, lease)), None)
            if task is not None:
                self._unassigned.remove(task)
                del self._idle_leases[i]
                task.state = "running"
                task.lease = lease
                lease.state = "busy"
                lease.task = task
                self.tasks_run += 1
                out.append((lease, task))
            i -= 1
        return out

    def _send_assignments(self, sends: list[tuple[LeaseRecord, Task]]) -> None:
        for lease, task in sends:
            for r in task.refs:
                if r._state == _PENDING:
                    r.set_running_or_notify_cancel()
            try:
                spec = self._spec(task)
            except BaseException as exc:  # an argument that cannot be pickled here
                self._fail_running(lease, task, exc)
                continue
            lease.peer.send(msg.Assign(spec))  # a closed peer: on_disconnect retries it

    def _spec(self, task: Task) -> msg.TaskSpec:
        deps: dict[str, bytes | int] = {}
        for d in task.deps:
            value = d._result
            if isinstance(value, Stored) and value.backend is self:
                bid = value.broadcast_id  # None once the broadcast is destroyed
                deps[d.id] = bid if bid is not None and value in task.big else value.data
            else:  # a ref of another runtime
                deps[d.id] = dump_value(d.result(0), f"argument {d.id}")[0]
        return msg.TaskSpec(task.id, task.name, task.fn, task.call, deps,
                            task.options.num_returns, task.retry, task.options.max_retries,
                            task.runtime_env)

    def _fail_running(self, lease: LeaseRecord, task: Task, error: BaseException) -> None:
        with self._lock:
            if lease.task is task:
                lease.task = None
                self._park(lease)
        self._finish(task, error=error)
        self._schedule()

    def _release(self, task: Task) -> None:
        """Give back ``task``'s resources if it holds them (under the lock)."""
        if task.holds_resources():
            self._pool.release(task.demand)

    def _park(self, lease: LeaseRecord) -> None:
        """``lease`` has nothing to run (under the lock)."""
        lease.state = "idle"
        lease.task = None
        lease.idle_since = time.monotonic()
        self._idle_leases.append(lease)
        self._want()

    def _broken_message(self) -> str:
        return (f"a worker's initializer raised {self._broken}; the executor is broken and "
                "runs no more tasks")

    def _retire(self, task: Task) -> bool:
        """Take ``task`` out of every table, its resources given back (under the
        lock); False if it was retired already."""
        if task.state == "done":
            return False
        self._release(task)
        if task.state == "unassigned":
            with contextlib.suppress(ValueError):
                self._unassigned.remove(task)
        elif task.state == "queued":
            self._scheduler.remove(task)
        task.state = "done"
        self._tasks.pop(task.id, None)
        for r in task.refs:
            self._by_ref.pop(r.id, None)
        task.fn = task.call = b""
        task.deps = []
        task.keep = []
        task.big = []
        task.children = []
        return True

    def _finish(self, task: Task, values: list[Any] | None = None,
                error: BaseException | None = None) -> None:
        """Complete ``task``'s refs (outside the lock: callbacks run here)."""
        with self._lock:
            if not self._retire(task):
                return
        for i, r in enumerate(task.refs):
            if error is not None:
                settle(r, error=error)
            else:
                settle(r, values[i] if values is not None else None)
        task.holds = []
        with self._lock:
            self._idle.notify_all()

    # ================================================================== objects
    def put(self, value: Any) -> ObjectRef[Any]:
        data, contained = dump_value(value, "the value passed to put()")
        ref: ObjectRef[Any] = ObjectRef(new_id(), self, "put")
        settle(ref, Stored(data, self, list(contained)))
        self._refs[ref.id] = ref
        return ref

    def resolve_ref(self, ref_id: str) -> ObjectRef[Any]:
        ref = self._refs.get(ref_id)
        return ref if ref is not None else ObjectRef(ref_id, None)

    def _known_ref(self, ref_id: str) -> ObjectRef[Any]:
        ref = self._refs.get(ref_id)
        if ref is None:
            ref = ObjectRef(ref_id, self)
            settle(ref, error=ObjectLostError(
                f"object {ref_id} is gone from the driver: no reference to it was left"))
        return ref

    # ================================================================== cancelling
    def cancel_pending(self, ref: ObjectRef[Any]) -> bool:
        with self._lock:
            task = self._by_ref.get(ref.id)
            if task is None or task.state not in ("waiting", "queued", "unassigned"):
                return False
            self._retire(task)
        err = TaskCancelledError(f"task {task.name!r} was cancelled")
        for r in task.refs:  # cancelled, as the stdlib pools mark a queued future
            if r._state != _PENDING or not r._cancel_now():
                settle(r, error=err)  # running before a retry: fails instead
        task.holds = []
        with self._lock:
            self._idle.notify_all()
        self._schedule()
        return True

    def cancel(self, ref: ObjectRef[Any], *, force: bool, recursive: bool) -> bool:
        with self._lock:
            task = self._by_ref.get(ref.id)
            pending = task is not None and task.state in ("waiting", "queued", "unassigned")
        if pending:
            return self.cancel_pending(ref)
        with self._lock:
            if task is None or task.state != "running" or task.lease is None:
                return False
            task.cancel_requested = True
            task.force = task.force or force
            lease = task.lease
            children = list(task.children) if recursive else []
        if force:
            lease.peer.send(msg.Exit())
            self._launcher.cancel(lease)
        else:
            lease.peer.send(msg.Interrupt(task.id))
        for child in children:
            if not child.done():
                with contextlib.suppress(Exception):
                    self.cancel(child, force=force, recursive=True)
        return True

    # ================================================================== cluster
    def cluster_resources(self) -> dict[str, float]:
        return dict(self._pool.total)

    def available_resources(self) -> dict[str, float]:
        with self._lock:
            return self._pool.available()

    def nodes(self) -> list[dict[str, Any]]:
        alive = not self._closed
        if self.local:
            return [{"node_id": self.node_id, "address": str(self.sc.master), "alive": alive,
                     "resources": self.cluster_resources()}]
        hosts = cluster.executor_hosts(self.sc)  # {host: cores of its executors}
        n = sum(hosts.values()) or 1
        total = self.cluster_resources()
        return [{"node_id": cluster.node_id(self.app_id, host), "address": host, "host": host,
                 "alive": alive, "resources": {k: v * cores / n for k, v in total.items()}}
                for host, cores in hosts.items()]

    def runtime_context(self) -> RuntimeContext:
        return RuntimeContext(self.node_id, f"driver-{os.getpid()}", self.job_id,
                              backend=self.name, node_ip_address=node_ip(
                                  None if self.local else cluster.driver_host(self.sc)),
                              namespace=self.config.namespace or "default")

    def stats(self) -> dict[str, Any]:
        """Counters for tests and tuning: Spark jobs launched (one per lease), their
        job groups, and tasks handed to leases."""
        return {"spark_jobs": self._launcher.jobs_launched, "tasks_run": self.tasks_run,
                "job_groups": list(self._launcher.groups)}

    # ================================================================== shutdown
    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self._lock:
            first = not self._closed
            self._closed = True
            # An "unassigned" task holds its resources and waits for a lease being
            # started: the pool took it (as the stdlib's call queue), so it runs.
            queued = [t for t in self._tasks.values() if t.state in ("waiting", "queued")]
        if cancel_futures:
            for task in queued:
                self.cancel_pending(task.refs[0])
        self._closer.close(first, wait)

    def _drain(self) -> None:
        with self._lock:
            while self._tasks:
                self._idle.wait(0.5)

    def _teardown(self) -> None:
        if self._teardown_done.is_set():
            return
        try:
            with self._lock:
                self._stopping = True
                leases = list(self._leases.values())
                self._leases.clear()
                self._idle_leases.clear()
                for lease in leases:
                    lease.state = "ended"
                self._wake.notify_all()
            for lease in leases:
                if lease.peer is not None:
                    lease.peer.send(msg.Stop())
                else:
                    self._launcher.cancel(lease)
            self._dispatcher.join(10)
            self._launcher.close(timeout=10)
            self._channel.close()
            for stored in list(self._broadcasts):
                bcast, stored.broadcast, stored.broadcast_id = stored.broadcast, None, None
                with contextlib.suppress(Exception):
                    bcast.destroy()
            while self._dropped:
                with contextlib.suppress(Exception):
                    self._dropped.popleft().destroy()
        finally:
            self._teardown_done.set()


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"the 'spark' backend option {name} must be a number >= 0, "
                         f"got {value!r}")
    return float(value)
