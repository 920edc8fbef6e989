"""``DaskBackend``: fedexec's Backend protocol over a ``distributed.Client``.

One class serves both sides: in the driver it owns (or borrows) a client and
maybe a LocalCluster; inside a Dask worker, :meth:`DaskBackend.attached` wraps
the worker's own client, so code running in a task submits, puts and gets
through the same cluster. See the package docstring for the data flow.

State (under ``_lock``):
    _records   {main dask key: _TaskRecord}   tasks whose refs are not all done
    _by_ref    {ref id: _TaskRecord}
    _refs      {ref id: DaskRef}  (weak)     rebinds refs unpickled in this process
    _broken    why the executor is broken (a failed initializer), or None
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
import distributed

from ..._ids import new_id
from ..._runtime import RuntimeContext, current_task
from ...actors import ActorHandle
from ...exceptions import (
    BrokenExecutorError,
    ClusterUnreachableError,
    ObjectLostError,
    TaskCancelledError,
    UnsupportedOnBackendError,
    WorkerCrashedError,
)
from ...options import ActorOptions, MethodOptions, NodeAffinity, TaskOptions
from ...refs import ObjectRef
from .. import _execution as execution
from .._net import host_of, node_ip
from .._shutdown import Closer
from ..base import Backend
from . import _cancel as cancelling
from . import _drain as draining
from . import _worker as worker_side
from ._cluster import OPTIONS, ClusterView, start_local_cluster
from ._common import (
    Blob,
    DaskRef,
    DaskValue,
    DepSlot,
    Failed,
    Job,
    TaskSpec,
    cancel_ref,
    dask_error,
    dask_key,
    node_id_of,
    serialize_call,
    settle,
)
from ._outbox import Outbox

__all__ = ["DaskBackend"]


class _TaskRecord:
    __slots__ = ("attempt", "cancelled", "cancelling", "deps", "futures", "handling",
                 "inline", "keep", "keys", "name", "refs", "retries_left", "started")

    def __init__(self, name: str, keys: list[str], futures: list[distributed.Future[Any]],
                 refs: list[DaskRef], deps: list[DaskRef], keep: list[Any], retries: int):
        self.name = name
        self.keys = keys
        self.futures = futures
        self.refs = refs
        self.deps = deps
        self.keep = keep  # refs and handles inside the arguments: borrowed until done
        self.retries_left = retries
        self.started: str | None = None  # the worker address, once running
        self.cancelled = False
        self.cancelling = False
        self.inline: list[Blob] | None = None  # small results sent with the "done" event
        self.attempt = 0
        self.handling = False

    @property
    def watched(self) -> list[distributed.Future[Any]]:
        """The futures whose completion completes the refs (one per ref)."""
        return self.futures if len(self.futures) == 1 else self.futures[1:]


class DaskBackend(Backend):
    """Runs fedexec tasks and actors on a Dask cluster (see the package docstring)."""

    name = "dask"
    capabilities = frozenset({
        "actors", "async_actors", "named_actors", "actor_restarts", "cancel_running",
        "worker_processes", "multi_node", "lineage_reconstruction", "spilling",
    })
    options = OPTIONS

    def __init__(self, config: Any, *,
                 _attach: tuple[distributed.Client, Job, distributed.Worker] | None = None):
        super().__init__(config)
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._records: dict[str, _TaskRecord] = {}
        self._by_ref: dict[str, _TaskRecord] = {}
        self._refs: weakref.WeakValueDictionary[str, DaskRef] = weakref.WeakValueDictionary()
        self._broken: str | None = None
        self._closed = False
        self._teardown_done = threading.Event()
        self._force_cancels: list[threading.Thread] = []  # see _cancel.restart_if_stuck
        self._initializer_plugin: str | None = None
        self.cluster: distributed.LocalCluster | None = None
        self.owns_client = False
        self.uid = os.urandom(6).hex()
        self._closer = Closer(self._drain, self._teardown, f"fedexec-dask-shutdown-{self.uid}")
        self.view: ClusterView | None = None
        topic = f"fedexec-{self.uid}"  # start events of the tasks this runtime submits
        if _attach is not None:  # inside a task: the submitting job's ids, our own topic
            self.client, job, worker = _attach
            self.job = Job(job.job_id, job.namespace, topic)
            self.in_worker = True
            self.embedded = False
            self._worker_id = str(worker.id)
            self._node_id = node_id_of(worker.scheduler.address, worker.name)
            self._node_ip = node_ip(host_of(str(worker.address)))
        else:
            self.in_worker = False
            self._connect(config)
            self.job = Job(os.urandom(4).hex(), config.namespace or "default", topic)
            self._worker_id = f"driver-{os.getpid()}"
            self._node_id = ""
            scheduler = host_of(_scheduler_address(self.client))
            self._node_ip = node_ip(scheduler if scheduler and scheduler.startswith("127.")
                                    else "0.0.0.0")
        from ._actors import ActorManager

        self.outbox = Outbox(self.client, f"fedexec-dask-callbacks-{self.uid}")
        self.actors = ActorManager(self)
        try:
            self.client.subscribe_topic(self.job.topic, self._on_event)
            if not self.in_worker:
                self.view = ClusterView(self.client)
                if config.initializer is not None:
                    self._register_initializer(config)
        except BaseException:
            self._teardown()
            raise

    @classmethod
    def attached(cls, client: distributed.Client, job: Job, worker: distributed.Worker
                 ) -> DaskBackend:
        """The runtime of tasks of ``job`` inside Dask worker ``worker`` (over its
        client)."""
        from ...config import RuntimeConfig

        return cls(RuntimeConfig(namespace=job.namespace), _attach=(client, job, worker))

    # ------------------------------------------------------------------ setup
    def _connect(self, config: Any) -> None:
        opts = dict(config.backend_options)
        client = opts.get("client")
        address = config.address
        if client is not None and address is not None:
            raise ValueError("pass either address= or client= to the 'dask' backend, not both")
        joined = client is not None or address is not None
        if joined:
            given = [n for n in ("num_cpus", "num_gpus", "max_workers", "object_store_memory")
                     if getattr(config, n) is not None] + (["resources"] if config.resources
                                                           else [])
            if given or opts.get("n_workers") or opts.get("threads_per_worker"):
                raise ValueError(
                    f"{given or ['n_workers/threads_per_worker']} size a cluster the executor "
                    "starts; with address= or client= the Dask cluster's own workers are used")
        if client is not None:
            if not isinstance(client, distributed.Client):
                raise TypeError(f"client= takes a distributed.Client, got {client!r}")
            self.client = client
            self.embedded = False
            return
        if address is not None:
            if not isinstance(address, str):
                raise TypeError(f"address must be a Dask scheduler address, got {address!r}")
            if address == "auto":
                raise ValueError(
                    "address='auto' joins a cluster started by 'fedexec start' (the native "
                    "backend); for the 'dask' backend give the Dask scheduler's address, "
                    "e.g. 'tcp://host:8786'")
            self.client = distributed.Client(address, set_as_default=False)
            self.owns_client = True
            self.embedded = False
            return
        self.cluster = start_local_cluster(config)
        try:
            self.client = distributed.Client(self.cluster, set_as_default=False)
        except BaseException:
            self.cluster.close()
            raise
        self.owns_client = True
        self.embedded = True

    def _register_initializer(self, config: Any) -> None:
        payload = cloudpickle.dumps((config.initializer, tuple(config.initargs)))
        name = f"fedexec-initializer-{self.job.job_id}"
        self.client.register_plugin(worker_side.Initializer(self.job.job_id, payload), name=name)
        self._initializer_plugin = name

    # ------------------------------------------------------------------ tasks
    def _check_open(self) -> None:
        if self._broken is not None:
            raise BrokenExecutorError(
                f"a worker's initializer raised {self._broken}; the executor is broken")
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def placement(self, options: Any, demand: dict[str, float], what: str) -> dict[str, Any]:
        """``client.submit`` arguments for a demand and a scheduling strategy."""
        if options.runtime_env:
            raise UnsupportedOnBackendError(
                "runtime_env is not available on the 'dask' backend: Dask runs tasks on "
                "threads of shared worker processes, where environment variables and the "
                "working directory cannot be set per task. Use the 'native' backend.")
        strategy = options.scheduling_strategy
        workers = None
        loose = False
        if isinstance(strategy, NodeAffinity):
            address = self._view().node_address(strategy.node_id)
            if address is not None:
                workers, loose = [address], strategy.soft
            elif not strategy.soft:
                raise ValueError(f"no alive node with id {strategy.node_id!r}")
        elif strategy not in ("DEFAULT", "SPREAD"):
            raise self._unsupported("placement groups", "placement_groups")
        resources = self._view().restrictions(demand, what, fixed=self.embedded)
        return {"resources": resources or None, "workers": workers,
                "allow_other_workers": loose}

    def _view(self) -> ClusterView:
        if self.view is None:
            self.view = ClusterView(self.client)
        return self.view

    def split_deps(self, args: tuple[Any, ...], kwargs: dict[str, Any]
                   ) -> tuple[list[DaskRef], tuple[Any, ...], dict[str, Any]]:
        """Top-level refs of this runtime become Dask dependencies (``DepSlot`` s);
        a ref of another runtime is passed by value (waiting for it here)."""
        deps: list[DaskRef] = []

        def slot(v: Any) -> Any:
            if isinstance(v, DaskRef) and v._backend is self and self.ensure_key(v):
                fut = v._dask  # set: ensure_key
                if fut is not None and fut.status == "cancelled" and not v.cancelled():
                    self._restore(v)
                deps.append(v)
                return DepSlot(len(deps) - 1)
            if isinstance(v, ObjectRef):
                return v.result()
            return v

        if not any(isinstance(a, ObjectRef) for a in args) and not any(
                isinstance(v, ObjectRef) for v in kwargs.values()):
            return deps, args, kwargs
        new_args = tuple(slot(a) for a in args)
        new_kwargs = {k: slot(v) for k, v in kwargs.items()}
        return deps, new_args, new_kwargs

    def ensure_key(self, ref: DaskRef) -> bool:
        """Make sure ``ref``'s object has a Dask key (an actor call's result is
        exported on first need); False if it has none here (not bound to Dask)."""
        if ref._dask is None and ref._export is not None:
            with self._lock:
                if ref._dask is None:
                    ref._dask = ref._export(ref)
        return ref._dask is not None

    def bind_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]
                  ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """An actor call's arguments: top-level refs of this runtime stay refs (the
        actor waits for them), refs of another runtime are passed by value."""

        def bind(v: Any) -> Any:
            if isinstance(v, DaskRef) and v._backend is self and self.ensure_key(v):
                return v
            if isinstance(v, ObjectRef):
                return v.result()
            return v

        if not any(isinstance(a, ObjectRef) for a in args) and not any(
                isinstance(v, ObjectRef) for v in kwargs.values()):
            return args, kwargs
        return tuple(bind(a) for a in args), {k: bind(v) for k, v in kwargs.items()}

    def submit(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
               options: TaskOptions) -> list[ObjectRef[Any]]:
        self._check_open()
        name = options.name or getattr(fn, "__qualname__", None) or repr(fn)
        placement = self.placement(options, options.demand(1.0), f"task {name!r}")
        deps, args, kwargs = self.split_deps(args, kwargs)
        fn_blob, call_blob = serialize_call(fn, args, kwargs)
        n = options.num_returns
        task_id = new_id()
        ref_ids = [task_id] if n == 1 else [new_id() for _ in range(n)]
        spec = TaskSpec(fn_blob.data, call_blob.data, name, task_id, n,
                        execution.dump_retry(options.retry_exceptions), options.max_retries,
                        self.job)
        main_key = dask_key(name, task_id)
        refs = [DaskRef(rid, self, name, main_key if n == 1 else dask_key(name, rid))
                for rid in ref_ids]
        dead = next((d for d in deps if d.done() and d.cancelled()), None)
        if dead is not None:  # a cancelled argument: the task can never run
            for r in refs:
                settle(r, error=TaskCancelledError(f"an argument of task {name!r} was "
                                                   "cancelled"))
            return list(refs)
        failed = functools.partial(self._not_sent, refs, name)
        main = self.outbox.submit(worker_side.run_task, [spec, *[d._dask for d in deps]],
                                  main_key, placement, failed=failed)
        futures = [main]
        keys = [main_key]
        if n > 1:
            futures += [self.outbox.submit(worker_side.pick, [main, i], r.key, failed=failed)
                        for i, r in enumerate(refs)]
            keys += [r.key for r in refs]
        for r, f in zip(refs, futures if n == 1 else futures[1:]):
            r._dask = f
        record = _TaskRecord(name, keys, futures, refs, deps,
                             call_blob.contained + fn_blob.contained, options.max_retries)
        self._track(record)
        return list(refs)

    def _track(self, record: _TaskRecord) -> None:
        with self._lock:
            self._records[record.keys[0]] = record
            for r in record.refs:
                self._by_ref[r.id] = record
                self._refs[r.id] = r
        parent = current_task()
        if parent is not None and isinstance(parent.extra, worker_side.Running):
            parent.extra.children.append(record.keys[0])
        self._watch(record)
        if record.refs[0].done():  # failed to send already (_not_sent)
            self._maybe_forget(record)

    def _watch(self, record: _TaskRecord) -> None:
        attempt = record.attempt
        for i, f in enumerate(record.watched):
            self.outbox.watch(f, functools.partial(self._future_done, record, i, attempt))

    def _future_done(self, record: _TaskRecord, index: int, attempt: int,
                     fut: distributed.Future[Any]) -> None:
        """A Dask future finished (on our callback thread): complete its ref."""
        if attempt != record.attempt:
            return
        ref = record.refs[index]
        if not ref.done():
            try:
                status = fut.status
                if status == "finished":
                    if fut.type is Failed:
                        settle(ref, error=fut.result().error)
                    else:
                        inline = record.inline
                        blob = inline[index] if inline and len(inline) > index else None
                        settle(ref, DaskValue(self, fut, blob))
                elif status == "cancelled":
                    if record.cancelling or record.cancelled:
                        # Our own cancel, reported back by Dask (a running ref cannot
                        # be cancelled: it fails with TaskCancelledError instead).
                        if not cancel_ref(ref):
                            settle(ref, error=TaskCancelledError(
                                f"task {record.name!r} was cancelled"))
                    elif any(not d.cancelled() for d in record.deps
                             if d._dask is not None and d._dask.status == "cancelled"):
                        settle(ref, error=ObjectLostError(
                            f"an argument of task {record.name!r} was lost with the worker "
                            "that held it"))
                    else:  # a dependency was cancelled
                        settle(ref, error=TaskCancelledError(
                            f"task {record.name!r} was cancelled"))
                elif status not in ("error", "lost"):
                    # Reset to pending: Dask retries it with a dependency it lost.
                    self.outbox.watch(fut,
                        functools.partial(self._future_done, record, index, attempt))
                    return
                else:
                    exc = fut.exception()
                    if exc is None:  # retried meanwhile (see above)
                        self.outbox.watch(fut,
                            functools.partial(self._future_done, record, index, attempt))
                        return
                    if isinstance(exc, distributed.KilledWorker):
                        self._on_killed(record, exc)
                        return
                    error = dask_error(exc, record.name)
                    if isinstance(error, BrokenExecutorError):
                        self._broken = str(error)
                    settle(ref, error=error)
            except Exception as exc:  # the cluster went away under us
                settle(ref, error=ObjectLostError(
                    f"the result of task {record.name!r} could not be read: {exc}"))
        self._maybe_forget(record)

    def _not_sent(self, refs: list[DaskRef], name: str, exc: BaseException) -> None:
        """A task could not be sent to the scheduler (the client closed); it may run
        before ``_track`` has (which then forgets the record itself)."""
        for r in refs:
            settle(r, error=ClusterUnreachableError(
                f"task {name!r} could not be sent to the Dask scheduler: {exc!r}"))
        record = self._by_ref.get(refs[0].id)
        if record is not None:
            self._maybe_forget(record)

    def cancel_futures(self, futures: list[distributed.Future[Any]]) -> None:
        """Cancel Dask futures of this runtime (those not sent yet are never sent)."""
        self.outbox.withdraw([f.key] for f in futures)
        with contextlib.suppress(Exception):  # the cluster is going away
            self.client.cancel(futures)

    def _maybe_forget(self, record: _TaskRecord) -> None:
        if not all(r.done() for r in record.refs):
            return
        with self._lock:
            if self._records.pop(record.keys[0], None) is None:
                return
            for r in record.refs:
                self._by_ref.pop(r.id, None)
            record.keep = []
            record.deps = []
            self._idle.notify_all()

    def _on_killed(self, record: _TaskRecord, exc: distributed.KilledWorker) -> None:
        """A worker died under this task or under one of its dependencies."""
        with self._lock:
            if record.handling:
                return
            record.handling = True
        if record.cancelled:
            self._fail(record, TaskCancelledError(f"task {record.name!r} was cancelled"))
        elif exc.task in record.keys:
            if record.retries_left == 0:
                self._fail(record, WorkerCrashedError(
                    f"the worker process running task {record.name!r} died (last on "
                    f"{getattr(exc, 'last_worker', None) and exc.last_worker.address}) and "
                    "its max_retries are exhausted; raise max_retries if the crash was "
                    "transient"))
            else:
                if record.retries_left > 0:
                    record.retries_left -= 1
                self._retry(record)
        else:
            self._after_deps(record)

    def _after_deps(self, record: _TaskRecord) -> None:
        """A dependency's worker died: once the dependencies settle (they are being
        retried), run again, or fail with the dependency's error."""

        def settled() -> None:
            error = execution.dependency_error(record.deps)
            if error is not None:
                self._fail(record, error)
            else:
                self._retry(record)

        execution.when_done(record.deps, settled)

    def _retry(self, record: _TaskRecord) -> None:
        with self._lock:
            record.attempt += 1
            record.started = None
            record.handling = False
        try:  # only what is still failed: Dask may have revived dependents itself
            failed = [f for f in record.futures if f.status in ("error", "lost")]
            if failed:
                self.client.retry(failed)
        except Exception as exc:
            self._fail(record, WorkerCrashedError(
                f"task {record.name!r} lost its worker and could not be retried: {exc}"))
            return
        self._watch(record)

    def _fail(self, record: _TaskRecord, error: BaseException) -> None:
        for r in record.refs:
            settle(r, error=error)
        self._maybe_forget(record)

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """An event on this runtime's topic (on the client's event loop: no blocking)."""
        msg = event[1]
        kind = msg.get("e")
        if kind == "start":
            record = self._records.get(msg["k"])
            if record is not None and record.started is None:
                record.started = msg["a"]
                for r in record.refs:
                    execution.mark_running(r)
        elif kind == "done":  # a small result, ahead of Dask's "finished"
            record = self._records.get(msg["k"])
            if record is not None:
                record.inline = [Blob(data) for data in msg["v"]]
        else:
            self.actors.on_event(msg)

    # ---------------------------------------------------------------- objects
    def put(self, value: Any) -> ObjectRef[Any]:
        self._check_open()
        blob, contained = Blob.of(value, "the value passed to put()")
        ref_id = new_id()
        key = f"put-{ref_id}"
        fut = self.client.scatter({key: blob}, hash=False)[key]
        ref = DaskRef(ref_id, self, "put", key)
        ref._dask = fut
        ref._keep = contained
        self._refs[ref_id] = ref
        settle(ref, DaskValue(self, fut, blob))
        return ref

    def _restore(self, ref: DaskRef) -> None:
        """A finished object Dask lost (its worker died): a value put here, which we
        still hold, is stored again under its key; a task's result is rebuilt by
        Dask from its lineage as long as the key is wanted, so only puts get here."""
        value = ref._result if ref._state == cf._base.FINISHED else None
        if not isinstance(value, DaskValue) or value.blob is None:
            return
        blob = value.blob
        ref._dask = value.future = self.client.scatter({ref.key: blob}, hash=False)[ref.key]

    def resolve_ref(self, ref_id: str) -> ObjectRef[Any]:
        ref = self._refs.get(ref_id)
        return ref if ref is not None else ObjectRef(ref_id, None)

    def bind_ref(self, ref_id: str, key: str) -> ObjectRef[Any]:
        """The ref for Dask key ``key`` in this process (a ref was unpickled here)."""
        ref = self._refs.get(ref_id)
        if ref is not None:
            return ref
        with self._lock:
            ref = self._refs.get(ref_id)
            if ref is not None:
                return ref
            ref = DaskRef(ref_id, self, "", key)
            if self._teardown_done.is_set():
                return ObjectRef(ref_id, None)
            fut: distributed.Future[Any] = distributed.Future(key, self.client)
            ref._dask = fut
            self._refs[ref_id] = ref
        # A Future made from a key does not tell the scheduler that this client
        # wants the key (Dask does it in bulk, privately): say so, so the object
        # stays alive for us and we hear when it is ready.
        self.client._send_to_scheduler({"op": "client-desires-keys", "keys": [key]})
        self.outbox.watch(fut, functools.partial(self._bound_done, ref))
        return ref

    def _bound_done(self, ref: DaskRef, fut: distributed.Future[Any]) -> None:
        try:
            status = fut.status
            if status == "finished":
                if fut.type is Failed:
                    settle(ref, error=fut.result().error)
                else:
                    settle(ref, DaskValue(self, fut))
            elif status == "cancelled":
                settle(ref, error=TaskCancelledError(f"{ref!r} was cancelled"))
            else:
                exc = fut.exception()
                if isinstance(exc, distributed.KilledWorker):
                    exc = WorkerCrashedError(f"the worker computing {ref!r} died: {exc}")
                settle(ref, error=dask_error(exc, ref._task_name or ref.key))
        except Exception as exc:
            settle(ref, error=ObjectLostError(f"{ref!r} could not be read: {exc}"))

    @contextlib.contextmanager
    def blocked(self, refs: Any = (), timeout: float | None = None,
                done: Callable[[], bool] | None = None) -> Iterator[None]:
        """Inside a task: lend its resources and thread slot while it waits."""
        ctx = current_task()
        st = ctx.extra if ctx is not None and ctx.backend is self else None
        if not isinstance(st, worker_side.Running) or st.ident != threading.get_ident():
            yield
            return
        st.lend()
        try:
            yield
        finally:
            st.unlend()

    # ------------------------------------------------------------- cancelling
    def cancel_pending(self, ref: ObjectRef[Any]) -> bool:
        record = self._by_ref.get(ref.id)
        if record is None:
            return self.actors.cancel_call(ref, running_too=False)
        return record in self._cancel_queued([record])

    def _cancel_queued(self, records: list[_TaskRecord]) -> list[_TaskRecord]:
        """Cancel the tasks of ``records`` that have not started; those cancelled."""
        return cancelling.cancel_queued(self, records)

    def cancel(self, ref: ObjectRef[Any], *, force: bool, recursive: bool) -> bool:
        record = self._by_ref.get(ref.id)
        if record is None:
            return self.actors.cancel_call(ref, running_too=True, force=force)
        if self.cancel_pending(ref):
            return True
        address = record.started
        if address is None or ref.done():
            return False
        record.cancelled = True
        try:
            delivered = self.client.run(worker_side.interrupt, record.keys[0], recursive,
                                        workers=[address]).get(address, False)
        except Exception:
            delivered = False
        if force:
            cancelling.restart_if_stuck(self, record, address)
            return True
        return bool(delivered)

    # ----------------------------------------------------------------- actors
    def create_actor(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any],
                     options: ActorOptions) -> ActorHandle[Any]:
        if self._closed:
            raise RuntimeError("cannot create actors after shutdown")
        return self.actors.create(cls, args, kwargs, options)

    def submit_actor_call(self, handle: ActorHandle[Any], method: str, args: tuple[Any, ...],
                          kwargs: dict[str, Any], options: MethodOptions
                          ) -> list[ObjectRef[Any]]:
        return self.actors.call(handle, method, args, kwargs, options)

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle[Any]:
        return self.actors.get_named(name, namespace or self.job.namespace)

    def kill_actor(self, handle: ActorHandle[Any], *, no_restart: bool) -> None:
        self.actors.kill(handle, no_restart=no_restart)

    def resolve_actor(self, actor_id: str, state: dict[str, Any]) -> ActorHandle[Any]:
        return ActorHandle(actor_id, self, state["class_name"], state["methods"],
                           state.get("name"), state.get("namespace"))

    # ---------------------------------------------------------------- cluster
    def cluster_resources(self) -> dict[str, float]:
        view = self._view()
        view.refresh()
        return view.total()

    def available_resources(self) -> dict[str, float]:
        view = self._view()
        view.refresh()
        now = self.client.run(worker_side.resources_now)
        out: dict[str, float] = {}
        for address, w in view.workers.items():
            report = now.get(address)
            if report is None:
                continue
            res = view.worker_resources(w)
            free = dict(report["available"])
            if "CPU" not in free:
                free["CPU"] = float(report["free_threads"])
            for k in res:
                out[k] = out.get(k, 0.0) + max(0.0, float(free.get(k, res[k])))
        return out

    def nodes(self) -> list[dict[str, Any]]:
        view = self._view()
        view.refresh()
        return view.nodes()

    def runtime_for(self, task_id: str | None, actor_id: str | None,
                    namespace: str | None = None) -> RuntimeContext:
        """The runtime context of a task or actor call running in this worker
        (``namespace``: the actor's, else the job's)."""
        return RuntimeContext(self._node_id, self._worker_id, self.job.job_id, task_id,
                              actor_id, self.name, self._node_ip, (),
                              namespace or self.job.namespace)

    def runtime_context(self) -> RuntimeContext:
        if not self._node_id:
            nodes = self.nodes()
            self._node_id = nodes[0]["node_id"] if nodes else node_id_of(
                _scheduler_address(self.client), "driver")
        return RuntimeContext(self._node_id, self._worker_id, self.job.job_id,
                              backend=self.name, node_ip_address=self._node_ip,
                              namespace=self.job.namespace)

    # --------------------------------------------------------------- shutdown
    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self._lock:
            first = not self._closed
            self._closed = True
            records = list(self._records.values())
        if cancel_futures:  # only what no worker has taken, as the stdlib pools
            cancelling.cancel_queued(self, records, leave_taken=True)
        self._closer.close(first, wait)

    def _drain(self) -> None:
        draining.drain(self)

    def _teardown(self) -> None:
        """Fetch the values still referenced here, then stop (what this executor owns)."""
        if self._teardown_done.is_set():
            return
        try:
            self.actors.shutdown()
            self._fetch_live_values()
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(self.job.topic)
            if self._initializer_plugin is not None and not self.embedded:
                with contextlib.suppress(Exception):
                    self.client.unregister_worker_plugin(self._initializer_plugin)
        finally:
            self._teardown_done.set()
            self.outbox.close()
            if self.owns_client:
                with contextlib.suppress(Exception):
                    self.client.close()
            if self.cluster is not None:
                with contextlib.suppress(Exception):
                    self.cluster.close()

    def _fetch_live_values(self) -> None:
        """Bring here the values of finished refs still referenced, so ``result()``
        works after shutdown (as with the stdlib pools); in batches of at most
        64 MB, as a worker short of memory must read spilled objects back first."""
        values: list[tuple[DaskValue, distributed.Future[Any]]] = []  # (value, its future)
        for ref in list(self._refs.values()):
            if ref._state == cf._base.FINISHED and ref._exception is None:
                v = ref._result
                if isinstance(v, DaskValue) and v.blob is None and v.future is not None:
                    values.append((v, v.future))
        if not values:
            return
        try:
            sizes = self.client.nbytes([f.key for _, f in values], summary=False)
        except Exception:
            sizes = {}
        batch: list[tuple[DaskValue, distributed.Future[Any]]] = []
        budget = 0
        for item in [*values, None]:
            size = sizes.get(item[1].key, 0) if item is not None else 0
            if batch and (item is None or budget + size > 64 << 20 or len(batch) >= 1024):
                try:
                    blobs = self.client.gather({i: f for i, (_, f) in enumerate(batch)},
                                               errors="skip")
                except Exception:
                    return
                for i, blob in blobs.items():
                    batch[i][0].blob = blob
                batch, budget = [], 0
            if item is not None:
                batch.append(item)
                budget += size


def _scheduler_address(client: distributed.Client) -> str:
    """The address of ``client``'s scheduler (Dask types ``client.scheduler`` as
    optional: it is None only before the client has connected)."""
    scheduler = client.scheduler
    assert scheduler is not None, "the Dask client has not connected"
    return str(scheduler.address)
