"""The error types of fedexec.

Every error fedexec raises derives from :class:`FedexecError`. Each docstring says
when the error happens and whose fault it is; each message says what to do next.
A task's own exception reaches the caller as a :class:`TaskError` that is *also*
an instance of the original exception's class, so ``except ValueError:`` works.
"""

from __future__ import annotations

import concurrent.futures as _cf
import threading
from typing import Any

__all__ = [
    "ActorDiedError",
    "ActorUnavailableError",
    "AuthenticationError",
    "BackendUnavailableError",
    "BrokenExecutorError",
    "ClusterConfigError",
    "ClusterUnreachableError",
    "FedexecError",
    "FrameTooLargeError",
    "GetTimeoutError",
    "NodeDiedError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "ProtocolError",
    "ProtocolVersionError",
    "RuntimeEnvSetupError",
    "SerializationError",
    "TaskCancelledError",
    "TaskError",
    "UnsupportedOnBackendError",
    "WorkerCrashedError",
]


class FedexecError(Exception):
    """Base class of every error raised by fedexec itself."""


class TaskError(FedexecError):
    """A task or actor method raised; ``get``/``result`` re-raise it.

    The user's code is at fault. ``cause`` is the original exception, ``str()``
    holds the remote traceback. The object raised is an instance of a subclass
    of both ``TaskError`` and the original exception's class (when that class can
    be subclassed), so ``except ValueError:`` catches a remote ``ValueError``.
    """

    def __init__(self, cause: BaseException, traceback_str: str = "", task_name: str = ""):
        # Not super(): in a dual class the MRO would reach the user's __init__.
        BaseException.__init__(self, cause, traceback_str, task_name)
        self.cause = cause
        self.traceback_str = traceback_str
        self.task_name = task_name

    def __str__(self) -> str:
        head = f"task {self.task_name!r} raised {type(self.cause).__name__}: {self.cause}"
        if self.traceback_str:
            return f"{head}\n\nRemote traceback:\n{self.traceback_str.rstrip()}"
        return head

    def __reduce__(self) -> tuple[Any, ...]:
        cause = self.cause
        attrs = dict(getattr(cause, "__dict__", {}))
        if isinstance(cause, OSError):
            attrs.update({f"__os_{n}": getattr(cause, n) for n in _OSERROR_SLOTS})
        state = (type(cause), cause.args, attrs)
        return (_rebuild_task_error, (state, self.traceback_str, self.task_name))

    @staticmethod
    def from_exception(
        cause: BaseException, traceback_str: str = "", task_name: str = ""
    ) -> TaskError:
        """Build the error to raise for ``cause``: a ``TaskError`` that is also a ``type(cause)``.

        A ``TaskError`` raised inside a task (a nested ``get`` failed) keeps its
        original cause; the tracebacks are chained so the whole path is shown.
        """
        if isinstance(cause, TaskError):
            tb = cause.traceback_str
            if traceback_str:
                tb = f"{tb.rstrip()}\n\nwhich then propagated in:\n{traceback_str}"
            cause, traceback_str = cause.cause, tb
        cls = _dual_class(type(cause))
        err: TaskError
        if cls is TaskError:
            err = TaskError(cause, traceback_str, task_name)
        else:
            try:
                err = cls.__new__(cls, *cause.args)
            except TypeError:
                err = cls.__new__(cls)
            try:
                err.__dict__.update(getattr(cause, "__dict__", {}))
            except (AttributeError, TypeError):  # pragma: no cover - exotic exceptions
                pass
            if isinstance(cause, OSError):  # errno/strerror/filename live in C slots
                _copy_oserror(cause, err)  # type: ignore[arg-type]
            TaskError.__init__(err, cause, traceback_str, task_name)
            err.args = cause.args
        err.__cause__ = cause
        return err


_OSERROR_SLOTS = ("errno", "strerror", "filename", "filename2")


def _copy_oserror(src: OSError, dst: OSError) -> None:
    OSError.__init__(dst, *src.args)
    for name in _OSERROR_SLOTS:
        if getattr(src, name) is not None:
            setattr(dst, name, getattr(src, name))


def _rebuild_task_error(
    state: tuple[type[BaseException], tuple[Any, ...], dict[str, Any]],
    traceback_str: str,
    task_name: str,
) -> TaskError:
    # Rebuild the cause without calling its __init__: user exceptions whose
    # __init__ takes other arguments than ``args`` do not survive plain pickling.
    exc_type, args, attrs = state
    cause = exc_type.__new__(exc_type, *args)
    cause.args = args
    if isinstance(cause, OSError):
        OSError.__init__(cause, *args)
        for name in _OSERROR_SLOTS:
            value = attrs.pop(f"__os_{name}", None)
            if value is not None:
                setattr(cause, name, value)
    try:
        cause.__dict__.update(attrs)
    except (AttributeError, TypeError):  # pragma: no cover - exotic exceptions
        pass
    return TaskError.from_exception(cause, traceback_str, task_name)


_dual_classes: dict[type, type] = {}
_dual_lock = threading.Lock()


def _dual_class(exc_type: type[BaseException]) -> type[TaskError]:
    """Return (and cache) ``class TaskError(<exc_type>)(TaskError, exc_type)``."""
    if issubclass(exc_type, TaskError) or not issubclass(exc_type, Exception):
        return TaskError
    with _dual_lock:
        cls = _dual_classes.get(exc_type)
        if cls is None:
            try:
                cls = type(
                    f"TaskError({exc_type.__name__})",
                    (TaskError, exc_type),
                    {
                        "__str__": TaskError.__str__,
                        "__reduce__": TaskError.__reduce__,
                        "__module__": __name__,
                    },
                )
            except TypeError:  # layout conflict or a final class
                cls = TaskError
            _dual_classes[exc_type] = cls
    return cls


