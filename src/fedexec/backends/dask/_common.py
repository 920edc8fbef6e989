"""What the driver and the Dask workers exchange: pickled values, task and actor
specs, and the ref type bound to a Dask future.

Everything here is imported on both sides (the driver and every Dask worker
process), so it holds data types and small pure helpers only.

Values in Dask's memory are never the user's objects themselves but
:class:`Blob` s (fedexec's own pickle of them): a consumer always gets a fresh
copy, exactly as pickle would give it, and an unpicklable value fails in the
task that made it, with its path. An actor call that failed stores a
:class:`Failed` instead of raising, so that the next call chained behind it (see
``_actors``) still runs.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from ... import serialization
from ..._context import current_backend, resolving
from ...refs import LazyValue, ObjectRef

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
    "TaskSpec",
    "dask_key",
    "node_id_of",
]


class Blob:
    """A value pickled by fedexec (cloudpickle, protocol 5, in band)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    @classmethod
    def of(cls, value: Any, what: str) -> tuple[Blob, list[Any]]:
        """Pickle ``value``; also return the refs and actor handles found inside."""
        s = serialization.dumps(value, what=what, out_of_band=False)
        return cls(s.data), s.contained

    def load(self, backend: Backend | None) -> Any:
        """A fresh copy of the value; refs inside bind to ``backend``."""
        if backend is None:
            return serialization.loads(self.data)
        with resolving(backend):
            return serialization.loads(self.data)

    def __sizeof__(self) -> int:  # what Dask's memory accounting sees
        return len(self.data) + 64

    def __reduce__(self) -> tuple[Any, ...]:
        return (Blob, (self.data,))


class Failed:
    """What an actor call stores in Dask when it failed: the error to raise."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (Failed, (self.error,))


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
                 "job", "lend", "restarts_left")

    def __init__(self, actor_id: str, cls: bytes, call: bytes, class_name: str,
                 is_async: bool, concurrency: int, restarts_left: int,
                 lend: dict[str, float], gen: int, job: Job):
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

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorSpec, (self.actor_id, self.cls, self.call, self.class_name,
                            self.is_async, self.concurrency, self.restarts_left, self.lend,
                            self.gen, self.job))


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


# --------------------------------------------------------------------------- refs
class DaskValue(LazyValue):
    """A finished ref's value: fetched from the cluster on the first ``result()``
    (so a value only passed on to other tasks never travels to the caller), then
    kept pickled here; every ``result()`` unpickles a fresh copy."""

    __slots__ = ("backend", "blob", "future")

    def __init__(self, backend: Backend, future: distributed.Future | None,
                 blob: Blob | None = None):
        self.backend = backend
        self.future = future
        self.blob = blob

    def fetch(self) -> Blob:
        blob = self.blob
        if blob is None:
            blob = self.future.result()  # type: ignore[union-attr]
            self.blob = blob
        return blob

    def load(self) -> Any:
        blob = self.fetch()
        if isinstance(blob, Failed):
            raise blob.error
        return blob.load(self.backend)


class DaskRef(ObjectRef):  # type: ignore[type-arg]
    """An ``ObjectRef`` whose object is the Dask key ``key``.

    It pickles with its key, so wherever it is unpickled inside the same Dask
    cluster it binds to a ``distributed.Future`` for that key (which keeps the
    object alive there: Dask's reference counting is fedexec's).
    """

    def __init__(self, ref_id: str, backend: Backend | None, task_name: str, key: str):
        super().__init__(ref_id, backend, task_name)
        self._key = key
        self._dask: distributed.Future | None = None

    @property
    def key(self) -> str:
        """The Dask key holding the object."""
        return self._key

    def __reduce__(self) -> tuple[Any, ...]:
        serialization.note_contained(self)
        return (_rebuild_dask_ref, (self._id, self._key))


def _rebuild_dask_ref(ref_id: str, key: str) -> ObjectRef[Any]:
    backend = current_backend()
    bind = getattr(backend, "bind_ref", None)
    if bind is not None:
        return bind(ref_id, key)  # type: ignore[no-any-return]
    if backend is None:
        return ObjectRef(ref_id, None)
    return backend.resolve_ref(ref_id)


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
