"""A joblib parallel backend that runs ``joblib.Parallel`` batches as fedexec tasks.

Usage::

    from fedexec.integrations.joblib import register_fedexec
    register_fedexec()
    with joblib.parallel_backend("fedexec"):          # or executor=my_executor
        GridSearchCV(SVC(), grid, n_jobs=-1).fit(X, y)

Data flow of one ``Parallel`` call::

    Parallel ──submit(BatchedCalls, callback)──▶ FedexecBackend
        │ for each (func, args, kwargs) of the batch: numpy arrays >= share_threshold
        │ bytes in args/kwargs (also inside list/tuple/dict) ──▶ executor.put() once per
        │ array per Parallel call (cache: id(array) -> (weakref, ObjectRef)) and a
        │ _Shared(i) marker in the call
        ▼
    executor.submit(_run_batch, batch, ref_0, ref_1, ...)  ──▶ ObjectRef (a Future)
        │ in the worker: fedexec resolves the direct ref arguments to the arrays
        │ (zero-copy views on ``native``), _run_batch puts them back in place of the
        │ markers and runs the calls, nested joblib calls on threads
        ▼
    ref done ──▶ callback thread ──▶ joblib's callback ──▶ retrieve_result_callback
                                     (result, or the task's error re-raised)

State of a backend instance (``_lock`` guards ``_outstanding`` and ``_shared``):
    _executor     the fedexec Executor in use (the given one, else the current one)
    _shared       {id(array): (weakref to the array, ObjectRef)} for the current call;
                  emptied by ``stop_call``/``terminate``, so the stored copies are freed
    _outstanding  {ObjectRef} submitted and not finished; ``abort_everything``
                  cancels them
    _callbacks    one thread running joblib's callbacks, so they never run on (and
                  never block) a fedexec backend's internal thread

Supported joblib versions: 1.3 and later (``submit`` for joblib >= 1.5, the same
method as ``apply_async`` for 1.3 and 1.4; results are fetched in the callback,
``supports_retrieve_callback = True``, so ``return_as="generator"`` works).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import weakref
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
    ThreadingBackend,
)

import fedexec
from fedexec import ObjectRef, current_executor

__all__ = ["DEFAULT_SHARE_THRESHOLD", "FedexecBackend", "register_fedexec"]

#: Numpy arrays at least this large (bytes) are put in the object store once per
#: ``Parallel`` call and shared by reference instead of being pickled into every task.
DEFAULT_SHARE_THRESHOLD = 1 << 20

# How deep _replace_arrays looks into lists, tuples and dicts of the arguments.
_MAX_DEPTH = 3


def register_fedexec(name: str = "fedexec") -> None:
    """Register :class:`FedexecBackend` with joblib under ``name``.

    Afterwards ``joblib.parallel_backend("fedexec")`` (or ``parallel_config``) runs
    ``Parallel`` calls, scikit-learn's included, as tasks on the current fedexec
    executor; ``parallel_backend("fedexec", executor=ex)`` uses the given one, and
    ``share_threshold=`` sets the size (bytes) from which arrays are shared.
    """
    joblib.register_parallel_backend(name, FedexecBackend)


class _Shared:
    """Marker left in a call in place of the ``index``-th shared array."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return _Shared, (self.index,)


class _Batch:
    """What a task runs: the batch's calls with markers for the shared arrays."""

    def __init__(self, items: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]],
                 nested: tuple[ParallelBackendBase, int | None]):
        self.items = items
        self.nested = nested

    def __repr__(self) -> str:
        return f"<joblib batch of {len(self.items)} call(s)>"


def _run_batch(batch: _Batch | Callable[[], Any], *arrays: Any) -> Any:
    """The task: ``arrays`` are the shared values (fedexec resolved their refs)."""
    if not isinstance(batch, _Batch):
        return batch()
    backend, n_jobs = batch.nested
    out = []
    with joblib.parallel_config(backend=backend, n_jobs=n_jobs):
        for func, args, kwargs in batch.items:
            if arrays:
                args = _restore(args, arrays, 0)
                kwargs = _restore(kwargs, arrays, 0)
            out.append(func(*args, **kwargs))
    return out


