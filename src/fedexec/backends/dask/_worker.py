"""What runs inside a Dask worker process: the task wrapper and its helpers.

Every fedexec task is the Dask task ``run_task(spec, *dependency_values)``::

    run_task ── log_event(topic, start) ──▶ scheduler ──▶ submitting runtime (running())
       │ task context set: fedexec.get/put/remote inside talk to this worker's runtime,
       │ a DaskBackend over the worker's own client (one per job and process)
       ├─ fn(*args) on this Dask thread; cancel → KeyboardInterrupt raised in it
       │    blocked in fedexec.get: the task lends its resources (and its thread slot,
       │    by seceding) so the tasks it waits for can run here
       ├─ returns a Blob (or a tuple of them): what Dask stores and passes on
       └─ a small result also goes to the submitting runtime with a "done" event,
          so reading it there costs no round trip to this worker

A failure is raised as ``Raised`` (the fedexec error, pickled whole behind a
short message); Dask fails the tasks that depend on it with the same error.

State of this process (module globals; ``client.run`` calls read them on the
worker's event loop):
    _BACKENDS     {job id: DaskBackend}   the runtime tasks of that job talk to
    _RUNNING      {dask key: Running}     tasks running now (for cancel)
    _REVOKED      {dask key}              tasks cancelled before they started
    _KEEP         {dask key: [refs]}      refs inside a result, kept alive while
                                          the result is (Dask forgets the key ->
                                          the entry goes)
    _INIT_ERRORS  {job id: message}       a failed ``initializer`` (broken executor)

Lending resources is the one place that reaches into ``distributed`` internals:
the worker state machine's ``available_resources`` (see :func:`adjust_resources`);
without it a task blocked on its children would deadlock a full worker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle
import distributed
from dask.context import thread_state  # distributed.worker's: it sets the task key there

from ... import serialization
from ..._runtime import TaskContext, resolving, running_task
from ...exceptions import BrokenExecutorError, SerializationError, TaskCancelledError
from ...refs import ObjectRef
from .. import _execution as execution
from ._common import Blob, DepSlot, Failed, Job, Raised, TaskSpec

if TYPE_CHECKING:
    from ._backend import DaskBackend

__all__ = [
    "Running", "adjust_resources", "interrupt", "pick", "revoke", "revoke_untaken", "run_task",
    "worker_backend",
]

logger = logging.getLogger(__name__)

_BACKENDS: dict[str, DaskBackend] = {}
_BACKENDS_LOCK = threading.Lock()
_RUNNING: dict[str, Running] = {}
_KEEP: dict[str, list[Any]] = {}
_INIT_ERRORS: dict[str, str] = {}
_REVOKED: set[str] = set()
_STATE_LOCK = threading.Lock()


def worker_backend(job: Job, worker: distributed.Worker | None = None,
                   client: distributed.Client | None = None) -> DaskBackend:
    """The runtime that tasks of ``job`` running in this process talk to (over the
    worker's client; ``worker`` and ``client`` are found from the running Dask task
    if not given, e.g. on an actor's own threads)."""
    backend = _BACKENDS.get(job.job_id)
    if backend is not None:
        return backend
    with _BACKENDS_LOCK:
        backend = _BACKENDS.get(job.job_id)
        if backend is None:
            from ._backend import DaskBackend

            if worker is None or client is None:
                worker, client = distributed.get_worker(), distributed.get_client()
            backend = DaskBackend.attached(client, job, worker)
            _BACKENDS[job.job_id] = backend
    return backend


class _ArgFailed(Exception):
    def __init__(self, error: BaseException):
        super().__init__()
        self.error = error


class Running:
    """A fedexec task (or an actor's ``__init__``) running on a thread of this worker."""

    __slots__ = ("backend", "cancel_requested", "children", "depth", "ident", "interruptible",
                 "key", "lent", "lock", "seceded", "worker")

    def __init__(self, key: str, worker: distributed.Worker, backend: DaskBackend | None):
        self.key = key
        self.worker = worker
        self.backend: Any = backend
        self.ident = threading.get_ident()
        self.lock = threading.Lock()
        self.cancel_requested = False
        self.interruptible = False
        self.children: list[str] = []  # keys of the tasks it submitted (for cancel)
        self.depth = 0
        self.seceded = False
        self.lent: dict[str, float] = {}

    def lend(self) -> None:
        """Blocked in a get: let others use this task's resources and thread slot."""
        self.depth += 1
        if self.depth > 1:
            return
        ts = self.worker.state.tasks.get(self.key)
        self.lent = dict(ts.resource_restrictions or {}) if ts is not None else {}
        adjust_resources(self.worker, self.lent, +1)
        if not self.seceded:
            self.seceded = True
            distributed.secede()  # the worker may start another task in our slot

    def unlend(self) -> None:
        """The get returned: take the resources back (maybe past the total, briefly)."""
        self.depth -= 1
        if self.depth == 0 and self.lent:
            adjust_resources(self.worker, self.lent, -1)
            self.lent = {}

    def call(self, fn: Any, args: Any, kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, interruptible by :func:`interrupt`."""
        with execution.Interruptible(self, self.lock, self.ident):
            return fn(*args, **kwargs)


def adjust_resources(worker: distributed.Worker, delta: dict[str, float], sign: int) -> None:
    """Add (``sign=+1``) or take back (``-1``) ``delta`` to the worker's free resources.

    Dask releases a task's resources only when it ends (``secede`` frees the
    thread slot, not the resources), so a task blocked on the tasks it waits for
    would deadlock a full worker. This lends them, on the worker's event loop, and
    asks the state machine to start what now fits.
    """
    if not delta:
        return

    def apply() -> None:
        try:
            state = worker.state
            available = state.available_resources
            for name, amount in delta.items():
                if name in available:
                    available[name] += sign * amount
            if sign > 0 and state.running:
                from distributed.worker_state_machine import UnpauseEvent

                worker.handle_stimulus(UnpauseEvent(stimulus_id=f"fedexec-lend-{time.time()}"))
        except (AttributeError, ImportError) as exc:  # a distributed we do not know
            logger.warning("fedexec cannot lend a blocked task's resources on this version "
                           "of distributed (%s); nested gets may wait for free resources", exc)

    worker.loop.add_callback(apply)


def run_task(spec: TaskSpec, *deps: Any) -> Any:
    """The Dask task of one fedexec task (see the module docstring)."""
    worker = distributed.get_worker()
    key = thread_state.key
    st = Running(key, worker, None)
    with _STATE_LOCK:
        if key in _REVOKED:  # cancelled before it started: never run it
            _REVOKED.discard(key)
            raise Raised.of(TaskCancelledError(f"task {spec.name!r} was cancelled"))
        _RUNNING[key] = st
    try:
        backend = st.backend = worker_backend(spec.job)
        worker.log_event(spec.job.topic, {"e": "start", "k": key, "a": worker.address})
        ctx = TaskContext(backend, backend.runtime_for(spec.task_id, None),
                          st)
        with running_task(ctx):
            return _attempts(spec, deps, st, backend)
    finally:
        _RUNNING.pop(key, None)
        collect_keepers(worker)


def _attempts(spec: TaskSpec, deps: tuple[Any, ...], st: Running, backend: DaskBackend) -> Any:
    options = execution.load_retry(spec.retry)
    retries_left = spec.max_retries
    name = spec.name
    while True:
        try:
            failed = _INIT_ERRORS.get(spec.job.job_id)
            if failed is not None:
                raise BrokenExecutorError(
                    f"a worker's initializer raised {failed}; the executor is broken and "
                    "runs no more tasks")
            with resolving(backend):
                fn = serialization.loads(spec.fn)
                args, kwargs = serialization.loads(spec.call)
            args, kwargs = fill_deps(args, kwargs, deps, backend)
            value = st.call(fn, args, kwargs)
            del args, kwargs
            if st.cancel_requested:
                raise TaskCancelledError(f"task {name!r} was cancelled")
            stored = store(value, spec.num_returns, name, st.key)
            send_small(st.worker, spec.job.topic, st.key, stored)
            return stored
        except KeyboardInterrupt as exc:
            if st.cancel_requested:
                raise Raised.of(TaskCancelledError(f"task {name!r} was cancelled")) from None
            raise Raised.of(execution.wrap_exception(exc, name, skip=2)) from None
        except _ArgFailed as exc:
            raise Raised.of(exc.error) from None
        except (BrokenExecutorError, SerializationError, TaskCancelledError) as exc:
            raise Raised.of(exc) from None
        except BaseException as exc:
            if execution.should_retry(exc, options, retries_left):
                retries_left -= 1
                continue
            raise Raised.of(execution.wrap_exception(exc, name, skip=2)) from None


def fill_deps(args: Any, kwargs: dict[str, Any], deps: tuple[Any, ...],
              backend: DaskBackend) -> tuple[list[Any], dict[str, Any]]:
    """Replace the ``DepSlot`` s by the values Dask passed (large arrays: read-only
    views of the buffers Dask holds, shared by every task reading them here), and
    top-level refs (an actor call's arguments) by their values, waiting for them."""

    def value(slot: Any) -> Any:
        if isinstance(slot, ObjectRef):
            try:
                return slot.result()
            except BaseException as exc:
                raise _ArgFailed(exc) from None
        dep = deps[slot.index]
        if isinstance(dep, Failed):
            raise _ArgFailed(dep.error)
        return dep.load(backend)

    args = [value(a) if isinstance(a, (DepSlot, ObjectRef)) else a for a in args]
    kwargs = {k: value(v) if isinstance(v, (DepSlot, ObjectRef)) else v
              for k, v in kwargs.items()}
    return args, kwargs


def store(value: Any, num_returns: int, name: str, key: str) -> Any:
    """Pickle a task's return value(s) into what Dask stores under ``key``."""
    values = execution.split_returns(value, num_returns, name)
    blobs = []
    keep: list[Any] = []
    for v in values:
        blob, contained = Blob.of(v, f"return value of {name!r}")
        blobs.append(blob)
        keep.extend(contained)
    if keep:
        _KEEP[key] = keep  # refs inside stay alive as long as the result does
    return blobs[0] if num_returns == 1 else tuple(blobs)


#: Results up to this size also travel to the submitter with the "done" event, so
#: reading them costs no round trip to the worker (as Ray returns small results to
#: the owner directly). The scheduler keeps the last events of a topic: keep it small.
INLINE_MAX = 2048


def send_small(worker: distributed.Worker, topic: str, key: str, stored: Any) -> None:
    """Send a small result to the runtime that submitted its task (see INLINE_MAX)."""
    blobs = stored if isinstance(stored, tuple) else (stored,)
    if sum(b.nbytes for b in blobs) <= INLINE_MAX:
        worker.log_event(topic, {"e": "done", "k": key, "v": [b.data for b in blobs]})


def collect_keepers(worker: distributed.Worker) -> None:
    """Forget the kept refs of results that Dask has released on this worker."""
    if _KEEP:
        tasks = worker.state.tasks
        for key in [k for k in _KEEP if k not in tasks]:
            _KEEP.pop(key, None)


def pick(values: Any, index: int) -> Any:
    """Return ``index`` of a task with ``num_returns > 1`` (a failure passes through)."""
    if isinstance(values, Failed):
        return values
    return values[index]


# --------------------------------------------------------------- called by client.run
#: The states (in this worker's state machine) of a task already run here, and
#: of one a thread here has taken: handed to a thread, or already run here.
RAN_STATES = frozenset({"memory", "error"})
TAKEN_STATES = frozenset({"executing", "long-running"}) | RAN_STATES


def revoke(keys: list[str], dask_worker: distributed.Worker) -> list[str]:
    """Make sure tasks ``keys`` never start here; those that already did (running,
    or already run here: a finished task is not revoked as if it never started)."""
    return _revoke(keys, dask_worker, _running_or_in(dask_worker, RAN_STATES))


async def revoke_untaken(keys: list[str], wait_s: float,
                         dask_worker: distributed.Worker) -> list[str]:
    """Make sure the tasks ``keys`` no thread of this worker has taken never start
    here; those taken (``shutdown(cancel_futures=True)``: see ``_cancel``).

    The scheduler sent ``keys`` here: one that has not arrived yet is waited for, up
    to ``wait_s`` (it takes milliseconds), as the worker hands it to a thread the
    moment it arrives if a thread and its resources are free. Runs on the worker's
    event loop, which goes on handling the scheduler's messages while it waits."""
    tasks = dask_worker.state.tasks
    deadline = time.monotonic() + wait_s
    while any(k not in tasks for k in keys) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return _revoke(keys, dask_worker, _running_or_in(dask_worker, TAKEN_STATES))


def _running_or_in(dask_worker: distributed.Worker, states: frozenset[str]
                   ) -> Callable[[str], bool]:
    """Whether a task runs here, or is in one of ``states`` in this worker's state
    machine."""
    tasks = dask_worker.state.tasks

    def check(key: str) -> bool:
        ts = tasks.get(key)
        return key in _RUNNING or (ts is not None and ts.state in states)

    return check


def _revoke(keys: list[str], dask_worker: distributed.Worker,
            started: Callable[[str], bool]) -> list[str]:
    """Mark the tasks ``keys`` not ``started`` never to start here; those started."""
    out = []
    with _STATE_LOCK:
        tasks = dask_worker.state.tasks
        for key in [k for k in _REVOKED if k not in tasks]:  # forgotten by Dask
            _REVOKED.discard(key)
        for key in keys:
            if started(key):
                out.append(key)
            else:
                _REVOKED.add(key)
    return out


def interrupt(key: str, recursive: bool, dask_worker: distributed.Worker) -> bool:
    """Cancel the running task ``key``: ``KeyboardInterrupt`` in its thread (and its
    children's, if ``recursive``). Runs on the worker's event loop."""
    st = _RUNNING.get(key)
    if st is None:
        return False
    with st.lock:
        st.cancel_requested = True
        if st.interruptible:
            execution.interrupt_thread(st.ident, KeyboardInterrupt)
        children = list(st.children) if recursive else []
    if children:
        threading.Thread(target=_cancel_children, args=(st.backend, children), daemon=True,
                         name="fedexec-dask-cancel-children").start()
    return True


def _cancel_children(backend: DaskBackend, children: list[str]) -> None:
    for key in children:
        record = backend._records.get(key)  # gone: the child finished
        if record is None:
            continue
        try:
            backend.cancel(record.refs[0], force=False, recursive=True)
        except Exception:  # the child's worker may be gone: nothing left to cancel
            continue


def resources_now(dask_worker: distributed.Worker) -> dict[str, Any]:
    """What this worker has free now (lent resources included)."""
    state = dask_worker.state
    return {
        "available": dict(state.available_resources),
        "total": dict(state.total_resources),
        "free_threads": max(0, state.nthreads - len(state.executing)),
    }


class Initializer(distributed.WorkerPlugin):
    """Runs an executor's ``initializer(*initargs)`` once in every worker process;
    a failure breaks that executor (its tasks raise ``BrokenExecutorError``)."""

    def __init__(self, job_id: str, payload: bytes):
        self.job_id = job_id
        self.payload = payload

    def setup(self, worker: distributed.Worker) -> None:
        try:
            fn, args = cloudpickle.loads(self.payload)
            fn(*args)
        except BaseException as exc:
            _INIT_ERRORS[self.job_id] = f"{type(exc).__name__}: {exc}"
