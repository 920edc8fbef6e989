"""The ``local`` backend: the whole contract in one process, on threads.

For debugging (breakpoints work in tasks) and for tests of pure logic. Values are
pickled on the way in and out exactly as a process-based backend would, so a
program that works here does not break on ``native`` for a pickling reason.

Data flow::

    submit ─▶ _Task(waiting) ──all ref args done──▶ Scheduler(queued)
                                                       │ resources fit
                                                       ▼
               ObjectRef ◀── set_result/_Stored ◀── ThreadPool(running)

State (all under ``_lock``):
    _tasks       {ref id: _Task}        tasks not finished yet (one entry per return ref)
    _scheduler   FIFO per shape over the node's ResourcePool
    _refs        {ref id: ObjectRef}    weak: rebinds refs unpickled in this process
    _actors      {actor id: LocalActor} and _named {(namespace, name): actor id}
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import psutil

from ... import serialization
from ..._ids import new_id
from ..._runtime import RuntimeContext, TaskContext, current_task, resolving, running_task
from ...actors import ActorHandle
from ...exceptions import (
    BrokenExecutorError,
    SerializationError,
    TaskCancelledError,
    UnsupportedOnBackendError,
)
from ...options import ActorOptions, MethodOptions, TaskOptions
from ...refs import LazyValue, ObjectRef
from .. import _execution as execution
from .._scheduling import ResourcePool, Scheduler
from ..base import Backend
from ._actors import LocalActor
from ._threads import ThreadPool

__all__ = ["LocalBackend"]


class _Stored(LazyValue):
    """A value held pickled; every ``result()`` unpickles a fresh copy (large buffers
    are shared, read-only, as zero-copy views would be)."""

    __slots__ = ("backend", "blob")

    def __init__(self, blob: serialization.Serialized, backend: LocalBackend):
        self.blob = blob
        self.backend = backend

    def load(self) -> Any:
        with resolving(self.backend):
            return serialization.loads(self.blob.data, self.blob.buffers)


def store(value: Any, backend: LocalBackend, what: str) -> _Stored:
    """Pickle ``value`` with its large buffers copied (a snapshot, as a store makes)."""
    blob = serialization.dumps(value, what=what)
    blob.buffers = [bytes(b) for b in blob.buffers]
    return _Stored(blob, backend)


class _Task:
    __slots__ = (
        "call_blob", "cancel_requested", "children", "demand", "deps", "fn_blob", "id",
        "interruptible", "lend_depth", "name", "options", "refs", "retries_left", "state",
        "thread_ident",
    )

    def __init__(self, name: str, fn_blob: Any, call_blob: Any, deps: list[ObjectRef[Any]],
                 options: TaskOptions, refs: list[ObjectRef[Any]], demand: dict[str, float]):
        self.id = refs[0].id
        self.name = name
        self.fn_blob = fn_blob
        self.call_blob = call_blob
        self.deps = deps
        self.options = options
        self.refs = refs
        self.demand = demand
        self.retries_left = options.max_retries
        self.state = "waiting"  # waiting -> queued -> running -> done
        self.children: list[ObjectRef[Any]] = []
        self.cancel_requested = False
        self.interruptible = False
        self.thread_ident = 0
        self.lend_depth = 0


class LocalBackend(Backend):
    """Runs tasks on threads of this process; see the module docstring."""

    name = "local"
    capabilities = frozenset(
        {"actors", "async_actors", "named_actors", "actor_restarts", "cancel_running"}
    )

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        if config.address not in (None, "local"):
            raise ValueError(
                f"the 'local' backend runs in this process and takes no address "
                f"(got {config.address!r})"
            )
        self.node_id = new_id()
        self.job_id = os.urandom(4).hex()
        self.driver_id = f"driver-{os.getpid()}"
        total = {
            "CPU": config.cpu_count(os.cpu_count() or 1),
            "memory": float(int(psutil.virtual_memory().available * 0.7)),
        }
        if config.num_gpus:
            total["GPU"] = float(config.num_gpus)
        total.update(config.resources)
        self._pool = ResourcePool(total)
        self._scheduler = Scheduler(self._pool)
        self._lock = threading.RLock()
        self._tasks: dict[str, _Task] = {}
        self._refs: weakref.WeakValueDictionary[str, ObjectRef[Any]] = (
            weakref.WeakValueDictionary()
        )
        self._threads = ThreadPool(f"fedexec-local-{self.node_id[-6:]}")
        self._thread_state = threading.local()
        self._broken: BaseException | None = None
        self._closed = False
        self._idle = threading.Condition(self._lock)
        self._actors: dict[str, LocalActor] = {}
        self._named: dict[tuple[str, str], str] = {}

    # ------------------------------------------------------------------ tasks
    def _new_refs(self, n: int, name: str) -> list[ObjectRef[Any]]:
        refs: list[ObjectRef[Any]] = [ObjectRef(new_id(), self, name) for _ in range(n)]
        for r in refs:
            self._refs[r.id] = r
        return refs

    def _check_feasible(self, demand: dict[str, float], what: str) -> None:
        if not self._pool.feasible(demand):
            raise ValueError(
                f"{what} asks for {demand} but this local runtime has only "
                f"{self._pool.total}; it could never run. Ask for less, or start the "
                f"executor with more (num_cpus=..., resources=...)"
            )

    def _check_strategy(self, options: Any) -> None:
        self._check_single_node_strategy(options, self.node_id)
        if options.runtime_env:
            raise UnsupportedOnBackendError(
                "runtime_env needs separate worker processes; the 'local' backend runs "
                "tasks on threads of one process. Use the 'native' backend."
            )

    def submit(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
               options: TaskOptions) -> list[ObjectRef[Any]]:
        if self._broken is not None:
            raise BrokenExecutorError(str(self._broken))
        name = options.name or getattr(fn, "__qualname__", None) or repr(fn)
        demand = options.demand(1.0)
        self._check_feasible(demand, f"task {name!r}")
        self._check_strategy(options)
        fn_blob, call_blob = execution.serialize_call(fn, args, kwargs)
        refs = self._new_refs(options.num_returns, name)
        task = _Task(name, fn_blob, call_blob, execution.top_level_refs(args, kwargs),
                     options, refs, demand)
        parent = current_task()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            for r in refs:
                self._tasks[r.id] = task
            if parent is not None and isinstance(parent.extra, _Task):
                parent.extra.children.extend(refs)
        execution.when_done(task.deps, lambda: self._deps_ready(task))
        return refs

    def _deps_ready(self, task: _Task) -> None:
        error = execution.dependency_error(task.deps)
        if error is not None:
            self._finish(task, error=error)
            return
        with self._lock:
            if task.state != "waiting":
                return  # cancelled meanwhile
            task.state = "queued"
            self._scheduler.enqueue(task, task.demand)
        self._dispatch()

    def _dispatch(self) -> None:
        with self._lock:
            started = self._scheduler.dispatch()
            for item, _ in started:
                if isinstance(item, _Task):
                    item.state = "running"
        for item, _ in started:
            if isinstance(item, _Task):
                self._threads.run(functools.partial(self._execute, item))
            else:
                item.start()

    def _ensure_initialized(self) -> None:
        state = self._thread_state
        if getattr(state, "initialized", False) or self.config.initializer is None:
            return
        state.initialized = True
        try:
            self.config.initializer(*self.config.initargs)
        except BaseException as exc:
            self._break(exc)
            raise BrokenExecutorError(
                f"a worker's initializer raised {type(exc).__name__}: {exc}; the executor "
                "is broken and runs no more tasks"
            ) from exc

    def _runtime_for(self, task_id: str | None, actor_id: str | None,
                     namespace: str | None = None) -> RuntimeContext:
        return RuntimeContext(
            node_id=self.node_id,
            worker_id=f"thread-{threading.get_ident()}",
            job_id=self.job_id,
            task_id=task_id,
            actor_id=actor_id,
            backend=self.name,
            namespace=namespace or self.namespace_for(None),
        )

    def _execute(self, task: _Task) -> None:
        for r in task.refs:
            r.set_running_or_notify_cancel()
        task.thread_ident = threading.get_ident()
        ctx = TaskContext(self, self._runtime_for(task.id, None), task)
        error: BaseException | None = None
        values: list[Any] = []
        with running_task(ctx):
            while True:
                try:
                    self._ensure_initialized()
                    values = self._call(task)
                    error = None
                except BrokenExecutorError as exc:
                    error = exc
                except KeyboardInterrupt as exc:
                    task.interruptible = False
                    if task.cancel_requested:
                        error = TaskCancelledError(f"task {task.name!r} was cancelled")
                    else:
                        error = execution.wrap_exception(exc, task.name)
                except SerializationError as exc:
                    error = exc
                except BaseException as exc:
                    if execution.should_retry(exc, task.options, task.retries_left):
                        task.retries_left -= 1
                        continue
                    error = execution.wrap_exception(exc, task.name, skip=2)
                break
        if task.cancel_requested and error is None:
            error = TaskCancelledError(f"task {task.name!r} was cancelled")
        self._finish(task, values=values, error=error)

    def _call(self, task: _Task) -> list[Any]:
        with resolving(self):
            fn = serialization.loads(task.fn_blob.data, task.fn_blob.buffers)
            args, kwargs = serialization.loads(task.call_blob.data, task.call_blob.buffers)
        args, kwargs = execution.resolve_args(args, kwargs)
        with execution.Interruptible(task, self._lock, task.thread_ident):
            value = fn(*args, **kwargs)
        del args, kwargs
        values = execution.split_returns(value, task.options.num_returns, task.name)
        return [store(v, self, f"return value of {task.name!r}") for v in values]

    def _finish(self, task: _Task, values: Sequence[Any] = (), error: BaseException | None = None
                ) -> None:
        with self._lock:
            held = task.state == "running"
            task.state = "done"
            for r in task.refs:
                self._tasks.pop(r.id, None)
            if held:
                self._pool.release(task.demand)
            task.fn_blob = task.call_blob = None
            task.deps = []
        for i, r in enumerate(task.refs):
            if r.done():
                continue
            if r._state == "PENDING":
                r.set_running_or_notify_cancel()
            if error is not None:
                r.set_exception(error)
            else:
                r.set_result(values[i])
        self._dispatch()
        with self._lock:
            self._idle.notify_all()

    def _break(self, exc: BaseException) -> None:
        with self._lock:
            self._broken = exc
            queued = self._scheduler.items()
            for item in queued:
                self._scheduler.remove(item)
        err = BrokenExecutorError(f"a worker's initializer raised {type(exc).__name__}: {exc}")
        for item in queued:
            if isinstance(item, _Task):
                self._finish(item, error=err)

    @contextlib.contextmanager
    def blocked(self, refs: Any = (), timeout: float | None = None,
                done: Any = None) -> Iterator[None]:
        """A task waiting for a ref lends its resources to others meanwhile."""
        ctx = current_task()
        task = ctx.extra if ctx is not None and ctx.backend is self else None
        if not isinstance(task, _Task) or task.state != "running":
            yield
            return
        with self._lock:
            task.lend_depth += 1
            if task.lend_depth == 1:
                self._pool.release(task.demand)
        self._dispatch()
        try:
            yield
        finally:
            with self._lock:
                task.lend_depth -= 1
                if task.lend_depth == 0:
                    self._pool.acquire(task.demand)

    def put(self, value: Any) -> ObjectRef[Any]:
        stored = store(value, self, "the value passed to put()")
        (ref,) = self._new_refs(1, "put")
        ref.set_running_or_notify_cancel()
        ref.set_result(stored)
        return ref

    def resolve_ref(self, ref_id: str) -> ObjectRef[Any]:
        ref = self._refs.get(ref_id)
        if ref is None:
            ref = ObjectRef(ref_id, None)
        return ref

    # ------------------------------------------------------------- cancelling
    def cancel_pending(self, ref: ObjectRef[Any]) -> bool:
        with self._lock:
            task = self._tasks.get(ref.id)
            if task is None:
                return self._cancel_actor_call(ref, running_too=False)
            if task.state not in ("waiting", "queued"):
                return False
            self._scheduler.remove(task)
            task.state = "done"
            for r in task.refs:
                self._tasks.pop(r.id, None)
        for r in task.refs:
            r._cancel_now()
        with self._lock:
            self._idle.notify_all()
        return True

    def cancel(self, ref: ObjectRef[Any], *, force: bool, recursive: bool) -> bool:
        if self.cancel_pending(ref):
            return True
        with self._lock:
            task = self._tasks.get(ref.id)
            if task is None:
                if force and self._is_actor_call(ref):
                    raise ValueError(
                        "force-cancelling an actor call is not allowed; kill the actor instead"
                    )
                return self._cancel_actor_call(ref, running_too=True)
            if task.state != "running":
                return False
            task.cancel_requested = True
            if task.interruptible:
                execution.interrupt_thread(task.thread_ident, KeyboardInterrupt)
            children = list(task.children) if recursive else []
        for child in children:
            if not child.done():
                self.cancel(child, force=force, recursive=True)
        return True

    # ----------------------------------------------------------------- actors
    def _is_actor_call(self, ref: ObjectRef[Any]) -> bool:
        return any(a.owns_call(ref) for a in list(self._actors.values()))

    def _cancel_actor_call(self, ref: ObjectRef[Any], running_too: bool) -> bool:
        for actor in list(self._actors.values()):
            if actor.owns_call(ref):
                return actor.cancel_call(ref)
        return False

    def create_actor(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any],
                     options: ActorOptions) -> ActorHandle[Any]:
        namespace = self.namespace_for(options.namespace)
        name = options.name
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot create actors after shutdown")
            if name is not None:
                existing = self._named.get((namespace, name))
                if existing is not None and self._actors[existing].alive_or_pending():
                    if options.get_if_exists:
                        return self._actors[existing].handle()
                    raise ValueError(
                        f"an actor named {name!r} already exists in namespace "
                        f"{namespace!r}; use get_actor(), or get_if_exists=True"
                    )
        create_demand = options.demand(1.0)
        self._check_feasible(create_demand, f"actor {cls.__name__!r}")
        self._check_strategy(options)
        blob = serialization.dumps(cls, what=f"actor class {cls.__qualname__!r}")
        _, call_blob = execution.serialize_call(cls, args, kwargs)
        actor = LocalActor(self, new_id(), cls, blob, call_blob,
                           execution.top_level_refs(args, kwargs), options, namespace)
        with self._lock:
            if name is not None:
                self._named[(namespace, name)] = actor.actor_id
            self._actors[actor.actor_id] = actor
            self._scheduler.enqueue(actor, create_demand)
        self._dispatch()
        return actor.handle()

    def actor_resources(self, release: dict[str, float], acquire: dict[str, float]) -> None:
        """Called by an actor to swap the resources it holds (creation -> lifetime)."""
        with self._lock:
            self._pool.release(release)
            self._pool.acquire(acquire)
        self._dispatch()

    def actor_gone(self, actor: LocalActor) -> None:
        """Called by an actor when it died for good: free its name."""
        with self._lock:
            if actor.options.name is not None:
                key = (actor.namespace, actor.options.name)
                if self._named.get(key) == actor.actor_id:
                    del self._named[key]

    def submit_actor_call(self, handle: ActorHandle[Any], method: str, args: tuple[Any, ...],
                          kwargs: dict[str, Any], options: MethodOptions
                          ) -> list[ObjectRef[Any]]:
        actor = self._actors.get(handle.actor_id)
        call_blob = execution.serialize_call(method, args, kwargs)[1]
        refs = self._new_refs(options.num_returns, f"{handle._class_name}.{method}")
        if actor is None:
            from ...exceptions import ActorDiedError

            err = ActorDiedError(f"actor {handle.actor_id} does not exist in this runtime")
            for r in refs:
                r.set_running_or_notify_cancel()
                r.set_exception(err)
            return refs
        actor.submit(method, call_blob, execution.top_level_refs(args, kwargs), options, refs)
        return refs

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle[Any]:
        namespace = self.namespace_for(namespace)
        with self._lock:
            actor_id = self._named.get((namespace, name))
            actor = self._actors.get(actor_id) if actor_id else None
        if actor is None or not actor.alive_or_pending():
            raise ValueError(f"no actor named {name!r} in namespace {namespace!r}")
        return actor.handle()

    def kill_actor(self, handle: ActorHandle[Any], *, no_restart: bool) -> None:
        actor = self._actors.get(handle.actor_id)
        if actor is not None:
            actor.kill(no_restart=no_restart)

    def resolve_actor(self, actor_id: str, state: dict[str, Any]) -> ActorHandle[Any]:
        return ActorHandle(actor_id, self, state["class_name"], state["methods"],
                           state.get("name"), state.get("namespace"))

    # ---------------------------------------------------------------- cluster
    def cluster_resources(self) -> dict[str, float]:
        return dict(self._pool.total)

    def available_resources(self) -> dict[str, float]:
        with self._lock:
            return self._pool.available()

    def nodes(self) -> list[dict[str, Any]]:
        return [{
            "node_id": self.node_id,
            "address": "local",
            "alive": not self._closed,
            "resources": self.cluster_resources(),
        }]

    def runtime_context(self) -> RuntimeContext:
        return RuntimeContext(self.node_id, self.driver_id, self.job_id, backend=self.name,
                              namespace=self.config.namespace or "default")

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self._lock:
            self._closed = True
            pending = [t for t in {id(t): t for t in self._tasks.values()}.values()]
        if cancel_futures:
            for task in pending:
                for r in task.refs:
                    if r.cancel():
                        break
        if wait:
            with self._lock:
                while self._tasks:
                    self._idle.wait(0.5)
        for actor in list(self._actors.values()):
            try:
                actor.stop(wait=wait)
            except Exception:  # one broken actor must not keep the others running
                continue
        self._threads.close(wait=wait, timeout=5.0)
