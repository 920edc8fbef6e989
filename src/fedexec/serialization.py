"""Serialization: cloudpickle with pickle protocol 5 and out-of-band buffers.

``dumps`` turns a value into a :class:`Serialized`: the pickle stream, the large
buffers it refers to (numpy arrays, bytes, arrow buffers: kept out of band so a
store can place them in shared memory and readers get zero-copy views), and the
``ObjectRef``/actor handles met on the way (the caller keeps those alive while the
bytes exist: that is how a ref nested in an argument is "borrowed").

When pickling fails, :func:`dumps` raises :class:`SerializationError` naming the
offending object and its path, e.g. ``args[1]['db'] (closure variable 'lock')``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import pickle
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from .exceptions import SerializationError

__all__ = ["Serialized", "dumps", "loads"]

#: Buffers smaller than this stay inside the pickle stream (copying is cheaper
#: than bookkeeping for them).
OUT_OF_BAND_THRESHOLD = 64 * 1024

_local = threading.local()


@dataclass(slots=True)
class Serialized:
    """A pickled value: ``data`` (the stream), ``buffers`` (out-of-band), and the
    refs and actor handles it contains."""

    data: bytes
    buffers: list[Any] = field(default_factory=list)
    contained: list[Any] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Total size in bytes of the stream and its buffers."""
        return len(self.data) + sum(memoryview(b).nbytes for b in self.buffers)


def note_contained(obj: Any) -> None:
    """Called by ``ObjectRef``/``ActorHandle`` ``__reduce__``: record ``obj`` in the
    value being serialized, if any."""
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(obj)


@contextlib.contextmanager
def _collecting() -> Iterator[list[Any]]:
    previous = getattr(_local, "sink", None)
    sink: list[Any] = []
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = previous


def dumps(obj: Any, *, what: str = "value", out_of_band: bool = True) -> Serialized:
    """Pickle ``obj`` (functions and classes by value where needed).

    Args:
        obj: the value.
        what: how to name ``obj`` in an error message (``"args"``, ``"return value"``).
        out_of_band: keep large buffers out of the stream.

    Raises:
        SerializationError: ``obj`` (or something inside it) cannot be pickled.
    """
    buffers: list[Any] = []

    def keep(buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()
        if raw.nbytes < OUT_OF_BAND_THRESHOLD:
            return True  # in band
        buffers.append(raw)
        return False

    with _collecting() as contained:
        try:
            data = cloudpickle.dumps(obj, protocol=5, buffer_callback=keep if out_of_band else None)
        except Exception as exc:
            raise _explain(obj, what, exc) from exc
    return Serialized(data, buffers, contained)


def loads(data: bytes | memoryview, buffers: list[Any] | tuple[Any, ...] = ()) -> Any:
    """Unpickle what :func:`dumps` made (``buffers`` in the same order).

    Safe while other threads import: a class or function whose module is not
    imported yet is imported only once its parent packages are (see
    :class:`_Unpickler`).
    """
    return _Unpickler(io.BytesIO(data), buffers=buffers).load()


class _Unpickler(pickle.Unpickler):
    """Imports a pickled global's parent packages first, one by one, each waiting
    until any other thread importing it has finished.

    Plain unpickling imports ``pkg.mod`` without waiting for ``pkg`` when another
    thread is still running ``pkg/__init__``: the two threads then take the
    package's module locks in opposite orders, and Python breaks the deadlock by
    failing one import (a circular ImportError in one thread, ``KeyError: 'pkg'``
    in the other). Worker threads unpickling tasks and actor classes in a fresh
    process hit this (``fedexec.data.actor_pool`` beside a task importing
    ``fedexec.data``). Here the waits happen before this thread holds any import
    lock, so it cannot deadlock.
    """

    def find_class(self, module: str, name: str) -> Any:
        if module not in sys.modules:
            dot = module.find(".")
            while dot != -1:
                importlib.import_module(module[:dot])
                dot = module.find(".", dot + 1)
        return super().find_class(module, name)


# --------------------------------------------------------------------------- errors


def _explain(obj: Any, what: str, exc: BaseException) -> SerializationError:
    found = _find_unpicklable(obj, what, depth=0, seen=set())
    if found is None:
        path, culprit, error = what, obj, exc
    else:
        path, culprit, error = found
    shown = _short_repr(culprit)
    return SerializationError(
        f"cannot serialize {path}: {shown} ({type(error).__name__}: {error}). "
        "Values sent to or from tasks are pickled: pass picklable values, or create "
        "resources such as locks, sockets and files inside the task."
    )


def _short_repr(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= 120 else text[:117] + "..."


def _pickles(obj: Any) -> BaseException | None:
    try:
        cloudpickle.dumps(obj, protocol=5, buffer_callback=lambda b: False)
    except Exception as exc:
        return exc
    return None


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    """Parts of ``obj`` that pickling would recurse into, with their path suffix."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"[{k!r}]", v
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield f"[{i}]", v
    elif isinstance(obj, (set, frozenset)):
        for v in obj:
            yield f" (element {_short_repr(v)})", v
    elif isinstance(obj, types.FunctionType):
        code = obj.__code__
        for name, cell in zip(code.co_freevars, obj.__closure__ or ()):
            with contextlib.suppress(ValueError):  # empty cell
                yield f" (closure variable {name!r})", cell.cell_contents
        for name in code.co_names:
            if name in obj.__globals__:
                yield f" (global {name!r})", obj.__globals__[name]
        for i, v in enumerate(obj.__defaults__ or ()):
            yield f" (default #{i})", v
    elif isinstance(obj, types.MethodType):
        yield ".__self__", obj.__self__
        yield ".__func__", obj.__func__
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for k, v in vars(obj).items():
            yield f".{k}", v


def _find_unpicklable(
    obj: Any, path: str, depth: int, seen: set[int]
) -> tuple[str, Any, BaseException] | None:
    """The deepest part of ``obj`` that fails to pickle, with its path, or None."""
    if depth > 20 or id(obj) in seen:
        return None
    seen.add(id(obj))
    error = _pickles(obj)
    if error is None:
        return None
    for suffix, child in _children(obj):
        deeper = _find_unpicklable(child, path + suffix, depth + 1, seen)
        if deeper is not None:
            return deeper
    return path, obj, error
