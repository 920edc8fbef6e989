"""The node's local scheduler as a pure state machine: events in, actions out.

No sockets, no processes, no clock: the shell (``node.py``) feeds it events (a ready
task, a worker's HELLO / TASK_DONE / death, a loop turn with the time) and executes
the actions it returns (spawn, send, kill, reply). Worker and task ids are the
wire's; the shell's worker records keep a reference to the core's ``WorkerSlot``,
and its task records *are* ``TaskEntry`` objects (a subclass, handed over in
``TaskSubmitted.entry``: one record, no copies on the per-task path); the core
writes their scheduling fields (``state``, ``worker``, ``retries_left``) while it
holds them, the shell only reads those then::

    TaskSubmitted ──▶ queue (FIFO per resource shape, over the ResourcePool)
                         │ Tick: oldest head that fits + an idle worker
                         ▼
    WorkerReady ──▶ idle ──▶ LEASED (lease = the shape's demand, GPUs picked)
                         │ Dispatch(worker, tasks) ─▶ TaskStarted(head)
                         │ Pipeline: more of the same shape onto busy leases
                         │   (none while an actor of that shape, or an older
                         │   task of another shape, waits)
                         ▼
    TaskFinished ──▶ Reply(results) ─▶ next pipelined task starts, or the lease
                                        is returned and the worker idles again
    WorkerDied ──▶ its running task: retry (max_retries) or Failed(error); the
                   tasks pipelined behind it: queued again, untouched
    ActorQueued ──▶ (same queue) ─▶ StartActor: the worker is the actor's for good

Caller leases (a caller's tasks go straight to a worker, see direct.py)::

    LeaseRequested(caller, demand) ──▶ an idle worker, the demand fits, nothing
                         queued: LEASED to the caller (``caller``; booked as any
                         lease) ─▶ LeaseGranted; else LeaseDenied, ``full`` if
                         the demand does not fit (the caller may pipeline onto its
                         leases), else (no idle worker, work queued) it uses the hub
    Pipeline, work queued ──▶ RecallLease (once per lease): the caller returns it
    LeasesRecalled (the node is no longer alone) ──▶ RecallLease, every lease
    LeaseReturned ──▶ the worker idles again (its caller's tasks never pass here)

State::

    pool      ResourcePool          total / used per resource (placement groups
                                    book bundles on it directly, see
                                    placement_groups.py)
    queue     Scheduler             waiting TaskEntry / ActorEntry, FIFO per shape
    gpus      GpuSlots              share of each GPU taken
    tasks     {task id: TaskEntry}  QUEUED -> ASSIGNED (on worker, in order)
                                    [-> REVOKING] -> DONE (removed; one Reply/Failed)
    actors    {actor id: ActorEntry}  queued, or placed holding ``holding``
    workers   {worker id: WorkerSlot} STARTING -> IDLE <-> LEASED (``tasks``: its
                                    pipeline, head running; or ``caller``: a caller's,
                                    ``recalled``) | ACTOR -> DEAD (removed)
    idle      deque[WorkerSlot]     IDLE workers, oldest first
    starting  int                   workers spawned that have not said HELLO

Invariants (tests/unit/test_sched_core.py): ``pool.used`` is exactly the leases
of LEASED workers not blocked plus the actors' holdings, and a dispatch never
books past the total; every task accepted by ``TaskSubmitted`` gets exactly one
``Reply`` or ``Failed`` unless withdrawn or abandoned; a task is dispatched only to an idle
worker, or pipelined onto a lease of its own shape.

A worker leased to a caller holds no ``tasks`` here and is never dispatched to
nor pipelined onto; it dies as any worker (the caller sees its link close).
"""

from __future__ import annotations

import collections
import operator
from collections.abc import Callable, Mapping
from typing import Any

from ..._scheduling import ResourcePool, Scheduler
from ..protocol import ErrorKind
from .events import (
    Action,
    ActorQueued,
    ActorReleased,
    ActorResized,
    CancelRequested,
    CancelRunning,
    Dispatch,
    Event,
    Failed,
    HandedBack,
    KillWorker,
    LeaseDenied,
    LeaseGranted,
    LeaseRequested,
    LeaseReturned,
    LeasesRecalled,
    Pipeline,
    RecallLease,
    Reply,
    RevokeRequested,
    RevokeTask,
    SpawnWorker,
    StartActor,
    TaskAbandoned,
    TaskFinished,
    TaskStarted,
    TaskSubmitted,
    Tick,
    Withdraw,
    WorkerBlocked,
    WorkerDied,
    WorkerReady,
    WorkerUnblocked,
)
from .gpus import GpuSlots, gpus_of

