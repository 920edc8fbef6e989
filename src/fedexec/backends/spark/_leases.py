"""Leases as the driver sees them, and the Spark jobs that run them.

A lease is one Spark job of one partition whose task (``_worker.lease_partition``)
connects back to the driver and runs the fedexec tasks it is assigned until
the driver stops it. Each job runs in its own Spark job group, with
``interruptOnCancel``, so cancelling the group stops exactly that lease (its
Python worker is killed): that is how ``cancel(force=True)`` and shutdown stop
a lease that is stuck.

States of a :class:`LeaseRecord` (changed under the backend's lock)::

    starting ──Hello──▶ connected ──Idle──▶ idle ◀──Done── busy
        │                    │               │ Assign ──────▶ │
        └────────────────────┴───────────────┴────────────────┴──▶ ended
          (the job ended, the connection closed, Stop sent after the linger time)
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _protocol as msg
from ._worker import lease_partition

__all__ = ["Launcher", "LeaseRecord", "describe_error"]

logger = logging.getLogger(__name__)


class LeaseRecord:
    """One lease of an executor (see the module docstring)."""

    __slots__ = ("broadcast_ids", "group", "holds", "id", "idle_since", "launched_at", "peer",
                 "state", "task")

    def __init__(self, lease_id: str, group: str, broadcast_ids: frozenset[int]):
        self.id = lease_id
        self.group = group  # the Spark job group of its job
        self.broadcast_ids = broadcast_ids  # broadcasts its tasks can read
        self.state = "starting"
        self.peer: Any = None
        self.task: Any = None  # the task it runs now
        self.holds: list[Any] = []  # refs put by its worker outside any task
        self.idle_since = 0.0
        self.launched_at = time.monotonic()

    def __repr__(self) -> str:
        return f"<lease {self.id} {self.state}>"


class Launcher:
    """Starts lease jobs on a SparkContext, one thread each (a Spark job blocks the
    thread that runs it), and cancels them by job group."""

    def __init__(self, sc: Any, uid: str,
                 on_job_end: Callable[[LeaseRecord, BaseException | None], None]):
        self._sc = sc
        self._uid = uid
        self._on_job_end = on_job_end
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._running: dict[str, cf.Future[None]] = {}
        self.jobs_launched = 0
        self.groups: list[str] = []  # every job group used (for Spark's status tracker)
        # One partition holding one row: the input of every lease job.
        self._base = sc.parallelize([0], 1)
        self._pool = cf.ThreadPoolExecutor(max_workers=4096,
                                           thread_name_prefix=f"fedexec-spark-{uid}-job")

    def new_lease(self, broadcast_ids: frozenset[int]) -> LeaseRecord:
        """A lease record with a fresh id and job group (not launched yet)."""
        n = next(self._counter)
        lease_id = f"{self._uid}-{n}"
        return LeaseRecord(lease_id, f"fedexec-{lease_id}", broadcast_ids)

    def launch(self, lease: LeaseRecord, spec: msg.LeaseSpec, broadcasts: dict[int, Any]) -> None:
        """Run ``lease`` as a Spark job (returns at once)."""
        with self._lock:
            self.jobs_launched += 1
            self.groups.append(lease.group)
            self._running[lease.id] = self._pool.submit(self._run, lease, spec, broadcasts)

    def _run(self, lease: LeaseRecord, spec: msg.LeaseSpec, broadcasts: dict[int, Any]) -> None:
        error: BaseException | None = None
        try:
            self._sc.setJobGroup(lease.group, f"fedexec lease {lease.id}",
                                 interruptOnCancel=True)
            fn = functools.partial(lease_partition, spec, broadcasts)
            self._base.mapPartitions(fn).collect()
        except BaseException as exc:
            error = exc
        finally:
            with self._lock:
                self._running.pop(lease.id, None)
        try:
            self._on_job_end(lease, error)
        except Exception:  # the backend must hear of every job: log, never lose the thread
            logger.exception("fedexec spark: handling the end of lease %s failed", lease.id)

    def cancel(self, lease: LeaseRecord) -> None:
        """Cancel the lease's job (its Python worker is killed if it runs)."""
        with contextlib.suppress(Exception):  # the context may be stopped already
            self._sc.cancelJobGroup(lease.group)

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the running jobs to end, cancel the rest,
        and stop the threads."""
        with self._lock:
            running = list(self._running.values())
        _, late = cf.wait(running, timeout=timeout)
        if late:
            with self._lock:
                groups = [f"fedexec-{lease_id}" for lease_id in self._running]
            for group in groups:
                with contextlib.suppress(Exception):
                    self._sc.cancelJobGroup(group)
            cf.wait(late, timeout=timeout)
        self._pool.shutdown(wait=True)


_PY_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


def describe_error(error: BaseException) -> str:
    """The gist of a (often very long) Spark/py4j error: the Python worker's own
    exception line when there is one, else the first meaningful line."""
    lines = [line.strip() for line in str(error).strip().splitlines()]
    python = [line for line in lines
              if _PY_ERROR.match(line) and not line.startswith(("org.", "java.", "py4j."))]
    if python:
        return python[-1][:500]
    for line in lines:
        if line and not line.startswith("An error occurred while calling"):
            return line[:500]
    return type(error).__name__
