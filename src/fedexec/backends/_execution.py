"""Helpers every backend uses to run a task the same way: waiting for and
resolving its top-level ref arguments, letting a cancel interrupt its call,
splitting ``num_returns`` results, deciding retries, wrapping the user's
exception into a :class:`TaskError`, and completing its refs."""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle

from .. import serialization
from ..exceptions import SerializationError, TaskError
from ..options import TaskOptions
from ..refs import ObjectRef

__all__ = [
    "Interruptible",
    "dependency_error",
    "dump_retry",
    "interrupt_thread",
    "load_retry",
    "mark_running",
    "remote_traceback",
    "resolve_args",
    "serialize_call",
    "settle",
    "should_retry",
    "split_returns",
    "top_level_refs",
    "when_done",
    "wrap_exception",
]

_PENDING = cf._base.PENDING


def top_level_refs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[ObjectRef[Any]]:
    """Refs passed directly as arguments (resolved to values before the call)."""
    deps = [a for a in args if isinstance(a, ObjectRef)]
    deps.extend(v for v in kwargs.values() if isinstance(v, ObjectRef))
    return deps


def when_done(refs: Iterable[ObjectRef[Any]], callback: Callable[[], None]) -> None:
    """Call ``callback()`` once every ref of ``refs`` is done: now if they all are,
    else on the thread that completes the last of them."""
    pending = [r for r in refs if not r.done()]
    if not pending:
        callback()
        return
    left = [len(pending)]
    lock = threading.Lock()

    def one_done(_: Any) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            callback()

    for r in pending:
        r.add_done_callback(one_done)


def dependency_error(deps: Iterable[ObjectRef[Any]]) -> BaseException | None:
    """What ``get`` raises for the first of ``deps`` (all done) that failed or was
    cancelled: the error a task waiting for them fails with. None if none did."""
    for d in deps:
        if d.cancelled() or d._exception is not None:
            try:
                d.result(0)
            except BaseException as exc:
                return exc
    return None


def resolve_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Replace top-level refs (all finished) by their values; nested refs stay refs."""
    out_args = [a.result() if isinstance(a, ObjectRef) else a for a in args]
    out_kwargs = {k: v.result() if isinstance(v, ObjectRef) else v for k, v in kwargs.items()}
    return out_args, out_kwargs


def serialize_call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                   out_of_band: bool = True) -> tuple[
        serialization.Serialized, serialization.Serialized]:
    """Pickle a call's function and arguments (large buffers out of band unless
    ``out_of_band=False``); the error names what failed and where."""
    name = getattr(fn, "__qualname__", repr(fn))
    fn_blob = serialization.dumps(fn, what=f"function {name!r}", out_of_band=out_of_band)
    try:
        call_blob = serialization.dumps((args, kwargs), out_of_band=out_of_band)
    except SerializationError:
        serialization.dumps(args, what="args", out_of_band=out_of_band)  # raises, naming args[i]
        serialization.dumps(kwargs, what="kwargs", out_of_band=out_of_band)
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


def dump_retry(retry_exceptions: bool | tuple[type[BaseException], ...]) -> bool | bytes:
    """``retry_exceptions`` as a task spec carries it to a worker: a bool as is,
    exception types cloudpickled (they may be classes of the user's ``__main__``)."""
    if isinstance(retry_exceptions, bool):
        return retry_exceptions
    packed: bytes = cloudpickle.dumps(retry_exceptions)
    return packed


def load_retry(packed: bool | bytes) -> TaskOptions:
    """The options :func:`should_retry` reads, from what :func:`dump_retry` made."""
    retry = packed if isinstance(packed, bool) else cloudpickle.loads(packed)
    return TaskOptions(retry_exceptions=retry)


def should_retry(exc: BaseException, options: TaskOptions, retries_left: int) -> bool:
    """Retry a task that raised ``exc``? (``retry_exceptions`` and retries left)."""
    retry = options.retry_exceptions
    if retries_left == 0 or not retry:
        return False
    if isinstance(retry, bool):  # True
        return isinstance(exc, Exception)
    return isinstance(exc, retry)


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


class Interruptible:
    """``with Interruptible(state, lock, thread): fn(...)``: the call a cancel may
    interrupt.

    ``state`` is the running task's record (``cancel_requested``, ``interruptible``,
    both changed under ``lock``). The canceller sets ``cancel_requested`` and, only
    while ``interruptible`` is set, raises ``KeyboardInterrupt`` in the task's
    thread; a cancel that came first raises it on entry. On exit an interrupt that
    came too late is dropped from ``thread`` (None: none is delivered that way).
    """

    __slots__ = ("lock", "state", "thread")

    def __init__(self, state: Any, lock: Any, thread: int | None):
        self.state = state
        self.lock = lock
        self.thread = thread

    def __enter__(self) -> None:
        with self.lock:
            if self.state.cancel_requested:
                raise KeyboardInterrupt
            self.state.interruptible = True

    def __exit__(self, *exc_info: Any) -> None:
        with self.lock:
            self.state.interruptible = False
        if self.thread is not None:
            interrupt_thread(self.thread, None)


def mark_running(ref: ObjectRef[Any]) -> bool:
    """PENDING -> RUNNING, checked and done under the ref's lock (a cancel on another
    thread cannot come in between: notifying a cancelled ref again is what the
    stdlib logs as CRITICAL "Future in unexpected state"); True if it runs now."""
    with ref._condition:
        if ref._state == _PENDING:
            return ref.set_running_or_notify_cancel()
        return ref._state == cf._base.RUNNING


def settle(ref: ObjectRef[Any], value: Any = None, error: BaseException | None = None) -> None:
    """Complete ``ref`` through the public Future transitions (a no-op if done or
    cancelled)."""
    try:
        if not mark_running(ref):
            return
        if error is not None:
            ref.set_exception(error)
        else:
            ref.set_result(value)
    except (cf.InvalidStateError, RuntimeError):  # completed by another thread meanwhile
        pass


def interrupt_thread(ident: int, exc_type: type[BaseException] | None) -> bool:
    """Raise ``exc_type`` asynchronously in thread ``ident`` (None clears a pending one).

    Delivered when the thread next runs Python bytecode (not inside a blocking C call).
    """
    obj = ctypes.py_object(exc_type) if exc_type is not None else ctypes.c_void_p(0)
    n: int = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), obj)
    return n == 1
