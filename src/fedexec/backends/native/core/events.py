"""The local scheduler's vocabulary: events in, actions out (frozen dataclasses).

The shell (``node.py``) turns what it reads — a message, a reaped process, a loop
turn — into an event, hands it to :class:`~.scheduler.LocalScheduler`, and executes
the actions that come back, in order::

    shell ──TaskSubmitted / WorkerReady / TaskFinished / WorkerDied / Tick ...──▶ core
    shell ◀──SpawnWorker / Dispatch / TaskStarted / KillWorker / Reply / Failed ...────── core
    shell ──LeaseRequested / LeaseReturned──▶ core ──LeaseGranted / LeaseDenied / RecallLease──▶

Ids are the wire's (task, worker, actor ids: ``str``); demands are
``{resource: amount}``. Payloads the core does not look at (a finished task's
results) travel through it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from ..protocol import ErrorKind

if TYPE_CHECKING:
    from .scheduler import TaskEntry

__all__ = [
    "Action",
    "ActorQueued",
    "ActorReleased",
    "ActorResized",
    "CancelRequested",
    "CancelRunning",
    "Dispatch",
    "Event",
    "Failed",
    "HandedBack",
    "KillWorker",
    "LeaseDenied",
    "LeaseGranted",
    "LeaseRequested",
    "LeaseReturned",
    "LeasesRecalled",
    "Pipeline",
    "RecallLease",
    "Reply",
    "RevokeRequested",
    "RevokeTask",
    "SpawnWorker",
    "StartActor",
    "TaskAbandoned",
    "TaskFinished",
    "TaskStarted",
    "TaskSubmitted",
    "Tick",
    "Withdraw",
    "WorkerBlocked",
    "WorkerDied",
    "WorkerReady",
    "WorkerUnblocked",
]


# ------------------------------------------------------------------ events in
@dataclass(frozen=True, slots=True)
class TaskSubmitted:
    """A task whose arguments are ready is to run on this node (it was accepted:
    exactly one :class:`Reply` or
    :class:`Failed` will end it, unless it is withdrawn or abandoned)."""

    task_id: str
    name: str
    demand: Mapping[str, float]
    max_retries: int  # retries left (-1: unlimited)
    # The shell's record of the task, if it is a TaskEntry (a subclass) with the
    # fields above set: the core keeps it instead of making one.
    entry: TaskEntry | None = None


@dataclass(frozen=True, slots=True)
class ActorQueued:
    """An actor (new or restarting) waits for a worker and ``demand``."""

    actor_id: str
    demand: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ActorResized:
    """A placed actor now holds ``demand`` (its lifetime demand, once created)."""

    actor_id: str
    demand: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ActorReleased:
    """An actor no longer needs a worker: dequeue it, free what it holds."""

    actor_id: str


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """A spawned worker connected (its HELLO): it is idle now."""

    worker_id: str


@dataclass(frozen=True, slots=True)
class TaskFinished:
    """A worker reported a task done; ``results`` go to the :class:`Reply`."""

    worker_id: str
    task_id: str
    results: Any
    now: float


@dataclass(frozen=True, slots=True)
class WorkerDied:
    """A worker's process or connection is gone. ``error``: what its running task
    fails with when no retry is left (default: ``WORKER_CRASHED``); ``replace``:
    spawn another if the pool is short (False while the node stops)."""

    worker_id: str
    why: str
    pid: int = 0
    error: tuple[ErrorKind, str] | None = None
    replace: bool = True


@dataclass(frozen=True, slots=True)
class WorkerBlocked:
    """A worker waits in ``get``: it lends its lease and hands back the tasks
    pipelined to it that it has not started."""

    worker_id: str
    handed_back: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WorkerUnblocked:
    """A blocked worker resumes: it takes its lease back (even past the total)."""

    worker_id: str


@dataclass(frozen=True, slots=True)
class HandedBack:
    """A worker returns tasks pipelined to it that it has not started."""

    worker_id: str
    task_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """Cancel a task: queued, it ends cancelled; running, its worker is asked to
    stop it, or (``force``, and it is the one running) killed."""

    task_id: str
    force: bool = False


@dataclass(frozen=True, slots=True)
class RevokeRequested:
    """Take back tasks pipelined onto workers but not started (``Future.cancel``);
    each ends when its worker confirms (a :class:`TaskFinished`) or dies."""

    task_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Take a queued task out of this node's hands (spilled to another node): no
    :class:`Reply` or :class:`Failed` will come for it."""

    task_id: str


