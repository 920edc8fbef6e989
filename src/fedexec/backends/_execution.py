"""Helpers every backend uses to run a task body the same way: resolving the
top-level ref arguments, splitting ``num_returns`` results, deciding retries,
and wrapping the user's exception into a :class:`TaskError`."""

from __future__ import annotations

import ctypes
import traceback
from typing import Any

from .. import serialization
from ..exceptions import SerializationError, TaskError
from ..options import TaskOptions
from ..refs import ObjectRef

__all__ = [
    "interrupt_thread",
    "remote_traceback",
    "resolve_args",
    "serialize_call",
    "should_retry",
    "split_returns",
    "top_level_refs",
]


def top_level_refs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[ObjectRef[Any]]:
    """Refs passed directly as arguments (resolved to values before the call)."""
    deps = [a for a in args if isinstance(a, ObjectRef)]
    deps.extend(v for v in kwargs.values() if isinstance(v, ObjectRef))
    return deps


def resolve_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Replace top-level refs (all finished) by their values; nested refs stay refs."""
    out_args = [a.result() if isinstance(a, ObjectRef) else a for a in args]
    out_kwargs = {k: v.result() if isinstance(v, ObjectRef) else v for k, v in kwargs.items()}
    return out_args, out_kwargs


def serialize_call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[
        serialization.Serialized, serialization.Serialized]:
    """Pickle a call's function and arguments; the error names what failed and where."""
    name = getattr(fn, "__qualname__", repr(fn))
    fn_blob = serialization.dumps(fn, what=f"function {name!r}")
    try:
        call_blob = serialization.dumps((args, kwargs))
    except SerializationError:
        serialization.dumps(args, what="args")  # raises, naming args[i]...
        serialization.dumps(kwargs, what="kwargs")
        raise
    return fn_blob, call_blob


def split_returns(value: Any, num_returns: int, name: str) -> list[Any]:
    """The ``num_returns`` values of a task (``ValueError`` if the count is wrong)."""
    if num_returns == 1:
        return [value]
    try:
        values = list(value)
    except TypeError:
        raise ValueError(
            f"task {name!r} has num_returns={num_returns} but returned a "
            f"non-iterable {type(value).__name__}"
        ) from None
    if len(values) != num_returns:
        raise ValueError(
            f"task {name!r} has num_returns={num_returns} but returned {len(values)} values"
        )
    return values


def should_retry(exc: BaseException, options: TaskOptions, retries_left: int) -> bool:
    """Retry a task that raised ``exc``? (``retry_exceptions`` and retries left)."""
    if retries_left == 0 or not options.retry_exceptions:
        return False
    if options.retry_exceptions is True:
        return isinstance(exc, Exception)
    return isinstance(exc, options.retry_exceptions)


def remote_traceback(exc: BaseException, skip: int = 1) -> str:
    """The traceback of ``exc`` without the runtime's own ``skip`` outer frames."""
    tb = exc.__traceback__
    for _ in range(skip):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def wrap_exception(exc: BaseException, name: str, skip: int = 1) -> TaskError:
    """The :class:`TaskError` that ``get`` raises for a task that raised ``exc``."""
    return TaskError.from_exception(exc, remote_traceback(exc, skip), name)


def interrupt_thread(ident: int, exc_type: type[BaseException] | None) -> bool:
    """Raise ``exc_type`` asynchronously in thread ``ident`` (None clears a pending one).

    Delivered when the thread next runs Python bytecode (not inside a blocking C call).
    """
    obj = ctypes.py_object(exc_type) if exc_type is not None else ctypes.c_void_p(0)
    n = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), obj)
    return n == 1
