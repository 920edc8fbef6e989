"""``Executor``: a ``concurrent.futures.Executor`` over a pluggable backend, and the
process-wide default executor behind the module-level functions.

The executor validates input and options, then hands work to its backend
(``fedexec.backends.base.Backend``). ``get``, ``wait`` and ``map`` are written
once here on top of the refs, which are genuine ``Future`` s.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import math
import numbers
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

from . import _runtime, backends
from ._runtime import RuntimeContext, current_task
from .actors import ActorHandle
from .config import RuntimeConfig
from .exceptions import GetTimeoutError
from .options import (
    ACTOR_OPTION_NAMES,
    TASK_OPTION_NAMES,
    ActorOptions,
    TaskOptions,
    check_option_names,
)
from .placement import PlacementGroup, validate_bundles
from .refs import ObjectRef

__all__ = ["DEFAULT_BACKEND", "Executor", "current_executor", "init", "is_initialized", "shutdown"]

#: The backend used when none is named: fedexec's own runtime.
DEFAULT_BACKEND = "native"

P = ParamSpec("P")
R = TypeVar("R")


def _check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or math.isnan(timeout):
        raise TypeError(f"timeout must be None or a number of seconds, got {timeout!r}")
    return max(0.0, float(timeout))


def _as_ref_list(refs: Any, what: str) -> list[ObjectRef[Any]]:
    if isinstance(refs, (str, bytes)) or not isinstance(refs, Iterable):
        raise TypeError(f"{what} takes a list of ObjectRefs, got {type(refs).__name__}")
    out = list(refs)
    for r in out:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"{what} takes ObjectRefs, got an element of type {type(r).__name__}")
    return out


class _CountWaiter(cf._base._Waiter):
    """A ``concurrent.futures`` waiter that fires once ``needed`` futures are done.

    Installed in each ref's ``_waiters`` (as ``cf.wait`` does), and removed after,
    so repeated ``wait`` calls leave nothing behind on long-lived refs."""

    def __init__(self, needed: int):
        super().__init__()
        self.needed = needed
        self.lock = threading.Lock()

    def _one(self, future: Any) -> None:
        with self.lock:
            self.needed -= 1
            if self.needed <= 0:
                self.event.set()

    add_result = add_exception = add_cancelled = _one


class Executor(cf.Executor):
    """Runs tasks and actors on a backend; a drop-in for the stdlib pools.

    Args:
        backend: ``"native"``, ``"local"``, ``"dask"``, ``"spark"`` or a registered
            name (default: :data:`DEFAULT_BACKEND`).
        address: None starts an embedded runtime (native: inside a ``fedexec job``,
            joins the job's cluster, ``FEDEXEC_ADDRESS``; ``"local"`` never joins);
            otherwise the cluster to join.
        max_workers: tasks that may run at once (sizes the pool; defaults ``num_cpus``);
            ignored when joining a cluster, whose CPUs bound that.
        initializer: called as ``initializer(*initargs)`` once in every worker before
            its first task; if it raises, the executor is broken (as in the stdlib).
        num_cpus, num_gpus, resources: what the embedded runtime offers.
        object_store_memory: bytes of object store (embedded runtimes). Joining a
            native cluster, these and ``initializer`` are a ``ValueError``.
        namespace: default namespace of named actors.
        token: cluster token (native clusters).
        **backend_options: passed to the backend.

    Raises:
        ValueError: unknown backend (the message lists the known ones) or a bad argument.
        BackendUnavailableError: the backend's optional dependency is missing.
    """

    def __init__(
        self,
        backend: str = DEFAULT_BACKEND,
        address: str | None = None,
        *,
        max_workers: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        resources: dict[str, float] | None = None,
        object_store_memory: int | None = None,
        namespace: str | None = None,
        token: str | None = None,
        **backend_options: Any,
    ) -> None:
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a backend name, got {backend!r}")
        factory = backends.get_factory(backend)
        config = RuntimeConfig.make(
            address=address,
            max_workers=max_workers,
            initializer=initializer,
            initargs=initargs,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            resources=resources,
            object_store_memory=object_store_memory,
            namespace=namespace,
            token=token,
            backend_options=backend_options,
        )
        self._shutdown_lock = threading.Lock()
        self._is_shutdown = False
        self._backend = factory(config)
        self._backend.executor = self
        # Stop the runtime at interpreter exit if the user did not.
        self._finalizer: weakref.finalize[..., Any] = weakref.finalize(
            self, _finalize_backend, self._backend)

    @classmethod
    def _for_backend(cls, backend: backends.Backend) -> Executor:
        """The executor of ``backend``: the one that started it, else a facade made
        once (inside worker processes the runtime is the worker's connection, which
        no ``Executor`` started; backends never import this module to make one)."""
        ex = backend.executor
        return ex if ex is not None else cls._wrap(backend)

    @classmethod
    def _wrap(cls, backend: backends.Backend) -> Executor:
        """An executor facade over a running backend we did not start."""
        ex = cls.__new__(cls)
        ex._shutdown_lock = threading.Lock()
        ex._is_shutdown = False
        ex._backend = backend
        backend.executor = ex
        ex._finalizer = weakref.finalize(ex, _nothing)
        return ex

    # -- concurrent.futures.Executor -------------------------------------------
    def submit(self, fn: Callable[P, R], /, *args: P.args,
               **kwargs: P.kwargs) -> ObjectRef[R]:
        """Run ``fn(*args, **kwargs)`` as a task; returns an :class:`ObjectRef`
        (a list of refs with ``num_returns > 1``). ``fn`` may be a ``@remote``
        function: its options apply."""
        return self._submit_one(  # type: ignore[no-any-return]
            fn, args, kwargs, self._backend.config.task_defaults)

    def _submit_one(self, fn: Any, args: Any, kwargs: Any, options: TaskOptions) -> Any:
        fn, options = _unwrap(fn, options)
        refs = self._submit(fn, args, kwargs, options)
        return refs[0] if options.num_returns == 1 else refs

    def _submit(
        self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions
    ) -> list[ObjectRef[Any]]:
        if self._is_shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, got {fn!r}")
        return self._backend.submit(fn, args, kwargs, options)

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[R]:
        """Like the stdlib: results in order; ``timeout`` for the whole iteration;
        ``chunksize > 1`` sends that many calls per task."""
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return cf.Executor.map(self, fn, *iterables, timeout=timeout)
        chunks = _chunks(zip(*iterables), chunksize)
        results = cf.Executor.map(self, _apply_chunk, itertools.repeat(fn), chunks,
                                  timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; ``cancel_futures`` cancels queued ones; ``wait``
        blocks until running ones finish and the runtime has stopped."""
        with self._shutdown_lock:
            self._is_shutdown = True
        self._backend.shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:
            self._finalizer.detach()
        _runtime.set_default_executor(None, expected=self)

    @property
    def is_shutdown(self) -> bool:
        """True once ``shutdown()`` was called (no new work is accepted)."""
        return self._is_shutdown

    # -- objects -------------------------------------------------------------
    def put(self, value: Any) -> ObjectRef[Any]:
        """Store ``value`` in the object store; returns a completed ref to it."""
        if self._is_shutdown:
            raise RuntimeError("cannot put objects after shutdown")
        if isinstance(value, ObjectRef):
            raise TypeError("put() of an ObjectRef is not allowed; pass the ref itself")
        return self._backend.put(value)

    def get(self, refs: Any, *, timeout: float | None = None) -> Any:
        """The value of a ref, or the values of a list of refs (in order).

        Raises the first failing element's error as soon as it is known, without
        waiting for the rest; :class:`GetTimeoutError` after ``timeout`` seconds.
        """
        timeout = _check_timeout(timeout)
        if isinstance(refs, ObjectRef):
            return refs.result(timeout)
        if not isinstance(refs, (list, tuple)):
            raise TypeError(
                f"get() takes an ObjectRef or a list of ObjectRefs, got {type(refs).__name__}"
            )
        refs = _as_ref_list(refs, "get()")
        pending = [r for r in refs if not r.done()]
        if pending:
            def settled() -> bool:  # all done, or one failed
                return all(r.done() for r in pending) or any(
                    r.done() and (r.cancelled() or r._exception is not None) for r in pending)

            start = time.monotonic()
            with self._backend.blocked(pending, timeout, settled):
                left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
                cf.wait(pending, timeout=left, return_when=cf.FIRST_EXCEPTION)
        for r in refs:  # a failure raises at once, in list order among the finished
            if r.done() and (r.cancelled() or r._exception is not None):
                r.result(0)
        if not all(r.done() for r in refs):
            n = sum(not r.done() for r in refs)
            raise GetTimeoutError(f"{n} of {len(refs)} objects were not ready within {timeout} s")
        return [r.result(0) for r in refs]

    def wait(
        self, refs: Iterable[ObjectRef[Any]], *, num_returns: int = 1,
        timeout: float | None = None,
    ) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
        """Wait until ``num_returns`` of ``refs`` are done or ``timeout`` passes.

        Returns ``(ready, not_ready)``, each in input order; ``ready`` holds at most
        ``num_returns`` refs. Never raises on timeout.
        """
        refs = _as_ref_list(refs, "wait()")
        timeout = _check_timeout(timeout)
        if len(set(refs)) != len(refs):
            raise ValueError("wait() got duplicate ObjectRefs")
        if not refs:
            return [], []
        if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns < 1:
            raise ValueError(f"num_returns must be an int >= 1, got {num_returns!r}")
        if num_returns > len(refs):
            raise ValueError(f"num_returns ({num_returns}) > number of refs ({len(refs)})")
        _wait_for(refs, num_returns, timeout, self._backend)
        ready: list[ObjectRef[Any]] = []
        not_ready: list[ObjectRef[Any]] = []
        for r in refs:
            (ready if r.done() and len(ready) < num_returns else not_ready).append(r)
        return ready, not_ready

    def cancel(self, ref: ObjectRef[Any], *, force: bool = False, recursive: bool = True) -> bool:
        """Cancel the task behind ``ref``: a queued task never runs; a running one gets
        ``KeyboardInterrupt`` (``force=True``: its worker is killed). ``get`` then
        raises :class:`TaskCancelledError`. Returns True if the request was delivered.
        """
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"cancel() takes an ObjectRef, got {type(ref).__name__}")
        return self._backend.cancel(ref, force=force, recursive=recursive)

    # -- options and actors ----------------------------------------------------
    def options(self, **opts: Any) -> _OptionsView:
        """A view of this executor whose ``submit``/``map``/``actor`` use ``opts``."""
        return _OptionsView(self, opts)

    def actor(self, cls: type, /, *args: Any, **kwargs: Any) -> ActorHandle[Any]:
        """Create an actor ``cls(*args, **kwargs)`` in its own worker; its handle."""
        return self._create_actor(cls, args, kwargs, self._backend.config.actor_defaults)

    def _create_actor(
        self, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: ActorOptions
    ) -> ActorHandle[Any]:
        cls, options = _unwrap(cls, options)
        if not isinstance(cls, type):
            raise TypeError(f"actor() needs a class, got {cls!r}")
        if self._is_shutdown:
            raise RuntimeError("cannot create actors after shutdown")
        return self._backend.create_actor(cls, args, kwargs, options)

    def get_actor(self, name: str, namespace: str | None = None) -> ActorHandle[Any]:
        """The handle of the named actor; ``ValueError`` if there is none."""
        if not isinstance(name, str):
            raise TypeError("get_actor() takes the actor's name")
        return self._backend.get_actor(name, namespace)

    def kill(self, actor: ActorHandle[Any], *, no_restart: bool = True) -> None:
        """Kill the actor; pending and later calls raise ``ActorDiedError``
        (with ``no_restart=False`` it restarts if ``max_restarts`` allows)."""
        if not isinstance(actor, ActorHandle):
            raise TypeError(f"kill() takes an ActorHandle, got {type(actor).__name__}")
        self._backend.kill_actor(actor, no_restart=no_restart)

    # -- cluster ---------------------------------------------------------------
    def cluster_resources(self) -> dict[str, float]:
        """Total resources: ``CPU``, ``GPU``, ``memory`` and custom ones."""
        return self._backend.cluster_resources()

    def available_resources(self) -> dict[str, float]:
        """Resources not in use right now."""
        return self._backend.available_resources()

    def nodes(self) -> list[dict[str, Any]]:
        """The nodes: dicts with ``node_id``, ``address``, ``alive``, ``resources``."""
        return self._backend.nodes()

    def placement_group(
        self, bundles: Sequence[dict[str, float]], strategy: str = "PACK",
        name: str | None = None,
    ) -> PlacementGroup:
        """Reserve resource ``bundles`` atomically (PACK, SPREAD, STRICT_PACK,
        STRICT_SPREAD); ``pg.ready(timeout)`` tells when the reservation holds."""
        checked = validate_bundles(bundles, strategy)
        return self._backend.placement_group(checked, strategy, name)

    def remove_placement_group(self, pg: PlacementGroup) -> None:
        """Free the reservation of ``pg``: at once the part none of its work holds,
        the rest as its running tasks and actors end (they are not killed, and
        nothing is booked twice). Tasks still queued for the group are cancelled."""
        if not isinstance(pg, PlacementGroup):
            raise TypeError("remove_placement_group() takes a PlacementGroup")
        self._backend.remove_placement_group(pg)

    @property
    def backend(self) -> str:
        """The backend's name."""
        return self._backend.name

    def get_runtime_context(self) -> RuntimeContext:
        """Where the calling code runs (inside a task: that task's ids)."""
        task = current_task()
        if task is not None and task.backend is self._backend:
            return task.runtime
        return self._backend.runtime_context()

    def __repr__(self) -> str:
        state = "shut down" if self._is_shutdown else "running"
        return f"<fedexec.Executor backend={self.backend!r} {state}>"