@dataclass(frozen=True, slots=True)
class TaskAbandoned:
    """The shell ended a task itself (a malformed message): no :class:`Reply`
    or :class:`Failed`."""

    task_id: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Start what can start on idle workers (once per loop turn with work)."""

    now: float


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Pipeline queued tasks onto busy leases of their shape (all but ``keep`` of a
    queue: another node may take those), and grow the pool if work would fit."""

    keep: int = 0


@dataclass(frozen=True, slots=True)
class LeaseRequested:
    """Caller ``caller`` (a connection id) asks for a worker of its own for tasks of
    ``demand``: a :class:`LeaseGranted` (an idle worker, the demand fits, and no
    queued work waits) or a :class:`LeaseDenied` answers, at once."""

    caller: int
    demand: Mapping[str, float]
    request_id: int


@dataclass(frozen=True, slots=True)
class LeaseReturned:
    """Caller ``caller`` gives back its lease on ``worker_id`` (idle, recalled, or the
    caller is gone): the worker idles again, its resources are free."""

    worker_id: str
    caller: int


@dataclass(frozen=True, slots=True)
class LeasesRecalled:
    """Every caller must give its leases back (the node is no longer alone in its
    cluster: work waiting on a caller's side must be free to go to other nodes)."""


Event = Union[TaskSubmitted, ActorQueued, ActorResized, ActorReleased, WorkerReady,
              TaskFinished, WorkerDied, WorkerBlocked, WorkerUnblocked, HandedBack,
              CancelRequested, RevokeRequested, Withdraw, TaskAbandoned, Tick, Pipeline,
              LeaseRequested, LeaseReturned, LeasesRecalled]


# ---------------------------------------------------------------- actions out
@dataclass(frozen=True, slots=True)
class SpawnWorker:
    """Start a worker process that will say HELLO as ``worker_id``."""

    worker_id: str


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send ``task_ids`` to run on ``worker_id``, in order, with ``gpus`` visible."""

    worker_id: str
    task_ids: tuple[str, ...]
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskStarted:
    """``task_id`` is the one its worker runs now (tell its owner)."""

    task_id: str
    at: float


@dataclass(frozen=True, slots=True)
class StartActor:
    """Make ``actor_id`` on ``worker_id`` (dedicated to it from now on)."""

    worker_id: str
    actor_id: str
    gpus: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True)
class KillWorker:
    """SIGKILL a worker; the core already counts it dead (``why``)."""

    worker_id: str
    why: str


@dataclass(frozen=True, slots=True)
class CancelRunning:
    """Ask ``worker_id`` to cancel ``task_id`` (CANCEL_TASK)."""

    worker_id: str
    task_id: str


@dataclass(frozen=True, slots=True)
class RevokeTask:
    """Ask ``worker_id`` to drop ``task_id`` from its queue (REVOKE)."""

    worker_id: str
    task_id: str


@dataclass(frozen=True, slots=True)
class Reply:
    """The task ran: send its worker's ``results`` to its owner. A task ends with
    exactly one :class:`Reply` or :class:`Failed`."""

    task_id: str
    results: Any = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The task ended without running to completion (cancelled, crashed, ...): its
    results are this error. A task ends with exactly one :class:`Reply` or
    :class:`Failed`."""

    task_id: str
    kind: ErrorKind
    message: str


@dataclass(frozen=True, slots=True)
class LeaseGranted:
    """Tell ``caller`` (answering ``request_id``) that ``worker_id`` is its own until
    it returns it: it sends tasks of the lease's shape straight there."""

    caller: int
    request_id: int
    worker_id: str
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseDenied:
    """Tell ``caller`` no worker is free for it now. ``full``: the demand does not
    fit in what is free (the caller may queue more onto the leases it holds: the
    hub could not start them sooner); else it fits but no idle worker is there, or
    work already waits here: the caller's tasks go to the hub (which starts a
    worker for them), never behind a task of its own they may have to meet."""

    caller: int
    request_id: int
    full: bool = False


@dataclass(frozen=True, slots=True)
class RecallLease:
    """Ask ``caller`` to return its lease on ``worker_id`` (other work waits): it
    sends nothing more there and returns it once its tasks there are answered."""

    caller: int
    worker_id: str


Action = Union[SpawnWorker, Dispatch, TaskStarted, StartActor, KillWorker, CancelRunning,
               RevokeTask, Reply, Failed, LeaseGranted, LeaseDenied, RecallLease]
