"""Which runtime the current code runs under: the bottom of the core.

This module imports nothing else of fedexec, so every other module may import it.
Its whole state::

    _task       context variable: the TaskContext of the task or actor method that
                runs in this thread/coroutine (set by a backend), else None
    _resolver   context variable: the backend that refs and actor handles unpickled
                right now bind to (set by a backend while it unpickles), else None
    _default    the process-wide default executor behind ``fedexec.get/put/...``
                (set by ``fedexec.init``; guarded by ``_default_lock``)

"The current executor" is the task's executor inside a task or actor, else the
default executor (``fedexec.executor.current_executor`` creates it on first use).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = ["RuntimeContext"]


@dataclass(frozen=True, slots=True)
class RuntimeContext:
    """What :func:`fedexec.get_runtime_context` returns: where the calling code runs.

    Attributes:
        node_id: the node (machine or node manager) running the code.
        worker_id: the worker process (``driver-<pid>`` in a driver).
        job_id: the job (driver) the code belongs to.
        task_id: the running task's id; None in a driver and in an actor.
        actor_id: the running actor's id; None outside actors.
        backend: the backend's name.
        node_ip_address: this node's address as the rest of the cluster sees it.
        gpu_ids: the GPUs given to the running task or actor (empty on CPU).
        namespace: the namespace named actors are looked up in by default.
    """

    node_id: str
    worker_id: str
    job_id: str
    task_id: str | None = None
    actor_id: str | None = None
    backend: str = ""
    node_ip_address: str = "127.0.0.1"
    gpu_ids: tuple[str, ...] = field(default_factory=tuple)
    namespace: str = "default"

    def get_node_id(self) -> str:
        """The id of the node running this code."""
        return self.node_id

    def get_node_ip_address(self) -> str:
        """This node's IP address as the cluster sees it."""
        return self.node_ip_address

    def get_worker_id(self) -> str:
        """The id of the worker process (or driver) running this code."""
        return self.worker_id

    def get_job_id(self) -> str:
        """The id of the job this code belongs to."""
        return self.job_id

    def get_task_id(self) -> str | None:
        """The running task's id (None in a driver or an actor)."""
        return self.task_id

    def get_actor_id(self) -> str | None:
        """The running actor's id (None outside actors)."""
        return self.actor_id

    def get_gpu_ids(self) -> list[str]:
        """The GPU ids given to the running task or actor (``[]`` on CPU or in a driver)."""
        return list(self.gpu_ids)


@dataclass(slots=True)
class TaskContext:
    """Set while a task or actor method runs (backend-private fields in ``extra``)."""

    backend: Backend
    runtime: RuntimeContext
    extra: Any = None


_task: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "fedexec_task", default=None
)
_resolver: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "fedexec_resolver", default=None
)
_default: Any = None  # the default fedexec.Executor, or None
_default_lock = threading.RLock()


def current_task() -> TaskContext | None:
    """The task context of the running task, or None in a driver."""
    return _task.get()


@contextlib.contextmanager
def running_task(ctx: TaskContext) -> Iterator[TaskContext]:
    """Run the block as the task described by ``ctx``."""
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


def default_executor() -> Any:
    """The default executor, or None if there is none."""
    return _default


def set_default_executor(executor: Any, *, expected: Any = None) -> bool:
    """Make ``executor`` the default if the default is ``expected`` (compare-and-set,
    under the lock); True if it was set."""
    global _default
    with _default_lock:
        if _default is not expected:
            return False
        _default = executor
        return True


def forget_default_executor() -> None:
    """Drop the default executor without shutting it down (in a forked child, the
    parent's executor is not the child's to use)."""
    global _default
    _default = None


def default_lock() -> threading.RLock:
    """The lock that serialises creating and replacing the default executor."""
    return _default_lock


def current_backend() -> Backend | None:
    """The backend that unpickled refs should bind to: the resolver, else the
    running task's, else the default executor's (if one exists)."""
    backend = _resolver.get()
    if backend is not None:
        return backend
    task = _task.get()
    if task is not None:
        return task.backend
    ex = _default
    return None if ex is None else ex._backend  # type: ignore[no-any-return]