def _nothing() -> None:
    """The finalizer of an executor facade: it started nothing to stop."""


def _unwrap(target: Any, options: Any) -> tuple[Any, Any]:
    """A ``@remote`` function or class stands for its target with its own options:
    it says so through ``__fedexec_remote__`` (so this module never imports them)."""
    unwrap = getattr(type(target), "__fedexec_remote__", None)
    if unwrap is None:
        return target, options
    return unwrap(target)  # type: ignore[no-any-return]


def _finalize_backend(backend: backends.Backend) -> None:
    try:
        backend.shutdown(wait=False, cancel_futures=True)
    except Exception:  # at interpreter exit nothing can be done about it
        pass


def _wait_for(refs: list[ObjectRef[Any]], needed: int, timeout: float | None,
              backend: backends.Backend) -> None:
    done = sum(r.done() for r in refs)
    if done >= needed or timeout == 0:
        return
    waiter = _CountWaiter(needed - done)
    installed = []
    try:
        for r in refs:
            with r._condition:
                if r.done():
                    continue  # already counted in ``done``
                else:
                    r._waiters.append(waiter)
                    installed.append(r)
        start = time.monotonic()
        with backend.blocked(refs, timeout, waiter.event.is_set):
            waiter.event.wait(None if timeout is None else
                              max(0.0, timeout - (time.monotonic() - start)))
    finally:
        for r in installed:
            with r._condition:
                try:
                    r._waiters.remove(waiter)
                except ValueError:
                    pass


