"""Cancelling tasks on Dask without races.

Dask's own cancel travels scheduler -> worker asynchronously, so a queued task
whose turn comes meanwhile would still run. fedexec promises that a cancelled
queued task never runs, so :func:`cancel_queued` takes back the tasks still in
the runtime's outbox (``_outbox``: never sent), then asks the scheduler, in
one atomic step on its event loop, where each task is (:func:`locate`: a task
not yet sent to a worker is cancelled right there), then tells the worker a
task was sent to, synchronously, never to start it (``_worker.revoke``); that
worker answers which ones had started already (they are running: too late).

``shutdown(cancel_futures=True)`` cancels, as the stdlib pools do, only what no
worker has *taken*, and lets the rest finish (``leave_taken=True``). On Dask a
task is taken when a thread of a worker has it or will have it without waiting
for anything new:

* it runs (its "start" event came, or it is in ``_worker._RUNNING``), or
* the worker it was placed on has handed it to a thread: its state in that
  worker's state machine is ``executing`` or ``long-running`` (or it already ran
  there: ``memory``, ``error``). A Dask worker hands a task to a thread the moment
  it has one free and the task's resources (its ``CPU``) free, so a task placed on
  a worker with room for it is taken; one waiting there for a thread or resources
  (``ready``, ``constrained``) or for its arguments (``waiting``) is not.

Not taken: a task in the outbox, in the scheduler's queue (``queued``,
``waiting``, ``no-worker``) or waiting on its worker. As the stdlib's pools hand
out their work queue before they read the shutdown flag, shutdown first lets the
workers take what they have room for: it sends what the outbox holds
(:meth:`~._outbox.Outbox.deliver`), then asks each worker
(``_worker.revoke_untaken``), which waits for the tasks the scheduler sent it to
arrive (at most ``TAKE_WAIT_S``), keeps the taken ones and revokes the others.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

from ...exceptions import TaskCancelledError
from . import _worker as worker_side
from ._common import cancel_ref

if TYPE_CHECKING:
    from ._backend import DaskBackend

__all__ = ["cancel_queued", "join_force_cancels", "locate", "restart_if_stuck"]


def locate() -> Any:
    """The function that runs on the scheduler (:func:`cancel_queued`); made here,
    nested, so that it is pickled by value: the scheduler needs no fedexec."""

    def on_scheduler(keys: list[str], client: str, dask_scheduler: Any = None
                     ) -> dict[str, Any]:
        # Where each task was sent (a worker address); a task not sent to a worker
        # yet is cancelled right here, atomically ("cancelled"); "?" for a key the
        # scheduler does not know yet (its submission is still in flight).
        out: dict[str, Any] = {}
        waiting = []
        for key in keys:
            ts = dask_scheduler.tasks.get(key)
            if ts is None:
                out[key] = "?"
            elif ts.processing_on is not None:
                out[key] = ts.processing_on.address
            elif ts.state in ("waiting", "queued", "no-worker", "released"):
                waiting.append(key)
                out[key] = "cancelled"
            else:
                out[key] = None  # finished or failed
        if waiting:
            try:
                dask_scheduler.stimulus_cancel(waiting, client, False, "fedexec cancel", None)
            except TypeError:  # distributed before 2024.2 takes no reason/msg
                dask_scheduler.stimulus_cancel(waiting, client, False)
        return out

    return on_scheduler


#: How long shutdown waits for the outbox to be sent, then for a task sent to a
#: worker to reach it (both take milliseconds), before it cancels what is left.
DELIVER_WAIT_S = 2.0
TAKE_WAIT_S = 2.0


def cancel_queued(backend: DaskBackend, records: list[Any], *,
                  leave_taken: bool = False) -> list[Any]:
    """Cancel the tasks of ``records`` (``_TaskRecord`` s) that have not started
    (``leave_taken``: that no worker has taken); return those cancelled (see the
    module docstring)."""
    with backend._lock:
        todo = [r for r in records if r.started is None and not r.cancelled
                and not all(x.done() for x in r.refs)]
        for r in todo:
            r.cancelling = True
    if not todo:
        return []
    if leave_taken:  # let the workers take what they have room for first
        backend.outbox.deliver(DELIVER_WAIT_S)
    # Not sent yet: never will be. Else ask the scheduler.
    withdrawn = backend.outbox.withdraw(r.keys for r in todo)
    placed: dict[str, Any] = {r.keys[0]: "cancelled" for r in todo if r.keys[0] in withdrawn}
    keys = [r.keys[0] for r in todo if r.keys[0] not in placed]
    for _ in range(100 if keys else 0):  # a key submitted a moment ago may not be there yet
        try:
            placed.update(backend.client.run_on_scheduler(locate(), keys, backend.client.id))
        except Exception:
            break
        keys = [k for k, v in placed.items() if v == "?"]
        if not keys:
            break
        time.sleep(0.005)
    started: set[str] = {k for k, v in placed.items() if v is None}
    by_worker: dict[str, list[str]] = {}
    for key, where in placed.items():
        if where not in (None, "?", "cancelled"):
            by_worker.setdefault(where, []).append(key)
    for address, worker_keys in by_worker.items():
        try:
            if leave_taken:
                reply = backend.client.run(worker_side.revoke_untaken, worker_keys,
                                           TAKE_WAIT_S, workers=[address])
            else:
                reply = backend.client.run(worker_side.revoke, worker_keys, workers=[address])
            started.update(reply.get(address, ()))
        except Exception:  # the worker is gone: Dask reschedules or fails it
            continue
    done = []
    with backend._lock:
        for record in todo:
            record.cancelling = False
            if record.keys[0] in started or record.started is not None:
                continue
            record.cancelled = True
            done.append(record)
    for record in done:
        for r in record.refs:  # before Dask's own cancel reaches _future_done
            cancel_ref(r)
    if done:
        backend.cancel_futures([f for record in done for f in record.futures])
    for record in done:
        backend._maybe_forget(record)
    return done


#: A force-cancelled task still running this long after its interrupt is stuck
#: (in native code): its worker is restarted.
STUCK_AFTER_S = 1.0
#: How long a worker restart may take before the force-cancel gives up on it.
RESTART_TIMEOUT_S = 30.0


def restart_if_stuck(backend: DaskBackend, record: Any, address: str) -> None:
    """``force=True``: if the interrupted task has not ended within
    ``STUCK_AFTER_S`` (it is stuck in native code), fail its refs with
    ``TaskCancelledError`` and restart its worker process (on a thread of its own,
    which shutdown waits for: :func:`join_force_cancels`)."""

    def kill() -> None:
        done = threading.Event()
        record.refs[0].add_done_callback(lambda _: done.set())
        if done.wait(STUCK_AFTER_S):
            return
        # Settle (and forget) the refs first: Dask's cancel below comes back as a
        # "cancelled" future, which must find them done, not running.
        backend._fail(record, TaskCancelledError(f"task {record.name!r} was cancelled"))
        backend.cancel_futures(record.futures)
        if backend._closed and backend.cluster is not None:
            return  # shutting down: closing the executor's own cluster ends the worker
        with contextlib.suppress(Exception):
            backend.client.restart_workers([address], timeout=RESTART_TIMEOUT_S)

    thread = threading.Thread(target=kill, daemon=True,
                              name=f"fedexec-dask-force-cancel-{backend.uid}")
    with backend._lock:
        backend._force_cancels = [t for t in backend._force_cancels if t.is_alive()]
        backend._force_cancels.append(thread)
    thread.start()


def join_force_cancels(backend: DaskBackend) -> None:
    """Wait for the force-cancels in progress (each ends within ``STUCK_AFTER_S``
    plus ``RESTART_TIMEOUT_S``), so that shutdown closes the client after them."""
    with backend._lock:
        threads, backend._force_cancels = backend._force_cancels, []
    for thread in threads:
        thread.join(STUCK_AFTER_S + RESTART_TIMEOUT_S + 5)
