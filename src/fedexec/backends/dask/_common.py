"""What the driver and the Dask workers exchange: pickled values, task and actor
specs, and the ref type bound to a Dask future.

Everything here is imported on both sides (the driver and every Dask worker
process), so it holds data types and small pure helpers only.

Values in Dask's memory are never the user's objects themselves but
:class:`Blob` s (fedexec's own pickle of them, large buffers out of band): a
consumer gets the value as pickle would give it, large arrays as read-only views
of the stored buffers, and an unpicklable value fails in the task that made it,
with its path. An actor call that failed stores a
:class:`Failed` instead of raising, so that the next call chained behind it (see
``_actors``) still runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import pickle
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle
from distributed.protocol.serialize import dask_deserialize, dask_serialize

from ... import serialization
from ..._runtime import current_backend, resolving
from ...exceptions import (
    FedexecError,
    ObjectLostError,
    TaskCancelledError,
    TaskError,
)
from ...refs import LazyValue, ObjectRef
from .. import _execution as execution
from .._execution import settle  # re-exported: the dask modules complete refs with it

if TYPE_CHECKING:
    import distributed

    from ..base import Backend

__all__ = [
    "ActorSpec",
    "Blob",
    "CallSpec",
    "DaskRef",
    "DepSlot",
    "Failed",
    "Job",
    "Raised",
    "TaskSpec",
    "cancel_ref",
    "dask_error",
    "dask_key",
    "node_id_of",
    "serialize_call",
    "settle",
]


class Blob:
    """A value pickled by fedexec: the pickle stream ``data`` (cloudpickle, protocol
    5) and its large buffers (numpy arrays, arrow buffers: out of band, each a
    read-only bytes-like object of its own).

    Dask moves a Blob as frames (``data`` and the buffers, no re-pickling: see the
    serializer registered below), so a 200 MB array is copied once, by
    :meth:`of`, and never pickled into a stream. :meth:`load` gives arrays that are
    read-only views of those buffers: every task reading the same object in one
    worker process shares its memory, as readers of the ``native`` store do.
    """

    __slots__ = ("buffers", "data")

    def __init__(self, data: bytes | memoryview, buffers: list[Any] | tuple[Any, ...] = ()):
        self.data = data
        self.buffers = list(buffers)

    @classmethod
    def of(cls, value: Any, what: str) -> tuple[Blob, list[Any]]:
        """Pickle ``value`` (its large buffers copied: a snapshot, as ``put`` takes);
        also return the refs and actor handles found inside."""
        s = serialization.dumps(value, what=what)
        return cls(s.data, [bytes(b) for b in s.buffers]), s.contained

    @property
    def nbytes(self) -> int:
        """The size of the stream and its buffers."""
        return len(self.data) + sum(memoryview(b).nbytes for b in self.buffers)

    def load(self, backend: Backend | None) -> Any:
        """The value (arrays are read-only views of the buffers); refs inside bind
        to ``backend``."""
        if backend is None:
            return serialization.loads(self.data, self.buffers)
        with resolving(backend):
            return serialization.loads(self.data, self.buffers)

    def __sizeof__(self) -> int:  # what Dask's memory accounting sees
        return self.nbytes + 64

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        if isinstance(protocol, int) and protocol >= 5:  # buffers out of band if asked
            return (_blob, (self.data, [pickle.PickleBuffer(b) for b in self.buffers]))
        return (_blob, (self.data, [bytes(b) for b in self.buffers]))


def _blob(data: Any, buffers: list[Any]) -> Blob:
    return Blob(data, [memoryview(b).toreadonly() for b in buffers])


def _blob_to_frames(blob: Blob) -> tuple[dict[str, Any], list[Any]]:
    return {}, [blob.data, *blob.buffers]


def _blob_from_frames(header: dict[str, Any], frames: list[Any]) -> Blob:
    return _blob(frames[0], frames[1:])


dask_serialize.register(Blob, _blob_to_frames)
dask_deserialize.register(Blob, _blob_from_frames)


class Failed:
    """What an actor call stores in Dask when it failed: the error to raise."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (Failed, (self.error,))


