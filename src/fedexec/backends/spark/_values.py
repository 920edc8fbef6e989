"""Values as the spark backend holds them: pickled once, unpickled on each use.

A ref of this backend is completed with a :class:`Stored` (the pickled bytes,
in band) on the driver, or, inside a lease, with a :class:`Stored`, a
:class:`Fetched` (a large value read from the driver on first use) or a
:class:`Broadcasted` (a large argument read from a Spark broadcast). Each
``result()`` unpickles a fresh copy, as pickle would give it, with the refs
inside bound to the runtime that holds the value.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

import cloudpickle

from ... import serialization
from ..._runtime import resolving
from ...exceptions import SerializationError, TaskError
from ...refs import LazyValue

if TYPE_CHECKING:
    from ..base import Backend

__all__ = [
    "Broadcasted",
    "Fetched",
    "Stored",
    "dump_error",
    "dump_value",
    "load_error",
    "serialize_call",
]


class Stored(LazyValue):
    """A value held pickled; ``keep`` holds the refs inside it alive meanwhile."""

    __slots__ = ("__weakref__", "backend", "broadcast", "broadcast_id", "data", "keep")

    def __init__(self, data: bytes, backend: Backend, keep: list[Any] | None = None):
        self.data = data
        self.backend = backend
        self.keep = keep or []
        self.broadcast: Any = None  # the Spark broadcast of ``data``, once made
        self.broadcast_id: int | None = None

    def load(self) -> Any:
        with resolving(self.backend):
            return serialization.loads(self.data)


class Fetched(LazyValue):
    """A large value that stays on the driver until a task reads it."""

    __slots__ = ("backend", "data", "ref_id")

    def __init__(self, backend: Any, ref_id: str):
        self.backend = backend
        self.ref_id = ref_id
        self.data: bytes | None = None

    def load(self) -> Any:
        if self.data is None:
            self.data = self.backend.fetch(self.ref_id)
        with resolving(self.backend):
            return serialization.loads(self.data)


class Broadcasted(LazyValue):
    """An argument read from a Spark broadcast variable (on a Spark executor)."""

    __slots__ = ("backend", "broadcast")

    def __init__(self, backend: Backend, broadcast: Any):
        self.backend = backend
        self.broadcast = broadcast

    def load(self) -> Any:
        with resolving(self.backend):
            return serialization.loads(self.broadcast.value)


def dump_value(value: Any, what: str) -> tuple[bytes, list[Any]]:
    """Pickle ``value`` in band; also return the refs found inside it.

    Raises:
        SerializationError: naming what cannot be pickled, and where.
    """
    s = serialization.dumps(value, what=what, out_of_band=False)
    return s.data, s.contained


def serialize_call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
                   ) -> tuple[bytes, serialization.Serialized]:
    """Pickle a call's function and its arguments (in band); the error names what
    failed and where, as ``_execution.serialize_call``'s does."""
    name = getattr(fn, "__qualname__", repr(fn))
    fn_data, _ = dump_value(fn, f"function {name!r}")
    try:
        call = serialization.dumps((args, kwargs), out_of_band=False)
    except SerializationError:
        dump_value(args, "args")  # raises, naming args[i]...
        dump_value(kwargs, "kwargs")
        raise
    return fn_data, call


def dump_error(error: BaseException) -> bytes:
    """Pickle an exception to send it to the other side (a stand-in if it won't)."""
    try:
        data: bytes = cloudpickle.dumps(error)
    except Exception as exc:
        text = f"{type(error).__name__}: {error}"
        stand_in = TaskError.from_exception(
            RuntimeError(f"{text} (the exception itself could not be pickled: {exc})"),
            getattr(error, "traceback_str", ""), getattr(error, "task_name", ""))
        data = cloudpickle.dumps(stand_in)
    return data


def load_error(data: bytes, name: str) -> BaseException:
    """The exception :func:`dump_error` pickled (a ``TaskError`` if it won't load)."""
    try:
        error = pickle.loads(data)
    except Exception as exc:
        return TaskError.from_exception(
            RuntimeError(f"the error of task {name!r} could not be unpickled here: {exc}"),
            "", name)
    if not isinstance(error, BaseException):
        return TaskError.from_exception(RuntimeError(repr(error)), "", name)
    return error
