"""Which fedexec executor Modin's tasks go to, and the engine's initialisation.

State (``_lock`` guards it):
    _pinned   the executor given to :func:`set_executor`, or None. When None (or
              after that executor was shut down) Modin uses the current executor:
              inside a task the runtime running it, else the process-wide default
              one, created by ``fedexec.init()`` on first use.
"""

from __future__ import annotations

import threading

from modin.config import CpuCount, NPartitions

from fedexec import Executor, current_executor
from fedexec.util import inside_task

__all__ = ["get_executor", "initialize_fedexec", "set_executor"]

_lock = threading.Lock()
_pinned: Executor | None = None


def set_executor(executor: Executor | None) -> None:
    """Run Modin's tasks on ``executor`` (None: back to the current default executor).

    Call it before ``modin.config.Engine.put("Fedexec")`` so that the engine sizes
    its partitioning to that executor's CPUs. Frames created on one executor keep
    their data there: do not use them after that executor is shut down.
    """
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be a fedexec.Executor or None, got {executor!r}")
    global _pinned
    with _lock:
        _pinned = executor


def get_executor() -> Executor:
    """The executor Modin's tasks run on now: the runtime of the task this code runs
    in, else the one given to :func:`set_executor` (while it is not shut down), else
    the default executor (``fedexec.init()`` with its defaults if there is none)."""
    pinned = _pinned
    if pinned is not None and not inside_task() and not pinned.is_shutdown:
        return pinned
    return current_executor()


def initialize_fedexec() -> None:
    """Initialise the engine (Modin's factory calls this when ``Engine`` becomes
    ``"Fedexec"``): make sure an executor exists and, unless the user set them, size
    ``modin.config.NPartitions`` and ``CpuCount`` to the cluster's CPUs."""
    executor = get_executor()
    cpus = max(int(executor.cluster_resources().get("CPU", 1)), 1)
    NPartitions._put(cpus)
    CpuCount._put(cpus)