class Raised(Exception):
    """How a task's fedexec error travels through Dask: pickled whole, behind a short
    message (Dask replaces exceptions with long messages by a truncated copy)."""

    def __init__(self, payload: bytes, summary: str):
        super().__init__(summary)
        self.payload = payload

    @classmethod
    def of(cls, error: BaseException) -> Raised:
        """Wrap ``error``."""
        cause = getattr(error, "cause", error)
        summary = f"{type(cause).__name__}: {str(cause)[:200]}"
        return cls(cloudpickle.dumps(error), summary)

    def error(self) -> BaseException:
        """The fedexec error it carries."""
        error: BaseException = pickle.loads(self.payload)
        return error

    def __reduce__(self) -> tuple[Any, ...]:
        return (Raised, (self.payload, self.args[0] if self.args else ""))


class DepSlot:
    """Stands in the pickled arguments for a ref passed directly (a Dask dependency)."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (DepSlot, (self.index,))


class Job:
    """Who submitted a task: its job id, default namespace, and the event topic of
    the submitting runtime (start and actor-ready events go there)."""

    __slots__ = ("job_id", "namespace", "topic")

    def __init__(self, job_id: str, namespace: str, topic: str):
        self.job_id = job_id
        self.namespace = namespace
        self.topic = topic

    def __reduce__(self) -> tuple[Any, ...]:
        return (Job, (self.job_id, self.namespace, self.topic))


class TaskSpec:
    """One task: the pickled function and call (top-level refs are ``DepSlot`` s
    whose values Dask passes as the wrapper's extra arguments)."""

    __slots__ = ("call", "fn", "job", "max_retries", "name", "num_returns", "retry", "task_id")

    def __init__(self, fn: bytes, call: bytes, name: str, task_id: str, num_returns: int,
                 retry: Any, max_retries: int, job: Job):
        self.fn = fn
        self.call = call
        self.name = name
        self.task_id = task_id
        self.num_returns = num_returns
        self.retry = retry  # bool, or cloudpickled tuple of exception types
        self.max_retries = max_retries
        self.job = job

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskSpec, (self.fn, self.call, self.name, self.task_id, self.num_returns,
                           self.retry, self.max_retries, self.job))


class ActorSpec:
    """One actor incarnation: its class and constructor call, and its options."""

    __slots__ = ("actor_id", "call", "class_name", "cls", "concurrency", "gen", "is_async",
                 "job", "lend", "namespace", "restarts_left", "task_retries")

    def __init__(self, actor_id: str, cls: bytes, call: bytes, class_name: str,
                 is_async: bool, concurrency: int, restarts_left: int,
                 lend: dict[str, float], gen: int, job: Job, task_retries: int = 0,
                 namespace: str | None = None):
        self.actor_id = actor_id
        self.cls = cls
        self.call = call
        self.class_name = class_name
        self.is_async = is_async
        self.concurrency = concurrency
        self.restarts_left = restarts_left
        self.lend = lend  # resources held while creating but not while alive
        self.gen = gen
        self.job = job
        self.task_retries = task_retries  # max_task_retries: calls lost with the actor
        self.namespace = namespace or job.namespace  # the actor's (its context shows it)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorSpec, (self.actor_id, self.cls, self.call, self.class_name,
                            self.is_async, self.concurrency, self.restarts_left, self.lend,
                            self.gen, self.job, self.task_retries, self.namespace))


class CallSpec:
    """One actor-method call."""

    __slots__ = ("actor_id", "call", "job", "method", "name", "num_returns", "task_id")

    def __init__(self, actor_id: str, method: str, call: bytes, name: str, task_id: str,
                 num_returns: int, job: Job):
        self.actor_id = actor_id
        self.method = method
        self.call = call
        self.name = name
        self.task_id = task_id
        self.num_returns = num_returns
        self.job = job

    def __reduce__(self) -> tuple[Any, ...]:
        return (CallSpec, (self.actor_id, self.method, self.call, self.name, self.task_id,
                           self.num_returns, self.job))


def serialize_call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
                   ) -> tuple[serialization.Serialized, serialization.Serialized]:
    """Pickle a call's function and arguments in band (Dask moves the bytes)."""
    return execution.serialize_call(fn, args, kwargs, out_of_band=False)