__all__ = ["ActorEntry", "LocalScheduler", "TaskEntry", "WorkerSlot"]

_ID = operator.attrgetter("id")


class TaskEntry:
    """A task in the core's hands."""

    __slots__ = ("demand", "id", "name", "retries_left", "state", "worker")

    def __init__(self, task_id: str, name: str, demand: Mapping[str, float], retries: int):
        self.id = task_id
        self.name = name
        self.demand = dict(demand)
        self.retries_left = retries
        self.state = "QUEUED"
        self.worker: str | None = None


class ActorEntry:
    """An actor waiting for a worker (``worker`` None), or placed and holding
    resources."""

    __slots__ = ("demand", "holding", "id", "worker")

    def __init__(self, actor_id: str, demand: Mapping[str, float]):
        self.id = actor_id
        self.demand = dict(demand)
        self.holding: dict[str, float] = {}
        self.worker: str | None = None


class WorkerSlot:
    """A worker process as the scheduler sees it."""

    __slots__ = ("actor", "blocked", "caller", "gpus", "id", "lease", "recalled", "state",
                 "tasks")

    def __init__(self, worker_id: str):
        self.id = worker_id
        self.state = "STARTING"
        self.lease: dict[str, float] | None = None
        self.gpus: list[tuple[int, float]] = []
        self.tasks: collections.deque[TaskEntry] = collections.deque()
        self.blocked = False
        self.actor: str | None = None
        self.caller: int | None = None  # LEASED to this caller (its tasks bypass us)
        self.recalled = False  # the caller was asked to return it


