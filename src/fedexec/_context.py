"""Which runtime the current code runs under.

Two context variables, no other state:

* the *task context*: set by a backend while it runs a task or an actor method,
  so ``fedexec.get/put/remote`` inside it talk to that runtime;
* the *resolver*: set by a backend while it unpickles, so refs and actor handles
  rebuilt from bytes bind to the runtime that holds them.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = ["RuntimeContext"]


@dataclass(frozen=True, slots=True)
class RuntimeContext:
    """What :func:`fedexec.get_runtime_context` returns: where this code runs.

    ``task_id`` and ``actor_id`` are None in the driver (and ``task_id`` in an
    actor's ``__init__``)."""

    node_id: str
    worker_id: str
    job_id: str
    task_id: str | None = None
    actor_id: str | None = None
    backend: str = ""


@dataclass(slots=True)
class TaskContext:
    """Set while a task or actor method runs (backend-private fields in ``extra``)."""

    backend: Backend
    executor: Any  # the fedexec.Executor facade for ``backend``
    runtime: RuntimeContext
    extra: Any = None


_task: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "fedexec_task", default=None
)
_resolver: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "fedexec_resolver", default=None
)


def current_task() -> TaskContext | None:
    """The task context of the running task, or None in a driver."""
    return _task.get()


@contextlib.contextmanager
def running_task(ctx: TaskContext) -> Iterator[TaskContext]:
    token = _task.set(ctx)
    try:
        yield ctx
    finally:
        _task.reset(token)


@contextlib.contextmanager
def resolving(backend: Backend) -> Iterator[None]:
    """Refs and handles unpickled inside this block bind to ``backend``."""
    token = _resolver.set(backend)
    try:
        yield
    finally:
        _resolver.reset(token)


def current_backend() -> Backend | None:
    """The backend that unpickled refs should bind to: the resolver, else the
    running task's, else the default executor's (if one exists)."""
    backend = _resolver.get()
    if backend is not None:
        return backend
    task = _task.get()
    if task is not None:
        return task.backend
    from .executor import _default_executor_if_any

    ex = _default_executor_if_any()
    return None if ex is None else ex._backend
