"""The driver's state as the parts of :class:`~._backend.SparkBackend` share it.

``SparkBackend`` is made of parts: the task lifecycle and the public methods
(``_backend``), the lease handlers (``_handlers``, channel thread) and the
dispatcher (``_dispatcher``, its own thread). :class:`DriverState` is their
common base: it declares the state they work on (set in
``SparkBackend.__init__``, described in ``_backend``'s docstring) and the methods
one part calls on another, so that each part is type-checked against them. It
adds nothing at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import SparkBase

if TYPE_CHECKING:
    import collections
    import threading
    import weakref

    from pyspark import SparkContext

    from ...options import TaskOptions
    from ...refs import ObjectRef
    from .._scheduling import ResourcePool, Scheduler
    from ._leases import Launcher, LeaseRecord
    from ._tasks import Task
    from ._values import Stored

__all__ = ["DriverState"]


class DriverState(SparkBase):
    """Base of the parts of ``SparkBackend``: what they share (see the module
    docstring). Everything but ``sc`` and the ids is changed under ``_lock``."""

    # -- set once, in SparkBackend.__init__
    sc: SparkContext
    local: bool  # Spark runs tasks in the driver's JVM (local[N])
    uid: str
    job_id: str
    app_id: str
    node_id: str
    slots: int  # Spark task slots: at most this many leases
    linger: float  # seconds an idle lease waits for work
    _authkey: bytes
    _address: tuple[str, int]  # where leases connect
    _initializer: bytes | None  # cloudpickled (initializer, initargs)
    _launcher: Launcher

    # -- the state (see _backend's docstring)
    _lock: threading.RLock
    _wake: threading.Condition  # wakes the dispatcher
    _pool: ResourcePool
    _scheduler: Scheduler
    _tasks: dict[str, Task]
    _refs: weakref.WeakValueDictionary[str, ObjectRef[Any]]
    _unassigned: collections.deque[Task]
    _leases: dict[str, LeaseRecord]
    _idle_leases: list[LeaseRecord]
    _broadcasts: weakref.WeakSet[Stored]
    _dropped: collections.deque[Any]  # Spark broadcasts to destroy
    _wanted: bool
    _stopping: bool
    _broken: str | None
    _launch_failures: int
    _starved_warned: bool

    if TYPE_CHECKING:  # what one part calls on another (defined in the parts)
        # _backend: the task lifecycle
        def _check_submit(self, options: TaskOptions, name: str) -> None: ...

        def _create_task(self, name: str, fn: bytes, call: bytes, deps: list[ObjectRef[Any]],
                         keep: list[Any], options: TaskOptions, parent: Task | None,
                         ref_ids: list[str] | None) -> list[ObjectRef[Any]]: ...

        def _schedule(self) -> None: ...

        def _fits(self, task: Task, lease: LeaseRecord) -> bool: ...

        def _assign_idle(self) -> list[tuple[LeaseRecord, Task]]: ...

        def _send_assignments(self, sends: list[tuple[LeaseRecord, Task]]) -> None: ...

        def _release(self, task: Task) -> None: ...

        def _park(self, lease: LeaseRecord) -> None: ...

        def _broken_message(self) -> str: ...

        def _finish(self, task: Task, values: list[Any] | None = None,
                    error: BaseException | None = None) -> None: ...

        def _known_ref(self, ref_id: str) -> ObjectRef[Any]: ...

        # _dispatcher
        def _want(self) -> None: ...