# --------------------------------------------------------------------------- refs
class DaskValue(LazyValue):
    """A finished ref's value: fetched from the cluster on the first ``result()``
    (so a value only passed on to other tasks never travels to the caller), then
    kept pickled here; every ``result()`` unpickles it again (large arrays as
    read-only views of the buffers)."""

    __slots__ = ("backend", "blob", "future")

    def __init__(self, backend: Backend, future: distributed.Future[Any] | None,
                 blob: Blob | None = None):
        self.backend = backend
        self.future = future
        self.blob = blob

    def fetch(self) -> Blob:
        """The pickled value (fetched from its worker the first time)."""
        blob = self.blob
        if blob is None:
            try:
                blob = self.future.result()  # type: ignore[union-attr]
            except Exception as exc:
                raise ObjectLostError(
                    f"the object could not be read from the Dask cluster ({exc!r}); its "
                    "executor was shut down, or the worker holding it died and it cannot "
                    "be rebuilt") from exc
            self.blob = blob
        return blob

    def load(self) -> Any:
        blob = self.fetch()
        if isinstance(blob, Failed):
            raise blob.error
        return blob.load(self.backend)


class DaskRef(ObjectRef[Any]):
    """An ``ObjectRef`` whose object is the Dask key ``key``.

    It pickles with its key, so wherever it is unpickled inside the same Dask
    cluster it binds to a ``distributed.Future`` for that key (which keeps the
    object alive there: Dask's reference counting is fedexec's).
    """

    def __init__(self, ref_id: str, backend: Backend | None, task_name: str, key: str):
        super().__init__(ref_id, backend, task_name)
        self._key = key
        self._dask: distributed.Future[Any] | None = None
        self._keep: list[Any] = []  # refs inside a put value: borrowed while this lives
        # An actor call's result lives with the caller, not in Dask: this makes it a
        # Dask key when one is needed (``DaskBackend.ensure_key``).
        self._export: Callable[[DaskRef], distributed.Future[Any]] | None = None

    @property
    def key(self) -> str:
        """The Dask key holding the object."""
        return self._key

    def __reduce__(self) -> tuple[Any, ...]:
        serialization.note_contained(self)
        ensure = getattr(self._backend, "ensure_key", None)
        if ensure is not None:
            ensure(self)  # another process binds to the key: it must exist in Dask
        return (_rebuild_dask_ref, (self._id, self._key))


def _rebuild_dask_ref(ref_id: str, key: str) -> ObjectRef[Any]:
    backend = current_backend()
    bind = getattr(backend, "bind_ref", None)
    if bind is not None:
        ref: ObjectRef[Any] = bind(ref_id, key)
        return ref
    if backend is None:
        return ObjectRef(ref_id, None)
    return backend.resolve_ref(ref_id)


# --------------------------------------------------------------------------- completing
def cancel_ref(ref: ObjectRef[Any]) -> bool:
    """PENDING -> CANCELLED_AND_NOTIFIED, with ``cf.wait`` waiters notified (as an
    executor does); True if ``ref`` is cancelled now or was already, False if it
    runs or is done. ``_cancel_now`` takes both steps under the ref's lock: the
    ref must not be notified again (the stdlib logs that as CRITICAL)."""
    return ref._cancel_now()


def dask_error(exc: BaseException, name: str) -> BaseException:
    """The fedexec error for an exception a Dask future holds."""
    if isinstance(exc, Raised):
        try:
            return exc.error()
        except Exception as err:  # its class cannot be imported here
            return TaskError.from_exception(err, str(exc), name)
    if isinstance(exc, FedexecError):
        return exc
    if isinstance(exc, cf.CancelledError):
        return TaskCancelledError(f"task {name!r} was cancelled")
    # Dask's own failure (e.g. the task could not be deserialized on the worker).
    return TaskError.from_exception(exc, execution.remote_traceback(exc, 0), name)


# --------------------------------------------------------------------------- names
_UNSAFE = re.compile(r"[^A-Za-z0-9_.<>]+")


def dask_key(name: str, ref_id: str) -> str:
    """The Dask key for ``ref_id``: ``"<name>-<id>"``, so Dask's dashboard groups
    tasks by function name."""
    return f"{_UNSAFE.sub('_', name)[:60] or 'task'}-{ref_id}"


def node_id_of(scheduler_address: str, worker_name: Any) -> str:
    """The fedexec node id of a Dask worker: stable across restarts of the worker
    process by its nanny (the worker's name is), unique across clusters."""
    raw = f"{scheduler_address}|{worker_name}".encode()
    return hashlib.sha1(raw).hexdigest()[:28]