def _restore(value: Any, arrays: tuple[Any, ...], depth: int) -> Any:
    if type(value) is _Shared:
        return arrays[value.index]
    if depth >= _MAX_DEPTH:
        return value
    if type(value) in (list, tuple):
        return type(value)(_restore(v, arrays, depth + 1) for v in value)
    if type(value) is dict:
        return {k: _restore(v, arrays, depth + 1) for k, v in value.items()}
    return value


class FedexecBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib backend running each batch of calls as one fedexec task.

    Args:
        executor: the :class:`fedexec.Executor` (or ``executor.options(...)``, e.g.
            ``num_cpus=2`` per batch) to use; default: the executor
            current when a ``Parallel`` call starts (``fedexec.executor.
            current_executor()``: the default executor, created on first use, or,
            inside a task, the runtime running it).
        share_threshold: numpy arrays of at least this many bytes among a call's
            arguments are stored once per ``Parallel`` call and shared by reference.
        nesting_level, inner_max_num_threads, **backend_kwargs: joblib's.

    ``n_jobs=-1`` means all the cluster's CPUs (``cluster_resources()["CPU"]``),
    ``-2`` all but one, and so on; a positive ``n_jobs`` is taken as given (tasks
    beyond the free CPUs wait in fedexec's queue). ``n_jobs=1`` runs sequentially
    in the caller, as with joblib's other backends. Errors raised by a call come
    back as fedexec's ``TaskError``, which is also an instance of the original
    exception's class. Nested ``Parallel`` calls inside a task run on threads (then
    sequentially), as under joblib's default ``loky`` backend.
    """

    supports_retrieve_callback = True
    supports_sharedmem = False
    uses_threads = False
    default_n_jobs = -1

    def __init__(self, executor: fedexec.Executor | None = None, *,
                 share_threshold: int = DEFAULT_SHARE_THRESHOLD,
                 nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **backend_kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads, **backend_kwargs)
        if executor is not None and not all(
                callable(getattr(executor, m, None)) for m in ("submit", "put", "cancel")):
            raise TypeError(f"executor must be a fedexec.Executor, got {executor!r}")
        if isinstance(share_threshold, bool) or not isinstance(share_threshold, int) \
                or share_threshold < 0:
            raise ValueError(f"share_threshold must be an int >= 0, got {share_threshold!r}")
        self._given_executor = executor
        self._executor: fedexec.Executor | None = executor
        self.share_threshold = share_threshold
        # Re-entrant: a weakref callback (``forget``) may run while this thread holds it.
        self._lock = threading.RLock()
        self._shared: dict[int, tuple[weakref.ref[Any], ObjectRef[Any]]] = {}
        self._outstanding: set[ObjectRef[Any]] = set()
        self._callbacks: cf.ThreadPoolExecutor | None = None
        self.parallel: Any = None

    # -- configuration -----------------------------------------------------------
    @property
    def executor(self) -> fedexec.Executor:
        """The executor this backend submits to (resolved on first use)."""
        if self._executor is None:
            self._executor = current_executor()
        return self._executor

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many batches run at once: ``-1`` → the cluster's CPUs, ``-k`` →
        CPUs + 1 - k (at least 1), ``None`` → 1, a positive number as given."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            cpus = int(self.executor.cluster_resources().get("CPU", 1))
            return max(cpus + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: Any = None,
                  require: Any = None, **backend_kwargs: Any) -> int:
        """Bind to ``parallel`` and return the number of concurrent batches; an
        explicit ``n_jobs=1`` falls back to joblib's sequential backend."""
        n = self.effective_n_jobs(n_jobs)
        if n == 1 and (n_jobs is None or n_jobs > 0):
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        return n

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """Backend of ``Parallel`` calls made inside a task: threads at the first
        nesting level, sequential below (joblib's default; never a fedexec task
        waiting on another fedexec task through joblib's polling loop)."""
        level = (self.nesting_level or 0) + 1
        if level > 1:
            return SequentialBackend(nesting_level=level), None
        return ThreadingBackend(nesting_level=level), None

    # -- a Parallel call ---------------------------------------------------------
    def start_call(self) -> None:
        """Start of a ``Parallel`` call: resolve the executor, empty the array cache."""
        if self._given_executor is None:
            self._executor = current_executor()
        with self._lock:
            self._shared = {}

    def stop_call(self) -> None:
        """End of a ``Parallel`` call: drop the shared arrays' refs (frees them)."""
        with self._lock:
            self._shared = {}

    def submit(self, func: Callable[[], Any],
               callback: Callable[[Any], Any] | None = None) -> ObjectRef[Any]:
        """Run the batch ``func`` as one task; ``callback(ref)`` runs when it is done
        (on this backend's callback thread). Returns the task's ObjectRef."""
        batch, arrays = self._prepare(func)
        ref = self.executor.submit(_run_batch, batch, *arrays)
        with self._lock:
            self._outstanding.add(ref)
        ref.add_done_callback(lambda r: self._done(r, callback))
        return ref

    # joblib 1.3 and 1.4 call ``apply_async``; 1.5 renamed it ``submit``.
    apply_async = submit

    def retrieve_result_callback(self, out: ObjectRef[Any]) -> Any:
        """The batch's results, or its error raised (the original exception class)."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel every outstanding task of this backend (joblib calls this when a
        call raised, or the caller stopped iterating): queued tasks never run,
        running ones get ``KeyboardInterrupt``. The backend stays usable."""
        with self._lock:
            pending = [r for r in self._outstanding if not r.done()]
            self._outstanding.clear()
        for ref in pending:
            try:
                self.executor.cancel(ref)
            except Exception:  # the runtime is shutting down: nothing left to cancel
                pass
        if not ensure_ready:
            self.terminate()

    def terminate(self) -> None:
        """Release what this backend holds (never the executor itself)."""
        with self._lock:
            self._shared = {}
            callbacks, self._callbacks = self._callbacks, None
        if callbacks is not None:
            callbacks.shutdown(wait=False)
        self.reset_batch_stats()

    # -- internals -----------------------------------------------------------------
    def _done(self, ref: ObjectRef[Any], callback: Callable[[Any], Any] | None) -> None:
        with self._lock:
            self._outstanding.discard(ref)
            if callback is None:
                return
            if self._callbacks is None:
                self._callbacks = cf.ThreadPoolExecutor(
                    1, thread_name_prefix="fedexec-joblib-callback")
            callbacks = self._callbacks
        try:
            callbacks.submit(callback, ref)
        except RuntimeError:  # terminated meanwhile: joblib no longer wants the result
            pass

    def _prepare(self, func: Any) -> tuple[Any, list[ObjectRef[Any]]]:
        items = getattr(func, "items", None)
        if not isinstance(items, list):
            return func, []
        arrays: list[ObjectRef[Any]] = []
        slots: dict[str, int] = {}
        calls = []
        for f, args, kwargs in items:
            args = self._replace_arrays(args, arrays, slots, 0)
            kwargs = self._replace_arrays(kwargs, arrays, slots, 0)
            calls.append((f, args, kwargs))
        return _Batch(calls, self.get_nested_backend()), arrays

    def _replace_arrays(self, value: Any, arrays: list[ObjectRef[Any]], slots: dict[str, int],
                        depth: int) -> Any:
        if isinstance(value, np.ndarray):
            if value.nbytes < self.share_threshold:
                return value
            ref = self._shared_ref(value)
            if ref.id not in slots:
                slots[ref.id] = len(arrays)
                arrays.append(ref)
            return _Shared(slots[ref.id])
        if depth >= _MAX_DEPTH:
            return value
        if type(value) in (list, tuple):
            return type(value)(self._replace_arrays(v, arrays, slots, depth + 1) for v in value)
        if type(value) is dict:
            return {k: self._replace_arrays(v, arrays, slots, depth + 1)
                    for k, v in value.items()}
        return value

    def _shared_ref(self, array: np.ndarray) -> ObjectRef[Any]:
        """The ref of ``array`` in the store, putting it there on first use."""
        key = id(array)
        with self._lock:
            entry = self._shared.get(key)
            if entry is not None and entry[0]() is array:
                return entry[1]
        ref = self.executor.put(array)
        shared = self._shared

        def forget(wr: weakref.ref[Any], key: int = key) -> None:
            with self._lock:
                if shared.get(key, (None,))[0] is wr:
                    del shared[key]

        with self._lock:
            entry = shared.get(key)
            if entry is not None and entry[0]() is array:  # another thread was first
                return entry[1]
            shared[key] = (weakref.ref(array, forget), ref)
        return ref