def _chunks(it: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _apply_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in chunk]


class _OptionsView:
    """What ``executor.options(...)`` returns: ``submit``/``map``/``actor`` with options;
    every other attribute is the executor's."""

    def __init__(self, executor: Executor, opts: dict[str, Any]):
        check_option_names(opts)
        self._executor = executor
        self._opts = dict(opts)
        task_only = {k: v for k, v in opts.items() if k in TASK_OPTION_NAMES}
        actor_only = {k: v for k, v in opts.items() if k in ACTOR_OPTION_NAMES}
        # Validate values now, so a bad value fails at .options(), not later.
        self._task = TaskOptions.make(executor._backend.config.task_defaults, **task_only)
        self._actor = ActorOptions.make(executor._backend.config.actor_defaults, **actor_only)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``Executor.submit`` with these options."""
        bad = sorted(set(self._opts) - TASK_OPTION_NAMES)
        if bad:
            raise ValueError(f"{bad} are actor options, not task options")
        return self._executor._submit_one(fn, args, kwargs, self._task)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        """``Executor.map`` with these options."""
        return Executor.map(self, fn, *iterables, timeout=timeout, chunksize=chunksize)  # type: ignore[arg-type]

    def actor(self, cls: type, /, *args: Any, **kwargs: Any) -> ActorHandle[Any]:
        """``Executor.actor`` with these options."""
        bad = sorted(set(self._opts) - ACTOR_OPTION_NAMES)
        if bad:
            raise ValueError(f"{bad} are task options, not actor options")
        return self._executor._create_actor(cls, args, kwargs, self._actor)

    def options(self, **opts: Any) -> _OptionsView:
        """A view with these options updated by ``opts``."""
        return _OptionsView(self._executor, {**self._opts, **opts})

    def __getattr__(self, item: str) -> Any:
        return getattr(self._executor, item)


# --------------------------------------------------------------------------- default
# The process-wide default executor lives in ``_runtime`` (the bottom module), so
# that refs and handles can find it without importing this module.


def init(
    backend: str = DEFAULT_BACKEND,
    address: str | None = None,
    *,
    ignore_reinit_error: bool = False,
    **kwargs: Any,
) -> Executor:
    """Create the process-wide default executor (same arguments as ``Executor``).

    Raises ``RuntimeError`` if one exists, unless ``ignore_reinit_error=True``
    (then the existing one is returned).
    """
    with _runtime.default_lock():
        existing = _runtime.default_executor()
        if existing is not None:
            if ignore_reinit_error:
                return existing  # type: ignore[no-any-return]
            raise RuntimeError(
                "fedexec is already initialized; call fedexec.shutdown() first or pass "
                "ignore_reinit_error=True"
            )
        ex = Executor(backend, address, **kwargs)
        _runtime.set_default_executor(ex)
        return ex


def shutdown() -> None:
    """Shut down the default executor (a no-op if there is none)."""
    ex = _runtime.default_executor()
    if ex is not None:
        ex.shutdown(wait=True)


def is_initialized() -> bool:
    """True if the default executor exists."""
    return _runtime.default_executor() is not None


def current_executor() -> Executor:
    """The executor running the calling code: inside a task or actor, the runtime
    running it; else the process-wide default executor, created with ``init()``'s
    defaults on first use."""
    task = current_task()
    if task is not None:
        return Executor._for_backend(task.backend)
    ex: Executor | None = _runtime.default_executor()
    if ex is not None:
        return ex
    with _runtime.default_lock():
        ex = _runtime.default_executor()
        return ex if ex is not None else init()