class WorkerCrashedError(FedexecError):
    """The worker process running a task died (killed, segfault, ``os._exit``) and
    ``max_retries`` is exhausted. Usually the task's fault (memory, native crash);
    raise ``max_retries`` if the crash was transient."""


class ActorDiedError(FedexecError):
    """The actor is dead: killed, its ``__init__`` raised, or its process died with
    no restarts left. Create a new actor, or give it ``max_restarts``."""


class ActorUnavailableError(FedexecError):
    """The actor's node became unreachable while a call to it was in flight: the
    connection to that node broke (its process died, or the network failed) and the
    cluster has not (yet) declared the node dead. Nobody is at fault yet; the call
    may or may not have run. Retry it if running it twice is acceptable: the retry
    waits until the node is back (then it runs there) or declared dead (then it runs
    on the actor restarted elsewhere per ``max_restarts``, or raises
    :class:`ActorDiedError`). A node that goes silent without its connection
    breaking (stopped, partitioned) is not reported here: calls to it wait, and fail
    with ``ActorDiedError`` only if it is declared dead."""


class NodeDiedError(FedexecError):
    """A node of the cluster was lost while it held the work or data asked for."""


class ObjectLostError(FedexecError):
    """No copy of the object is left and it cannot be rebuilt from its lineage.
    Keep a reference to objects you still need, or allow task retries."""


class ObjectStoreFullError(FedexecError):
    """The object store and its spill space are full. Free references you no longer
    need, or start the runtime with a larger ``object_store_memory``."""


class OutOfMemoryError(FedexecError):
    """The memory monitor killed the task's worker: the node's memory use passed
    ``memory_usage_threshold`` and this was the most recently started task that
    could be retried (else the most recently started one), and ``max_retries`` was
    used up (each such kill uses one). Usually the workload's fault: run fewer such
    tasks at once (more ``num_cpus`` or ``memory`` per task), or raise the
    threshold. The message names the task, its worker and the memory in use."""


class GetTimeoutError(FedexecError, TimeoutError):
    """``get`` or ``result`` timed out before the value was ready. Also a
    ``TimeoutError`` and a ``concurrent.futures.TimeoutError``."""


if not issubclass(GetTimeoutError, _cf.TimeoutError):  # Python 3.10: a distinct class
    GetTimeoutError = type(  # type: ignore[misc,assignment]
        "GetTimeoutError", (FedexecError, TimeoutError, _cf.TimeoutError), {
            "__doc__": GetTimeoutError.__doc__, "__module__": __name__})


class TaskCancelledError(FedexecError, _cf.CancelledError):
    """The task was cancelled before it could finish (``cancel``, ``ref.cancel()``,
    or ``shutdown(cancel_futures=True)``). Also a ``concurrent.futures.CancelledError``."""


class RuntimeEnvSetupError(FedexecError):
    """The task's ``runtime_env`` could not be applied (a missing ``working_dir``,
    a module that does not exist). Fix the ``runtime_env`` option."""


class BackendUnavailableError(FedexecError):
    """The backend needs an optional dependency that is not installed. The message
    names the ``pip install "fedexec[...]"`` extra that brings it."""


class UnsupportedOnBackendError(FedexecError, NotImplementedError):
    """The feature does not exist on this backend. The message names the backends
    that have it."""


class SerializationError(FedexecError):
    """A function, argument or return value cannot be pickled. The message names the
    object and where it sits (``args[1]['key']``, a closure variable, ...).
    Pass something picklable, or create the resource inside the task."""


class AuthenticationError(FedexecError):
    """A peer failed the cluster-token check: a wrong or missing token. Pass
    ``token=`` or set ``FEDEXEC_TOKEN`` to the token of the cluster's head."""


class ProtocolError(FedexecError):
    """A peer broke the wire protocol of a fedexec connection (an op its role may not
    send, a malformed or oversized frame). The connection is closed; the message says
    which peer and what it sent. A fedexec bug, or a peer that is not fedexec."""


class FrameTooLargeError(ProtocolError, ValueError):
    """A frame (one write of messages) is over the connection's size limit. Sending:
    nothing was sent; pass large values through the object store (``put``) or raise
    the limit (``FEDEXEC_MAX_FRAME_BYTES``). Receiving: the peer announced it, the
    connection is closed before any of it is read. Also a ``ValueError``."""


class ProtocolVersionError(ProtocolError):
    """The two ends of a connection speak different fedexec protocol versions. The
    message names both; run the same fedexec version on every node, driver and
    worker of a cluster."""


class ClusterConfigError(FedexecError, ValueError):
    """A cluster config (``fedexec up cluster.yaml``) is invalid: the caller's fault.
    ``errors`` lists each problem as ``(key path, what is wrong and what is
    allowed)``; fix those keys. Also a ``ValueError``."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.errors: list[tuple[str, str]] = list(errors or [])


class ClusterUnreachableError(FedexecError, ConnectionError):
    """No runtime answers at the given address (nothing listening, a wrong host or
    port, or ``address="auto"`` with no cluster started on this machine)."""


class BrokenExecutorError(FedexecError, _cf.BrokenExecutor):
    """The executor can no longer run tasks: a worker's ``initializer`` failed, as
    in the stdlib pools. Create a new executor."""