class LocalScheduler:
    """See the module docstring. ``handle(event)`` returns the actions to execute."""

    def __init__(self, total: Mapping[str, float], gpu_names: list[str], pool_size: int,
                 new_id: Callable[[], str], max_workers: int = 256, max_pipeline: int = 64):
        self.pool = ResourcePool(total)
        self.queue = Scheduler(self.pool)
        self.gpus = GpuSlots(gpu_names)
        self.pool_size = pool_size
        self.max_workers = max_workers
        self.max_pipeline = max_pipeline
        self._new_id = new_id
        self.tasks: dict[str, TaskEntry] = {}
        self.actors: dict[str, ActorEntry] = {}
        self.workers: dict[str, WorkerSlot] = {}
        self.idle: collections.deque[WorkerSlot] = collections.deque()
        self.starting = 0
        # Queued actors per resource shape: no task of such a shape is pipelined
        # (it would keep a lease busy that the actor waits for).
        self._actor_shapes: collections.Counter[frozenset[Any]] = collections.Counter()
        self._handlers: dict[type, Callable[[Any], list[Action]]] = {
            TaskSubmitted: self.submitted, ActorQueued: self._actor_queued,
            ActorResized: self._actor_resized, ActorReleased: self._actor_released,
            WorkerReady: self._ready, TaskFinished: self.finished, WorkerDied: self._died_event,
            WorkerBlocked: self._blocked, WorkerUnblocked: self._unblocked,
            HandedBack: self._handed_back, CancelRequested: self._cancel,
            RevokeRequested: self._revoke, Withdraw: self._withdraw,
            TaskAbandoned: self._abandoned, Tick: self.tick, Pipeline: self.pipeline,
            LeaseRequested: self._lease_requested, LeaseReturned: self._lease_returned,
            LeasesRecalled: self._leases_recalled,
        }

    def start(self) -> list[Action]:
        """The node starts: its pool of ``pool_size`` workers."""
        return [self._spawn() for _ in range(self.pool_size)]

    def handle(self, event: Event) -> list[Action]:
        """Apply ``event``; the actions to execute, in order. The events of every
        task's path (``TaskSubmitted``, ``Tick``, ``TaskFinished``, ``Pipeline``)
        also have their handler public (``submitted``, ``tick``, ``finished``,
        ``pipeline``): the shell calls those directly, without this dispatch."""
        return self._handlers[type(event)](event)

    # ------------------------------------------------------------- queries
    def queued(self) -> int:
        """How many tasks and actors wait for resources."""
        return len(self.queue)

    def free(self) -> dict[str, float]:
        """What new work could take here now (what the node reports): the pool's
        free resources less what its queue will take of them (an actor or a task
        queued while its worker starts has its share already, as if booked; one
        that does not fit takes nothing)."""
        free = self.pool.available()
        for demand, n in self.queued_shapes():
            take = n
            for k, v in demand.items():
                if v > 0:
                    take = min(take, int((free.get(k, 0.0) + 1e-9) // v))
            if take:
                for k, v in demand.items():
                    free[k] = max(0.0, free[k] - take * v)
        return free

    def queued_shapes(self) -> list[tuple[dict[str, float], int]]:
        """(demand, how many wait) per resource shape."""
        return [(d, len(items)) for d, items in self.queue.by_shape()]

    def queued_tasks(self) -> list[tuple[dict[str, float], list[str]]]:
        """(demand, ids of the tasks waiting, oldest first) per shape; no actors."""
        out = []
        for demand, items in self.queue.by_shape():
            ids = [i.id for i in items if isinstance(i, TaskEntry)]
            if ids:
                out.append((demand, ids))
        return out

    def workers_coming(self) -> bool:
        """Workers are starting and some queued work could start on them."""
        return self.starting > 0 and self.queue.fits_any()

    def revocable(self, task_id: str) -> bool:
        """Pipelined onto a worker but (as far as we know) not started there."""
        t = self.tasks.get(task_id)
        if t is None or t.state != "ASSIGNED" or t.worker is None:
            return False
        w = self.workers.get(t.worker)
        return w is not None and bool(w.tasks) and w.tasks[0] is not t and t in w.tasks

    def position(self, task_id: str) -> int:
        """A task's place on its worker: 0 running, n queued behind n tasks."""
        t = self.tasks.get(task_id)
        if t is None or t.worker is None:
            return 0
        w = self.workers.get(t.worker)
        return list(w.tasks).index(t) if w is not None and t in w.tasks else 0

    def running(self) -> list[tuple[str, str | None, str | None, bool]]:
        """(worker id, running task id, actor id, a retry is left) per busy worker."""
        out: list[tuple[str, str | None, str | None, bool]] = []
        for w in self.workers.values():
            if w.state == "LEASED" and w.tasks and w.tasks[0].state == "ASSIGNED":
                t = w.tasks[0]
                out.append((w.id, t.id, None, t.retries_left != 0))
            elif w.state == "ACTOR" and w.actor is not None:
                out.append((w.id, None, w.actor, False))
        return out

    def running_task(self, worker_id: str) -> TaskEntry | None:
        """The task ``worker_id`` runs now (None: idle, or an actor's)."""
        w = self.workers.get(worker_id)
        if w is None or w.actor is not None or not w.tasks:
            return None
        return w.tasks[0]

    # -------------------------------------------------------------- events
    def submitted(self, e: TaskSubmitted) -> list[Action]:
        """Handle :class:`TaskSubmitted`."""
        t = e.entry
        if t is None:
            t = TaskEntry(e.task_id, e.name, e.demand, e.max_retries)
        else:  # the shell's own record (a subclass), filled in already
            t.state = "QUEUED"
            t.worker = None
        self.tasks[t.id] = t
        self.queue.enqueue(t, t.demand)
        return []

    def _actor_queued(self, e: ActorQueued) -> list[Action]:
        a = self.actors.get(e.actor_id)
        if a is None:
            a = self.actors[e.actor_id] = ActorEntry(e.actor_id, e.demand)
        elif a.worker is None:
            return []  # queued already
        else:  # placed: it restarts, what it held is free
            self.pool.release(a.holding)
            a.holding, a.worker = {}, None
        a.demand = dict(e.demand)
        self.queue.enqueue(a, a.demand)
        self._actor_shapes[frozenset(a.demand.items())] += 1
        return []

    def _actor_resized(self, e: ActorResized) -> list[Action]:
        a = self.actors.get(e.actor_id)
        if a is not None and a.worker is not None:  # (placed)
            self.pool.release(a.holding)
            self.pool.acquire(e.demand)
            a.holding = dict(e.demand)
        return []

    def _actor_released(self, e: ActorReleased) -> list[Action]:
        a = self.actors.pop(e.actor_id, None)
        if a is not None:
            if self.queue.remove(a):
                self._unqueued(a)
            self.pool.release(a.holding)
            a.holding = {}
        return []

    def _ready(self, e: WorkerReady) -> list[Action]:
        w = self.workers.get(e.worker_id)
        if w is not None and w.state == "STARTING":
            self.starting -= 1
            w.state = "IDLE"
            self.idle.append(w)
        return []

    def finished(self, e: TaskFinished) -> list[Action]:
        """Handle :class:`TaskFinished`."""
        w = self.workers.get(e.worker_id)
        if w is None or w.actor is not None:
            return []
        # (Written for the per-task path: no helper calls, no appends in the usual case.)
        tasks = w.tasks
        t: TaskEntry | None
        started: list[Action] = []
        if tasks and tasks[0].id == e.task_id:  # (the usual case: the one running)
            t = tasks.popleft()
            if tasks:
                started = [TaskStarted(tasks[0].id, e.now)]
            if t.state != "ASSIGNED":
                t = None  # it ended already (abandoned)
        else:
            t = self.tasks.get(e.task_id)
            if t is not None and t in tasks:
                tasks.remove(t)
        if not tasks and w.state == "LEASED" and w.caller is None:
            self._return_lease(w)
        if t is None:
            return started
        if t.state == "QUEUED":
            self.queue.remove(t)
        del self.tasks[t.id]  # (_end)
        t.state = "DONE"
        return [*started, Reply(t.id, e.results)] if started else [Reply(t.id, e.results)]

    def _died_event(self, e: WorkerDied) -> list[Action]:
        w = self.workers.get(e.worker_id)
        if w is None:
            return []
        return self._died(w, e.why, e.pid, e.error, e.replace)

    def _blocked(self, e: WorkerBlocked) -> list[Action]:
        w = self.workers.get(e.worker_id)
        if w is None or w.blocked:
            return []
        w.blocked = True
        self._requeue(w, e.handed_back)
        if w.lease is not None:
            self.pool.release(w.lease)
        return []

    def _unblocked(self, e: WorkerUnblocked) -> list[Action]:
        w = self.workers.get(e.worker_id)
        if w is None or not w.blocked:
            return []
        w.blocked = False
        if w.lease is not None:
            self.pool.acquire(w.lease)
        return []

    def _handed_back(self, e: HandedBack) -> list[Action]:
        w = self.workers.get(e.worker_id)
        if w is not None:
            self._requeue(w, e.task_ids)
        return []

    def _cancel(self, e: CancelRequested) -> list[Action]:
        t = self.tasks.get(e.task_id)
        if t is None:
            return []
        if t.state == "QUEUED":
            self.queue.remove(t)
            return [self._fail(t, ErrorKind.CANCELLED, f"task {t.name!r} was cancelled")]
        w = self.workers.get(t.worker) if t.worker is not None else None
        if t.state != "ASSIGNED" or w is None:
            return []  # REVOKING: its worker's answer ends it
        if e.force and w.tasks and w.tasks[0] is t:
            t.retries_left = 0
            why = f"it was killed to force-cancel task {t.name!r}"
            # Dead now, not when it is reaped: the tasks pipelined behind the
            # cancelled one go back to the queue untouched (none of them was running).
            return [self._fail(t, ErrorKind.CANCELLED,
                               f"task {t.name!r} was cancelled (its worker was killed)"),
                    KillWorker(w.id, why), *self._died(w, why, 0, None, True)]
        return [CancelRunning(w.id, t.id)]

    def _revoke(self, e: RevokeRequested) -> list[Action]:
        acts: list[Action] = []
        for task_id in e.task_ids:
            t = self.tasks[task_id]
            w = self.workers[t.worker or ""]
            w.tasks.remove(t)
            t.state = "REVOKING"
            acts.append(RevokeTask(w.id, t.id))
        return acts

    def _withdraw(self, e: Withdraw) -> list[Action]:
        t = self.tasks.pop(e.task_id, None)
        if t is not None:
            self.queue.remove(t)
            t.state = "WITHDRAWN"
        return []

    def _abandoned(self, e: TaskAbandoned) -> list[Action]:
        t = self.tasks.pop(e.task_id, None)
        if t is not None:
            self.queue.remove(t)
            t.state = "DONE"  # a worker may still hold it: its answer ends nothing
        return []

    def tick(self, e: Tick) -> list[Action]:
        """Handle :class:`Tick`."""
        acts: list[Action] = []
        while self.idle and len(self.queue):
            started = self.queue.dispatch(limit=1)
            if not started:
                break
            item, demand = started[0]
            w = self.idle.popleft()
            if isinstance(item, ActorEntry):
                acts.extend(self._start_actor(item, w, e.now))
                continue
            w.state = "LEASED"
            w.lease = demand
            if self.gpus.free:
                w.gpus = self.gpus.take(gpus_of(demand))
            self._assign(w, [item], e.now, acts)
        return acts

    def pipeline(self, e: Pipeline) -> list[Action]:
        """Handle :class:`Pipeline`."""
        if not len(self.queue):
            return []
        acts: list[Action] = []
        leases: dict[frozenset[Any], list[WorkerSlot]] = {}
        for w in self.workers.values():
            if w.state == "LEASED" and not w.blocked and w.lease and w.caller is None:
                leases.setdefault(frozenset(w.lease.items()), []).append(w)
            elif w.caller is not None and not w.recalled:  # work waits: callers give back
                w.recalled = True
                acts.append(RecallLease(w.caller, w.id))
        for shape, ws in leases.items():
            waiting = self.queue.count(shape)
            if not waiting or self.pool.fits(dict(shape)) or shape in self._actor_shapes \
                    or self.queue.older_waits(shape):
                continue  # nothing waits, it can start on a worker of its own, or an
                # actor (or an older task of another shape) waits for a lease to free
            waiting -= e.keep
            if waiting < 2 * len(ws):
                continue  # a short queue stays here: cancellable, and free to go anywhere
            depth = min(self.max_pipeline, 1 + waiting // len(ws))
            for w in ws:
                room = depth - len(w.tasks)
                if room > 0:
                    items = self.queue.take(shape, room)
                    if items:
                        self._assign(w, items, None, acts)
        if self.queue.fits_any() and not self.idle:
            alive = len(self.workers)
            if self.starting == 0 and alive < self.max_workers:
                acts.append(self._spawn())
        return acts

    def _lease_requested(self, e: LeaseRequested) -> list[Action]:
        if not self.pool.fits(dict(e.demand)):
            return [LeaseDenied(e.caller, e.request_id, full=True)]
        if len(self.queue) or not self.idle:
            return [LeaseDenied(e.caller, e.request_id)]
        w = self.idle.popleft()
        w.state = "LEASED"
        w.lease = dict(e.demand)
        w.caller = e.caller
        w.recalled = False
        self.pool.acquire(w.lease)
        if self.gpus.free:
            w.gpus = self.gpus.take(gpus_of(w.lease))
        return [LeaseGranted(e.caller, e.request_id, w.id,
                             self.gpus.names_of(w.gpus) if w.gpus else ())]

    def _lease_returned(self, e: LeaseReturned) -> list[Action]:
        w = self.workers.get(e.worker_id)
        if w is not None and w.caller == e.caller and w.state == "LEASED":
            self._return_lease(w)
        return []

    def _leases_recalled(self, e: LeasesRecalled) -> list[Action]:
        acts: list[Action] = []
        for w in self.workers.values():
            if w.caller is not None and not w.recalled:
                w.recalled = True
                acts.append(RecallLease(w.caller, w.id))
        return acts

    def caller_leases(self, caller: int) -> list[str]:
        """The workers leased to ``caller``."""
        return [w.id for w in self.workers.values() if w.caller == caller]

    # ------------------------------------------------------------- helpers
    def _spawn(self) -> SpawnWorker:
        w = WorkerSlot(self._new_id())
        self.workers[w.id] = w
        self.starting += 1
        return SpawnWorker(w.id)

    def _top_up(self) -> list[Action]:
        """Spawn a worker if fewer than ``pool_size`` are not actors'."""
        alive = sum(1 for w in self.workers.values() if w.actor is None)
        return [self._spawn()] if alive < self.pool_size else []

    def _assign(self, w: WorkerSlot, tasks: list[TaskEntry], now: float | None,
                acts: list[Action]) -> None:
        """Put ``tasks`` on ``w``'s pipeline; append the actions to ``acts``."""
        if not w.tasks and now is not None:
            acts.append(TaskStarted(tasks[0].id, now))
        for t in tasks:
            t.state = "ASSIGNED"
            t.worker = w.id
            w.tasks.append(t)
        acts.append(Dispatch(w.id, tuple(map(_ID, tasks)),
                             self.gpus.names_of(w.gpus) if w.gpus else ()))

    def _unqueued(self, a: ActorEntry) -> None:
        shape = frozenset(a.demand.items())
        self._actor_shapes[shape] -= 1
        if not self._actor_shapes[shape]:
            del self._actor_shapes[shape]

    def _start_actor(self, a: ActorEntry, w: WorkerSlot, now: float) -> list[Action]:
        self._unqueued(a)
        a.holding = dict(a.demand)
        a.worker = w.id
        w.state = "ACTOR"
        w.actor = a.id
        w.gpus = self.gpus.take(gpus_of(a.demand))
        return [StartActor(w.id, a.id, self.gpus.names_of(w.gpus), now), *self._top_up()]

    def _return_lease(self, w: WorkerSlot) -> None:
        """``w``'s pipeline is empty: its lease goes back (unless lent while it was
        blocked) and it idles, unblocked: the get it waited in belonged to a task
        that ended, so a later UNBLOCKED for it must not take a lease back."""
        if w.lease is not None and not w.blocked:
            self.pool.release(w.lease)
        w.blocked = False
        if w.gpus:
            self.gpus.give(w.gpus)
            w.gpus = []
        w.lease = None
        w.caller = None
        w.recalled = False
        w.state = "IDLE"
        self.idle.append(w)

    def _requeue(self, w: WorkerSlot, task_ids: tuple[str, ...]) -> None:
        """Queue again the tasks a worker handed back (not started)."""
        ids = set(task_ids)
        if not ids:
            return
        keep: collections.deque[TaskEntry] = collections.deque()
        for t in w.tasks:
            if t.id not in ids:
                keep.append(t)
            elif self.tasks.get(t.id) is t:  # (not ended meanwhile)
                t.state = "QUEUED"
                t.worker = None
                self.queue.enqueue(t, t.demand)
        w.tasks = keep

    def _end(self, t: TaskEntry) -> None:
        del self.tasks[t.id]
        t.state = "DONE"

    def _fail(self, t: TaskEntry, kind: ErrorKind, message: str) -> Failed:
        self._end(t)
        return Failed(t.id, kind, message)

    def _died(self, w: WorkerSlot, why: str, pid: int, error: tuple[ErrorKind, str] | None,
              replace: bool) -> list[Action]:
        if w.state == "STARTING":
            self.starting -= 1
        w.state = "DEAD"
        del self.workers[w.id]
        if w in self.idle:
            self.idle.remove(w)
        if w.lease is not None and not w.blocked:
            self.pool.release(w.lease)
        self.gpus.give(w.gpus)
        w.gpus = []
        w.lease = None
        w.caller = None
        pipeline, w.tasks = list(w.tasks), collections.deque()
        acts: list[Action] = [
            self._fail(t, ErrorKind.CANCELLED, f"task {t.name!r} was cancelled")
            for t in [t for t in self.tasks.values()
                      if t.state == "REVOKING" and t.worker == w.id]]
        for i, t in enumerate(pipeline):
            if self.tasks.get(t.id) is not t:
                continue  # it ended already (cancelled, abandoned)
            if i == 0:  # it was running
                if t.retries_left == 0:
                    kind, message = error or (
                        ErrorKind.WORKER_CRASHED,
                        f"the worker (pid {pid}) running task {t.name!r} died ({why}) and "
                        "max_retries is exhausted")
                    acts.append(self._fail(t, kind, message))
                    continue
                if t.retries_left > 0:
                    t.retries_left -= 1
            t.state = "QUEUED"
            t.worker = None
            self.queue.enqueue(t, t.demand)
        if replace:
            acts.extend(self._top_up())
        return acts
