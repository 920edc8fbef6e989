"""How the dask backend's ``shutdown(wait=True)`` waits for the tasks in flight.

As the stdlib's pools do, it waits as long as tasks run; it never waits for news
that cannot come::

    each task whose refs are not all completed:
        Dask runs it, queues it, retries it        ── wait (it will end)
        Dask reports it ended (finished, cancelled, ── its completion is on the way:
        failed), or the client is closing             wait COMPLETION_GRACE_S for it,
                                                      then deliver it here, with a
                                                      warning (it was lost)
    then the actor calls (``ActorManager.drain``, at most ``DRAIN_LIMIT_S``), then
    the force-cancels still restarting a worker (each bounded:
    ``_cancel.restart_if_stuck``)

What shutdown waits on is the refs, not the runtime's bookkeeping: a task whose
refs are completed is over, whether or not its record was dropped yet.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ...exceptions import ObjectLostError
from . import _cancel as cancelling

if TYPE_CHECKING:
    from ._backend import DaskBackend

__all__ = ["COMPLETION_GRACE_S", "REPORT_EVERY_S", "drain"]

logger = logging.getLogger(__name__)

#: How long after Dask reports a task ended shutdown waits for its completion to
#: reach the refs (it takes milliseconds: a callback on the runtime's callback
#: thread) before it delivers it itself.
COMPLETION_GRACE_S = 10.0
#: How often a shutdown still waiting says what on (at WARNING).
REPORT_EVERY_S = 30.0
_POLL_S = 0.5
_FINAL = ("finished", "cancelled", "error")


def drain(backend: DaskBackend) -> None:
    """Return once every task of ``backend`` has ended and its refs are completed,
    then its actor calls, then its force-cancels (see the module docstring)."""
    ended_at: dict[str, float] = {}
    next_report = time.monotonic() + REPORT_EVERY_S
    while True:
        with backend._lock:
            waiting = [r for r in backend._records.values() if not _completed(r)]
            if not waiting:
                break
            backend._idle.wait(_POLL_S)
        now = time.monotonic()
        if now >= next_report:
            next_report = now + REPORT_EVERY_S
            _report_waiting(waiting)
        closing = backend.client.status in ("closing", "closed")
        ended_at = {r.keys[0]: ended_at.get(r.keys[0], now) for r in waiting
                    if not _completed(r) and (closing or _ended(r))}
        for record in waiting:
            since = ended_at.get(record.keys[0])
            if since is not None and now - since >= COMPLETION_GRACE_S:
                _deliver_lost_completion(backend, record, now - since)
                ended_at.pop(record.keys[0])
    backend.actors.drain()
    cancelling.join_force_cancels(backend)  # their worker restarts, before the client closes


def _report_waiting(waiting: list[Any]) -> None:
    shown = ", ".join(
        f"{r.name!r} (" + (f"running on {r.started}" if r.started else "not started") +
        (", its worker died: being retried" if r.handling else "") + ")"
        for r in waiting[:5])
    logger.warning("fedexec dask backend: shutdown(wait=True) still waits for %d task(s) "
                   "to end: %s%s", len(waiting), shown, " ..." if len(waiting) > 5 else "")


def _completed(record: Any) -> bool:
    return all(r.done() for r in record.refs)


def _ended(record: Any) -> bool:
    """Dask has no more work for the task: each ref's future is final (a worker
    death being handled, ``handling``, is not: the task runs again)."""
    return not record.handling and all(f.status in _FINAL for f in record.watched)


def _deliver_lost_completion(backend: DaskBackend, record: Any, waited: float) -> None:
    """Complete the refs of a task whose completion never arrived, from its Dask
    futures as the completion callback would (else fail them), and say so."""
    statuses = [f.status for f in record.watched]
    logger.warning(
        "fedexec dask backend: shutdown waited %.0f s for the completion of task %r "
        "(Dask reports it %s) and it never arrived; completing its refs from what Dask "
        "holds. This is a bug in the dask backend: please report it.",
        waited, record.name, "/".join(str(s) for s in statuses) or "gone")
    for index, future in enumerate(record.watched):
        backend._future_done(record, index, record.attempt, future)
    if not _completed(record):
        backend._fail(record, ObjectLostError(
            f"task {record.name!r} ended on the Dask cluster but its result never reached "
            "this executor before it shut down"))
