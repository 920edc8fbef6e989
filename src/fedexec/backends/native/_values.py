"""How values travel in the native runtime: inline in messages when small, as a
shared-memory file when large; and how errors travel.

An *entry* is the wire form of one object: ``[obj_id, Kind, ...]`` (see
``protocol.Kind``). Drivers and workers encode and decode entries; the node
manager only stores and forwards them.
"""

from __future__ import annotations

import contextlib
import pickle
from typing import TYPE_CHECKING, Any

import cloudpickle

from ... import serialization
from ..._runtime import resolving
from ...exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    FedexecError,
    NodeDiedError,
    ObjectLostError,
    ObjectStoreFullError,
    OutOfMemoryError,
    RuntimeEnvSetupError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)
from ...refs import LazyValue
from .protocol import ErrorKind, Kind, decode_error
from .store import read_object

if TYPE_CHECKING:
    from .client import NativeBackend

__all__ = [
    "INLINE_MAX",
    "DepSlot",
    "decode",
    "encode",
    "error_of",
    "pickle_error",
    "reply_error",
]

#: Objects up to this size travel inside messages; larger ones go to shared memory.
INLINE_MAX = 100 * 1024


class DepSlot:
    """Stands for the i-th top-level ref argument inside a task's pickled arguments;
    the worker puts the argument's value there."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (DepSlot, (self.index,))


class InlineValue(LazyValue):
    """A small object held in this process as pickled bytes."""

    __slots__ = ("backend", "buffers", "data")

    def __init__(self, data: bytes, buffers: list[Any], backend: NativeBackend):
        self.data = data
        self.buffers = buffers
        self.backend = backend

    def load(self) -> Any:
        with resolving(self.backend):
            return serialization.loads(self.data, self.buffers)


class ShmValue(LazyValue):
    """A large object in this node's shared-memory store: every load maps the file
    read-only, so arrays come back as zero-copy views. ``keep()`` maps it once for
    good: the mapping outlives the file (and the runtime that removes it)."""

    __slots__ = ("backend", "kept", "obj_id", "path")

    def __init__(self, obj_id: str, path: str, backend: NativeBackend):
        self.obj_id = obj_id
        self.path = path
        self.backend = backend
        self.kept: tuple[Any, list[Any]] | None = None

    def _parts(self) -> tuple[Any, list[Any]]:
        """The pickle stream and buffers: from the kept mapping, the store's file,
        or (spilled meanwhile, or on another node) fetched to this node."""
        if self.kept is not None:
            return self.kept
        try:
            if not self.path:
                raise FileNotFoundError(self.obj_id)  # on another node: fetch it here
            return read_object(self.path)
        except FileNotFoundError:
            entry = self.backend.fetch(self.obj_id)
            if entry[1] == Kind.INLINE:
                return entry[2], entry[3]
            self.path = entry[2]
            return read_object(self.path)

    def keep(self) -> None:
        """If the object is in this node's store now, map it and hold the mapping
        (no copy), so it stays readable after the runtime stops and its store is
        removed. One spilled or on another node is not fetched for this."""
        if self.kept is None and self.path:
            with contextlib.suppress(FileNotFoundError):
                self.kept = read_object(self.path)

    def load(self) -> Any:
        data, buffers = self._parts()
        with resolving(self.backend):
            return serialization.loads(data, buffers)


_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes})


def encode(backend: NativeBackend, obj_id: str, value: Any, what: str) -> tuple[list[Any], Any]:
    """Serialize ``value`` as the entry of ``obj_id``; returns (entry, local LazyValue)."""
    if type(value) in _ATOMS and (type(value) not in (str, bytes) or len(value) < 4096):
        data = pickle.dumps(value, 5)  # a number or short string: the C pickler alone
        return [obj_id, Kind.INLINE, data, [], []], InlineValue(data, [], backend)
    blob = serialization.dumps(value, what=what)
    return encode_blob(backend, obj_id, blob)


def encode_blob(backend: NativeBackend, obj_id: str, blob: serialization.Serialized
                ) -> tuple[list[Any], Any]:
    """The entry for an already-pickled value (inline, or written to shared memory)."""
    contained = [r.id for r in blob.contained if hasattr(r, "result")]
    size = blob.nbytes
    if size <= INLINE_MAX or backend.remote_store:  # remote: the node stores it
        buffers = [bytes(b) for b in blob.buffers]
        return ([obj_id, Kind.INLINE, blob.data, buffers, contained],
                InlineValue(blob.data, buffers, backend))
    path = backend.write_shm(obj_id, blob)
    return [obj_id, Kind.SHM, path, size, contained], ShmValue(obj_id, path, backend)


def lazy(backend: NativeBackend, entry: list[Any]) -> Any:
    """The LazyValue for an INLINE, SHM or REMOTE entry (a REMOTE one is fetched to
    this node on first use)."""
    if entry[1] == Kind.INLINE:
        return InlineValue(entry[2], entry[3], backend)
    if entry[1] == Kind.REMOTE:
        return ShmValue(entry[0], "", backend)
    return ShmValue(entry[0], entry[2], backend)


def decode(backend: NativeBackend, entry: list[Any]) -> Any:
    """The value of an entry (raises the error an ERROR/FAILED entry carries)."""
    kind = entry[1]
    if kind in (Kind.INLINE, Kind.SHM, Kind.REMOTE):
        return lazy(backend, entry).load()
    raise error_of(entry)


_FAILED = {
    ErrorKind.WORKER_CRASHED: WorkerCrashedError,
    ErrorKind.ACTOR_DIED: ActorDiedError,
    ErrorKind.CANCELLED: TaskCancelledError,
    ErrorKind.OBJECT_LOST: ObjectLostError,
    ErrorKind.STORE_FULL: ObjectStoreFullError,
    ErrorKind.RUNTIME_ENV: RuntimeEnvSetupError,
    ErrorKind.NODE_DIED: NodeDiedError,
    ErrorKind.UNAVAILABLE: NodeDiedError,  # a hard NodeAffinity to a node that died
    ErrorKind.OUT_OF_MEMORY: OutOfMemoryError,
    ErrorKind.ACTOR_UNAVAILABLE: ActorUnavailableError,
    ErrorKind.INTERNAL: FedexecError,
}

def reply_error(value: Any) -> BaseException:
    """The exception an error REPLY's value stands for (``protocol.decode_error``:
    its type if allowed, else a :class:`FedexecError`)."""
    return decode_error(value)


def error_of(entry: list[Any]) -> BaseException:
    """The exception an ERROR or FAILED entry stands for."""
    if entry[1] == Kind.ERROR:
        try:
            return pickle.loads(entry[2])
        except Exception as exc:  # the error's class does not exist here
            return FedexecError(f"a task failed, and its error could not be unpickled: {exc}")
    cls = _FAILED.get(entry[2], FedexecError)
    return cls(entry[3])


def pickle_error(exc: BaseException) -> bytes:
    """Pickle an error for the wire; an unpicklable one becomes a TaskError that
    keeps its type name, message and traceback."""
    with contextlib.suppress(Exception):
        return cloudpickle.dumps(exc)
    tb = getattr(exc, "traceback_str", "")
    cause = getattr(exc, "cause", exc)
    fallback = RuntimeError(f"{type(cause).__name__}: {cause} (the original exception could "
                            "not be pickled)")
    return cloudpickle.dumps(TaskError.from_exception(fallback, tb,
                                                      getattr(exc, "task_name", "")))
