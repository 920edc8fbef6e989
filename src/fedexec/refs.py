"""``ObjectRef``: a genuine ``concurrent.futures.Future`` naming an object.

A ref is created by ``submit``/``put``/an actor call, completed by its backend
through the public ``Future`` transitions only (``set_running_or_notify_cancel``,
``set_result``, ``set_exception``), and so works with ``concurrent.futures.wait``,
``as_completed`` and ``asyncio``. On top of the ``Future`` contract:

* refs are hashable and compare by ``id``;
* ``result()`` raises :class:`GetTimeoutError` on timeout and
  :class:`TaskCancelledError` for a cancelled task (subclasses of the stdlib's);
* a backend may complete a ref with a :class:`LazyValue` (e.g. a view into its
  object store): ``result()`` then loads it on every call, so an object that is
  only passed on to other tasks is never deserialized in the driver;
* pickling a ref records it in the enclosing serialization (borrowing), and
  unpickling binds it to the runtime that holds the object.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from . import serialization
from ._runtime import current_backend
from .exceptions import GetTimeoutError, ObjectLostError, TaskCancelledError

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = ["LazyValue", "ObjectRef"]

T = TypeVar("T")

_FINISHED = cf._base.FINISHED
_CANCELLED_STATES = (cf._base.CANCELLED, cf._base.CANCELLED_AND_NOTIFIED)


class LazyValue:
    """Base of values a backend completes a ref with but loads only on ``result()``."""

    __slots__ = ()

    def load(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class ObjectRef(cf.Future, Generic[T]):  # type: ignore[type-arg]
    """A reference to an object (a task's result or a ``put`` value).

    Use it as a ``concurrent.futures.Future`` (``result``, ``done``,
    ``add_done_callback``, ``cf.wait``, ``as_completed``), await it in asyncio,
    or pass it to other tasks: passed directly as an argument it is replaced by its
    value before the task runs; nested in a container it stays a ref.
    """

    def __init__(self, ref_id: str, backend: Backend | None = None, task_name: str = ""):
        super().__init__()
        self._id = ref_id
        self._backend = backend
        self._task_name = task_name

    @property
    def id(self) -> str:
        """The object's id, a hex string unique in the cluster."""
        return self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ObjectRef):
            return self._id == other._id
        return NotImplemented

    def __repr__(self) -> str:
        return f"ObjectRef({self._id}, {self._state.lower()})"

    # -- results --------------------------------------------------------------
    def result(self, timeout: float | None = None) -> T:
        """The object's value, waiting up to ``timeout`` seconds.

        Raises:
            GetTimeoutError: not ready within ``timeout``.
            TaskCancelledError: the task was cancelled.
            TaskError: the task raised (also an instance of the original class).
        """
        if self._state == _FINISHED and self._exception is None:
            value = self._result
        else:
            value = self._wait_result(timeout)
        if isinstance(value, LazyValue):
            return cast(T, value.load())
        return cast(T, value)

    def _wait_result(self, timeout: float | None) -> Any:
        try:
            if self._state == _FINISHED or self._state in _CANCELLED_STATES:
                return super().result(0)
            backend = self._backend
            if backend is None:
                raise _unbound(self)
            start = time.monotonic()
            with backend.blocked((self,), timeout):
                return super().result(_left(timeout, start))
        except TaskCancelledError:
            raise
        except cf.CancelledError:
            raise TaskCancelledError(f"{self!r} was cancelled before it finished") from None
        except TimeoutError:
            if self._state == _FINISHED:
                raise
            raise GetTimeoutError(
                f"{self!r} was not ready within {timeout} s; it is still running or queued"
            ) from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception (None if it succeeded), waiting up to ``timeout``."""
        try:
            if self._state != _FINISHED and self._state not in _CANCELLED_STATES:
                backend = self._backend
                if backend is None:
                    raise _unbound(self)
                start = time.monotonic()
                with backend.blocked((self,), timeout):
                    return super().exception(_left(timeout, start))
            return super().exception(0)
        except TaskCancelledError:
            raise
        except cf.CancelledError:
            raise TaskCancelledError(f"{self!r} was cancelled before it finished") from None
        except TimeoutError:
            raise GetTimeoutError(f"{self!r} was not ready within {timeout} s") from None

    def cancel(self) -> bool:
        """Cancel the task if it has not started yet (stdlib semantics).

        Returns True if it is now cancelled. To interrupt a running task use
        ``executor.cancel(ref)`` / ``fedexec.cancel(ref)``.
        """
        if self._state != cf._base.PENDING:
            return self._state in _CANCELLED_STATES
        backend = self._backend
        if backend is None:
            return super().cancel()
        return backend.cancel_pending(self)

    def add_done_callback(self, fn: Any) -> None:
        """As ``Future.add_done_callback``; also tells the backend someone waits."""
        backend = self._backend
        if backend is not None and self._state == "PENDING":
            backend.flush()
        super().add_done_callback(fn)

    def _cancel_now(self) -> bool:
        """For backends: PENDING -> CANCELLED -> CANCELLED_AND_NOTIFIED, as the stdlib
        pools do when they reach a cancelled item (the second step is what wakes
        ``concurrent.futures.wait`` and ``as_completed``)."""
        with self._condition:  # reentrant: both steps happen as one
            if self._state != cf._base.PENDING:
                return self._state in _CANCELLED_STATES
            super().cancel()
            self.set_running_or_notify_cancel()
        return True

    def __await__(self) -> Generator[Any, None, T]:
        import asyncio  # not at import time: it costs ~20 ms

        return asyncio.wrap_future(self).__await__()

    # -- pickling ---------------------------------------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        serialization.note_contained(self)
        escaping = getattr(self._backend, "ref_escaping", None)
        if escaping is not None:
            escaping(self)
        return (_rebuild_ref, (self._id,))

    def __del__(self) -> None:
        backend = self._backend
        if backend is not None and backend.tracks_refs:
            try:
                backend.ref_released(self)
            except Exception:  # interpreter shutdown: nothing to tell any more
                pass

    def __copy__(self) -> ObjectRef[T]:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ObjectRef[T]:
        return self


def _left(timeout: float | None, start: float) -> float | None:
    """What remains of ``timeout`` seconds counted from ``start``."""
    return None if timeout is None else max(0.0, timeout - (time.monotonic() - start))


def _unbound(ref: ObjectRef[Any]) -> ObjectLostError:
    return ObjectLostError(
        f"{ref!r} is not bound to a running fedexec runtime (it was unpickled outside "
        "any executor, or its executor was shut down); get it through the executor "
        "that created it"
    )


def _rebuild_ref(ref_id: str) -> ObjectRef[Any]:
    backend = current_backend()
    if backend is None:
        return ObjectRef(ref_id, None)
    return backend.resolve_ref(ref_id)
