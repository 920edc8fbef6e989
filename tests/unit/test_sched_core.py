"""The node's local scheduler core, driven by scripted events: no processes, no clock.

Scripted sequences check each decision; a hypothesis state machine checks the
invariants over random interleavings: resources are booked exactly (and never past
the total), every accepted task ends with exactly one Reply or Failed, a task is dispatched
only to an idle worker (or pipelined onto a busy lease of its own shape).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fedexec.backends.native.core.events import (
    ActorQueued,
    ActorReleased,
    ActorResized,
    CancelRequested,
    CancelRunning,
    Dispatch,
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
from fedexec.backends.native.core.scheduler import LocalScheduler, TaskEntry
from fedexec.backends.native.protocol import ErrorKind


def _core(cpus: float = 2, gpus: int = 0, pool_size: int = 2, **extra: float) -> LocalScheduler:
    ids = itertools.count(1)
    total = {"CPU": float(cpus), "memory": 1e9, **extra}
    if gpus:
        total["GPU"] = float(gpus)
    return LocalScheduler(total, [f"g{i}" for i in range(gpus)], pool_size,
                          lambda: f"w{next(ids)}")


def _ready(core: LocalScheduler) -> list[str]:
    """Start the pool and say HELLO for every worker: their ids."""
    ids = [a.worker_id for a in core.start() if isinstance(a, SpawnWorker)]
    for wid in ids:
        assert core.handle(WorkerReady(wid)) == []
    return ids


def _of(actions: list[Any], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


# ------------------------------------------------------------ scripted
def test_tasks_start_on_idle_workers_as_resources_allow_and_finish_frees_them():
    core = _core(cpus=2)
    w1, w2 = _ready(core)
    for t in "abc":
        assert core.handle(TaskSubmitted(t, t, {"CPU": 1}, 0)) == []
    acts = core.handle(Tick(1.0))
    assert acts == [TaskStarted("a", 1.0), Dispatch(w1, ("a",)),
                    TaskStarted("b", 1.0), Dispatch(w2, ("b",))]
    assert core.pool.used["CPU"] == 2 and core.queued() == 1
    assert core.handle(Tick(2.0)) == []  # no idle worker, no room
    acts = core.handle(TaskFinished(w1, "a", ["result"], 3.0))
    assert acts == [Reply("a", ["result"])]
    assert core.pool.used["CPU"] == 1 and core.workers[w1].state == "IDLE"
    assert core.handle(Tick(4.0)) == [TaskStarted("c", 4.0), Dispatch(w1, ("c",))]


def test_a_big_demand_waits_while_a_smaller_shape_goes_first():
    core = _core(cpus=2, pool_size=3)
    w1, w2, w3 = _ready(core)
    core.handle(TaskSubmitted("small1", "s", {"CPU": 1}, 0))
    core.handle(Tick(0.0))
    core.handle(TaskSubmitted("big", "b", {"CPU": 2}, 0))
    core.handle(TaskSubmitted("small2", "s", {"CPU": 1}, 0))
    assert _of(core.handle(Tick(1.0)), Dispatch) == [Dispatch(w2, ("small2",))]
    core.handle(TaskFinished(w1, "small1", [], 2.0))
    core.handle(TaskFinished(w2, "small2", [], 2.0))
    assert _of(core.handle(Tick(3.0)), Dispatch) == [Dispatch(w3, ("big",))]


def test_a_worker_death_retries_the_running_task_then_fails_it_when_retries_run_out():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    core.handle(TaskSubmitted("t", "job", {"CPU": 1}, 1))
    core.handle(Tick(0.0))
    acts = core.handle(WorkerDied(w1, "its process exited", pid=41))
    assert acts == [SpawnWorker("w2")]  # retried: queued again, a replacement comes
    assert core.tasks["t"].state == "QUEUED" and core.tasks["t"].retries_left == 0
    assert core.pool.used["CPU"] == 0
    core.handle(WorkerReady("w2"))
    assert _of(core.handle(Tick(1.0)), Dispatch) == [Dispatch("w2", ("t",))]
    acts = core.handle(WorkerDied("w2", "its process exited", pid=42))
    (reply,) = _of(acts, Failed)
    assert reply.task_id == "t" and reply.kind == ErrorKind.WORKER_CRASHED
    assert "pid 42" in reply.message and "max_retries is exhausted" in reply.message
    assert "t" not in core.tasks and core.queued() == 0


def test_unlimited_retries_stay_unlimited_and_a_given_error_replaces_the_crash():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    core.handle(TaskSubmitted("t", "job", {"CPU": 1}, -1))
    core.handle(Tick(0.0))
    core.handle(WorkerDied(w1, "oom", error=(ErrorKind.OUT_OF_MEMORY, "too big")))
    assert core.tasks["t"].retries_left == -1 and core.tasks["t"].state == "QUEUED"
    core.handle(TaskSubmitted("u", "job", {"CPU": 1}, 0))
    core.handle(WorkerReady("w2"))
    core.handle(Tick(1.0))  # t runs on w2
    core.handle(TaskFinished("w2", "t", [], 2.0))
    core.handle(Tick(3.0))  # u runs on w2
    acts = core.handle(WorkerDied("w2", "oom", error=(ErrorKind.OUT_OF_MEMORY, "too big")))
    assert _of(acts, Failed) == [Failed("u", ErrorKind.OUT_OF_MEMORY, "too big")]


def test_cancelling_a_queued_task_drops_it_and_replies_cancelled():
    core = _core(cpus=1, pool_size=1)
    _ready(core)
    core.handle(TaskSubmitted("t", "job", {"CPU": 1}, 3))
    acts = core.handle(CancelRequested("t"))
    assert acts == [Failed("t", ErrorKind.CANCELLED, "task 'job' was cancelled")]
    assert core.queued() == 0 and core.handle(Tick(0.0)) == []
    assert core.handle(CancelRequested("t")) == []  # ended: nothing more


def test_cancelling_a_running_task_asks_its_worker_or_force_kills_it():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    for t in ("run", "next"):
        core.handle(TaskSubmitted(t, t, {"CPU": 1}, 2))
    core.handle(Tick(0.0))
    assert core.handle(CancelRequested("run")) == [CancelRunning(w1, "run")]
    acts = core.handle(CancelRequested("run", force=True))
    assert acts[:2] == [
        Failed("run", ErrorKind.CANCELLED, "task 'run' was cancelled (its worker was killed)"),
        KillWorker(w1, "it was killed to force-cancel task 'run'")]
    assert acts[2:] == [SpawnWorker("w2")]
    assert core.handle(WorkerDied(w1, "its process exited")) == []  # counted dead already
    assert core.pool.used["CPU"] == 0 and core.tasks["next"].retries_left == 2


def test_a_force_cancel_requeues_the_tasks_pipelined_behind_untouched():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    for t in "abcd":
        core.handle(TaskSubmitted(t, t, {"CPU": 1}, 1))
    core.handle(Tick(0.0))
    acts = core.handle(Pipeline(keep=0))
    assert _of(acts, Dispatch) == [Dispatch(w1, ("b", "c", "d"))]
    assert not _of(acts, TaskStarted)  # a is still the one running
    acts = core.handle(CancelRequested("a", force=True))
    assert [r.task_id for r in _of(acts, Failed)] == ["a"]
    assert [core.tasks[t].state for t in "bcd"] == ["QUEUED"] * 3
    assert [core.tasks[t].retries_left for t in "bcd"] == [1, 1, 1]


def test_finishing_the_running_task_starts_the_next_pipelined_one():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    for t in "abc":
        core.handle(TaskSubmitted(t, t, {"CPU": 1}, 0))
    core.handle(Tick(0.0))
    core.handle(Pipeline(keep=0))
    assert core.position("c") == 2
    acts = core.handle(TaskFinished(w1, "a", [1], 5.0))
    assert acts == [TaskStarted("b", 5.0), Reply("a", [1])]
    assert core.workers[w1].state == "LEASED" and core.pool.used["CPU"] == 1


def test_a_short_queue_is_not_pipelined_and_keep_holds_tasks_back():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    for t in "abc":
        core.handle(TaskSubmitted(t, t, {"CPU": 1}, 0))
    core.handle(Tick(0.0))
    assert core.handle(Pipeline(keep=1)) == []  # 2 wait, 1 kept: fewer than 2 per lease
    assert _of(core.handle(Pipeline(keep=0)), Dispatch) == [Dispatch(w1, ("b", "c"))]


def test_the_pool_grows_when_work_fits_and_no_worker_is_idle():
    core = _core(cpus=4, pool_size=1)
    _ready(core)
    core.handle(TaskSubmitted("a", "a", {"CPU": 1}, 0))
    core.handle(TaskSubmitted("b", "b", {"CPU": 1}, 0))
    core.handle(Tick(0.0))
    assert core.handle(Pipeline()) == [SpawnWorker("w2")]
    assert core.handle(Pipeline()) == []  # one is starting already
    assert core.workers_coming()


def test_a_blocked_worker_lends_its_lease_and_hands_back_its_queue():
    core = _core(cpus=1, pool_size=2)
    w1, w2 = _ready(core)
    for t in "abc":
        core.handle(TaskSubmitted(t, t, {"CPU": 1}, 0))
    core.handle(Tick(0.0))
    core.handle(Pipeline(keep=0))  # b, c pipelined behind a on w1
    assert core.handle(WorkerBlocked(w1, ("b", "c"))) == []
    assert core.pool.used["CPU"] == 0 and core.queued() == 2
    assert _of(core.handle(Tick(1.0)), Dispatch) == [Dispatch(w2, ("b",))]
    core.handle(WorkerUnblocked(w1))
    assert core.pool.used["CPU"] == 2  # past the total, until one ends
    assert core.handle(Tick(2.0)) == []
    core.handle(TaskFinished(w1, "a", [], 3.0))
    assert core.pool.used["CPU"] == 1


def test_handed_back_tasks_queue_again():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    for t in "abc":
        core.handle(TaskSubmitted(t, t, {"CPU": 1}, 0))
    core.handle(Tick(0.0))
    core.handle(Pipeline(keep=0))
    core.handle(HandedBack(w1, ("c",)))
    assert core.tasks["c"].state == "QUEUED" and core.position("b") == 1


def test_a_revoked_task_ends_with_its_workers_answer_or_its_death():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    for t in "abc":
        core.handle(TaskSubmitted(t, t, {"CPU": 1}, 0))
    core.handle(Tick(0.0))
    core.handle(Pipeline(keep=0))
    assert core.revocable("b") and not core.revocable("a")
    assert core.handle(RevokeRequested(("b", "c"))) == [RevokeTask(w1, "b"), RevokeTask(w1, "c")]
    assert core.handle(CancelRequested("b")) == []  # its worker's answer ends it
    dropped = [[None, 4, ErrorKind.CANCELLED]]
    assert core.handle(TaskFinished(w1, "b", dropped, 1.0)) == [Reply("b", dropped)]
    acts = core.handle(WorkerDied(w1, "gone", replace=False))
    assert _of(acts, Failed) == [
        Failed("c", ErrorKind.CANCELLED, "task 'c' was cancelled"),
        Failed("a", ErrorKind.WORKER_CRASHED,
               "the worker (pid 0) running task 'a' died (gone) and max_retries is exhausted")]
    assert not _of(acts, SpawnWorker)


def test_withdrawn_and_abandoned_tasks_end_without_a_reply():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    for t in "ab":
        core.handle(TaskSubmitted(t, t, {"CPU": 1}, 2))
    core.handle(Tick(0.0))
    assert core.queued_tasks() == [({"CPU": 1.0}, ["b"])]
    assert core.handle(Withdraw("b")) == [] and core.queued() == 0
    assert core.handle(TaskAbandoned("a")) == []
    assert core.handle(TaskFinished(w1, "a", [], 1.0)) == []  # ends nothing now
    assert core.workers[w1].state == "IDLE" and core.pool.used["CPU"] == 0


def test_a_record_handed_over_is_the_one_the_core_keeps_and_updates():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    mine = TaskEntry("a", "job", {"CPU": 1}, 2)
    mine.state = "WAITING"  # (the caller's own state, before it hands it over)
    core.handle(TaskSubmitted("a", "job", {"CPU": 1}, 2, mine))
    assert core.tasks["a"] is mine and mine.state == "QUEUED" and mine.worker is None
    core.handle(Tick(0.0))
    assert mine.state == "ASSIGNED" and mine.worker == w1
    core.handle(WorkerDied(w1, "exited"))
    assert mine.state == "QUEUED" and mine.worker is None and mine.retries_left == 1
    core.handle(WorkerReady("w2"))
    core.handle(Tick(1.0))
    core.handle(TaskAbandoned("a"))  # ended by the caller while its worker runs it
    assert core.handle(TaskFinished("w2", "a", [], 2.0)) == []  # no second end
    assert core.workers["w2"].state == "IDLE" and core.pool.used["CPU"] == 0


def test_gpu_shares_pack_onto_one_gpu_and_whole_gpus_get_their_own():
    core = _core(cpus=4, gpus=2, pool_size=3)
    w1, w2, w3 = _ready(core)
    core.handle(TaskSubmitted("h1", "h", {"CPU": 1, "GPU": 0.5}, 0))
    core.handle(TaskSubmitted("h2", "h", {"CPU": 1, "GPU": 0.5}, 0))
    core.handle(TaskSubmitted("whole", "w", {"CPU": 1, "GPU": 1}, 0))
    acts = _of(core.handle(Tick(0.0)), Dispatch)
    assert acts == [Dispatch(w1, ("h1",), ("g0",)), Dispatch(w2, ("h2",), ("g0",)),
                    Dispatch(w3, ("whole",), ("g1",))]
    core.handle(TaskFinished(w1, "h1", [], 1.0))
    core.handle(TaskFinished(w2, "h2", [], 1.0))
    assert core.gpus.free == [1.0, 0.0]


def test_an_actor_takes_a_worker_for_good_and_books_its_demand():
    core = _core(cpus=2, gpus=1, pool_size=1)
    (w1,) = _ready(core)
    core.handle(ActorQueued("A", {"CPU": 1, "GPU": 1}))
    acts = core.handle(Tick(7.0))
    assert acts == [StartActor(w1, "A", ("g0",), 7.0), SpawnWorker("w2")]
    assert core.workers[w1].state == "ACTOR" and core.pool.used["CPU"] == 1
    core.handle(ActorResized("A", {"CPU": 0}))  # created: holds its lifetime demand
    assert core.pool.used["CPU"] == 0 and core.pool.used["GPU"] == 0
    assert core.running() == [(w1, None, "A", False)]
    assert core.handle(TaskFinished(w1, "call", [], 8.0)) == []  # actor calls are not ours
    assert core.handle(WorkerDied(w1, "exited")) == []  # w2 keeps the pool full
    assert core.gpus.free == [1.0]
    core.handle(ActorReleased("A"))
    core.handle(ActorQueued("A", {"CPU": 1}))  # restarting
    core.handle(ActorReleased("A"))  # ...and dead before it got a worker
    assert core.queued() == 0 and core.pool.used["CPU"] == 0


def test_a_task_that_ends_while_its_worker_is_blocked_leaves_the_worker_unblocked():
    """Its lease was lent while blocked: returning it frees nothing more, and the
    worker idles unblocked (its next lease is booked like any other)."""
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    core.handle(TaskSubmitted("a", "a", {"CPU": 1}, 0))
    core.handle(Tick(0.0))
    core.handle(WorkerBlocked(w1, ()))
    assert core.pool.used["CPU"] == 0
    assert core.handle(TaskFinished(w1, "a", [], 1.0)) == [Reply("a", [])]
    assert core.pool.used["CPU"] == 0 and not core.workers[w1].blocked
    core.handle(TaskSubmitted("b", "b", {"CPU": 1}, 0))
    assert _of(core.handle(Tick(2.0)), Dispatch) == [Dispatch(w1, ("b",))]
    assert core.pool.used["CPU"] == 1
    assert core.handle(WorkerUnblocked(w1)) == []  # (a late word: changes nothing)
    core.handle(TaskFinished(w1, "b", [], 3.0))
    assert core.pool.used["CPU"] == 0


def test_an_actor_queued_behind_busy_leases_is_never_pipelined_and_starts_when_one_frees():
    core = _core(cpus=2, pool_size=2)
    w1, w2 = _ready(core)
    for t in "ab":
        core.handle(TaskSubmitted(t, t, {"CPU": 1}, 0))
    core.handle(Tick(0.0))
    core.handle(ActorQueued("A", {"CPU": 1}))
    for t in "cdefg":
        core.handle(TaskSubmitted(t, t, {"CPU": 1}, 0))
    acts = core.handle(Pipeline(keep=0))
    # Tasks behind a waiting actor stay queued: pipelined, they would keep the
    # leases busy and the actor waiting.
    assert not _of(acts, Dispatch) and core.queued() == 6
    assert len(core.workers[w1].tasks) == len(core.workers[w2].tasks) == 1
    core.handle(TaskFinished(w1, "a", [], 1.0))
    acts = core.handle(Tick(2.0))
    assert _of(acts, StartActor) == [StartActor(w1, "A", (), 2.0)]
    assert core.workers[w1].state == "ACTOR" and core.pool.used["CPU"] == 2
    acts = core.handle(Pipeline(keep=0))  # no actor waits now: pipelining resumes
    assert _of(acts, Dispatch) == [Dispatch(w2, ("c", "d", "e", "f", "g"))]


def test_a_lease_goes_to_an_idle_worker_only_when_nothing_waits_and_is_booked():
    core = _core(cpus=2)
    w1, w2 = _ready(core)
    acts = core.handle(LeaseRequested(7, {"CPU": 1}, 1))
    assert acts == [LeaseGranted(7, 1, w1)]
    assert core.pool.used["CPU"] == 1 and core.workers[w1].caller == 7
    assert core.handle(LeaseRequested(8, {"CPU": 2}, 2)) == [LeaseDenied(8, 2, full=True)]
    # A hub task runs on the other worker, never on the caller's.
    core.handle(TaskSubmitted("a", "a", {"CPU": 1}, 0))
    assert _of(core.handle(Tick(1.0)), Dispatch) == [Dispatch(w2, ("a",))]
    core.handle(TaskSubmitted("b", "b", {"CPU": 1}, 0))
    assert core.handle(LeaseRequested(8, {"CPU": 1}, 3)) == [LeaseDenied(8, 3, full=True)]
    assert core.handle(Tick(2.0)) == []
    assert core.handle(Pipeline(0)) == [RecallLease(7, w1)]  # b waits: 7 must give back
    assert core.handle(Pipeline(0)) == []  # (once)
    assert core.handle(LeaseReturned(w1, 8)) == []  # not 8's: nothing happens
    assert core.workers[w1].caller == 7
    core.handle(LeaseReturned(w1, 7))
    assert core.pool.used["CPU"] == 1 and core.workers[w1].state == "IDLE"
    assert _of(core.handle(Tick(3.0)), Dispatch) == [Dispatch(w1, ("b",))]


def test_every_lease_is_recalled_once_when_the_node_has_company():
    core = _core(cpus=2)
    w1, w2 = _ready(core)
    core.handle(LeaseRequested(7, {"CPU": 1}, 1))
    core.handle(LeaseRequested(8, {"CPU": 1}, 2))
    assert sorted(core.handle(LeasesRecalled()), key=lambda a: a.caller) == [
        RecallLease(7, w1), RecallLease(8, w2)]
    assert core.handle(LeasesRecalled()) == []  # (once)
    assert core.handle(Pipeline(0)) == []
    core.handle(LeaseReturned(w1, 7))
    assert core.pool.used["CPU"] == 1 and core.workers[w1].state == "IDLE"


def test_a_lease_denied_for_a_shape_that_fits_says_so():
    # Two 0.5-CPU tasks on one CPU must be able to run at once: a second lease
    # denied for want of an idle worker (not of room) is not "full", so the caller
    # sends its task to the hub instead of queueing it behind its first one.
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    assert core.handle(LeaseRequested(7, {"CPU": 0.5}, 1)) == [LeaseGranted(7, 1, w1)]
    assert core.handle(LeaseRequested(7, {"CPU": 0.5}, 2)) == [LeaseDenied(7, 2, full=False)]
    assert core.handle(LeaseRequested(7, {"CPU": 1}, 3)) == [LeaseDenied(7, 3, full=True)]
    # The hub takes the task: the caller's lease is recalled and a worker started.
    core.handle(TaskSubmitted("b", "b", {"CPU": 0.5}, 0))
    acts = core.handle(Pipeline(0))
    assert RecallLease(7, w1) in acts and _of(acts, SpawnWorker)
    (w2,) = [a.worker_id for a in _of(acts, SpawnWorker)]
    core.handle(WorkerReady(w2))
    assert _of(core.handle(Tick(1.0)), Dispatch) == [Dispatch(w2, ("b",))]
    assert core.pool.used["CPU"] == 1  # both run at once
    # Work queued here (a shape that fits) also sends a caller to the hub.
    core.handle(TaskSubmitted("c", "c", {"CPU": 0}, 0))
    core.handle(LeaseReturned(w1, 7))
    core.handle(TaskSubmitted("d", "d", {"CPU": 1}, 0))
    assert core.handle(LeaseRequested(7, {"CPU": 0.5}, 4)) == [LeaseDenied(7, 4, full=False)]


def test_a_leased_worker_that_blocks_lends_its_lease_and_its_death_frees_it():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    core.handle(LeaseRequested(7, {"CPU": 1}, 1))
    core.handle(WorkerBlocked(w1, ()))
    assert core.pool.used["CPU"] == 0
    core.handle(WorkerUnblocked(w1))
    assert core.pool.used["CPU"] == 1
    acts = core.handle(WorkerDied(w1, "killed", pid=1))
    assert _of(acts, SpawnWorker) and core.pool.used["CPU"] == 0
    assert core.caller_leases(7) == []


def test_no_pipelining_while_an_older_task_of_another_shape_waits():
    core = _core(cpus=1, pool_size=1)
    (w1,) = _ready(core)
    core.handle(TaskSubmitted("a", "a", {"CPU": 1}, 0))
    core.handle(Tick(1.0))
    core.handle(TaskSubmitted("half", "half", {"CPU": 0.5}, 0))
    for t in "bcdefg":
        core.handle(TaskSubmitted(t, t, {"CPU": 1}, 0))
    assert _of(core.handle(Pipeline(0)), Dispatch) == []  # "half" would starve behind
    acts = core.handle(TaskFinished(w1, "a", [], 2.0))
    assert _of(core.handle(Tick(3.0)), Dispatch) == [Dispatch(w1, ("half",))]
    assert _of(acts, Reply) == [Reply("a", [])]


# ----------------------------------------------------------- invariants
_SHAPES = [{"CPU": 1.0}, {"CPU": 0.5}, {"CPU": 2.0}, {"CPU": 1.0, "GPU": 0.5},
           {"CPU": 0.0, "GPU": 1.0}, {"CPU": 1.0, "disk": 1.0}, {}]


class CoreMachine(RuleBasedStateMachine):
    """Random interleavings of events; the shell's side played honestly (it only
    reports what a worker could report)."""

    def __init__(self) -> None:
        super().__init__()
        self.core = _core(cpus=2, gpus=1, pool_size=2, disk=1.0)
        self.now = 0.0
        self.ids = itertools.count()
        self.accepted: set[str] = set()
        self.replied: set[str] = set()
        self.gone: set[str] = set()  # withdrawn or abandoned: no Reply
        self.starting: list[str] = []
        self.unblocked_ever = False
        self.actors: set[str] = set()
        self.recalled: set[str] = set()  # leases recalled (not returned yet)
        self._apply(self.core.start())

    # -- the shell's side
    def _apply(self, actions: list[Any], before: dict[str, tuple[str, Any]] | None = None
               ) -> None:
        before = before or {}
        fresh: set[str] = set()
        for a in actions:
            if isinstance(a, SpawnWorker):
                self.starting.append(a.worker_id)
            elif isinstance(a, Dispatch):
                state, lease = before.get(a.worker_id, ("?", None))
                assert self.core.workers[a.worker_id].caller is None, "a caller's worker"
                demand = self.core.tasks[a.task_ids[0]].demand
                if a.worker_id in fresh or state == "IDLE":
                    fresh.add(a.worker_id)  # (made LEASED by this very event)
                else:  # pipelined: only onto a busy lease of its own shape
                    assert state == "LEASED" and lease == demand, (a, state, lease)
                for tid in a.task_ids:
                    assert self.core.tasks[tid].demand == demand
            elif isinstance(a, StartActor):
                assert before.get(a.worker_id, ("?",))[0] == "IDLE"
            elif isinstance(a, LeaseGranted):  # only an idle worker, and nothing waits
                assert before.get(a.worker_id, ("?",))[0] == "IDLE"
                assert self.core.workers[a.worker_id].caller == a.caller
                assert not self.core.queued()
            elif isinstance(a, RecallLease):
                assert self.core.workers[a.worker_id].caller == a.caller
                assert a.worker_id not in self.recalled, "recalled twice"
                self.recalled.add(a.worker_id)
            elif isinstance(a, (Reply, Failed)):
                assert a.task_id in self.accepted, a
                assert a.task_id not in self.replied, f"second Reply for {a.task_id}"
                assert a.task_id not in self.gone
                self.replied.add(a.task_id)

    def _handle(self, event: Any) -> None:
        before = {w.id: (w.state, dict(w.lease) if w.lease is not None else None)
                  for w in self.core.workers.values()}
        self._apply(self.core.handle(event), before)

    def _pick(self, data: Any, items: list[Any]) -> Any:
        return items[data.draw(st.integers(0, len(items) - 1))]

    # -- rules
    @rule(shape=st.sampled_from(_SHAPES), retries=st.sampled_from([0, 1, 2, -1]))
    def submit(self, shape: dict[str, float], retries: int) -> None:
        tid = f"t{next(self.ids)}"
        self.accepted.add(tid)
        # Every other task comes with its record made by the caller (the node's way).
        n = len(self.accepted)
        entry = TaskEntry(tid, tid, shape, retries) if n % 2 else None
        self._handle(TaskSubmitted(tid, tid, shape, retries, entry))
        assert entry is None or self.core.tasks[tid] is entry

    @rule(shape=st.sampled_from(_SHAPES[:2]), n=st.integers(2, 6))
    def submit_many(self, shape: dict[str, float], n: int) -> None:
        """A burst of one shape: queues deep enough to pipeline."""
        for _ in range(n):
            self.submit(shape, 0)

    @precondition(lambda self: self.starting)
    @rule(data=st.data())
    def worker_ready(self, data: Any) -> None:
        wid = self._pick(data, self.starting)
        self.starting.remove(wid)
        self._handle(WorkerReady(wid))

    @rule()
    def tick(self) -> None:
        self.now += 1.0
        self._handle(Tick(self.now))

    @rule(keep=st.integers(0, 3))
    def pipeline(self, keep: int) -> None:
        self._handle(Pipeline(keep))

    def _busy(self) -> list[Any]:
        return [w for w in self.core.workers.values() if w.state == "LEASED" and w.tasks]

    @precondition(lambda self: self._busy())
    @rule(data=st.data(), anywhere=st.booleans())
    def finish(self, data: Any, anywhere: bool) -> None:
        w = self._pick(data, self._busy())
        t = self._pick(data, list(w.tasks)) if anywhere else w.tasks[0]
        self.now += 1.0
        self._handle(TaskFinished(w.id, t.id, [t.id], self.now))

    @precondition(lambda self: self.core.workers)
    @rule(data=st.data(), replace=st.booleans())
    def die(self, data: Any, replace: bool) -> None:
        wid = self._pick(data, list(self.core.workers))
        if wid in self.starting:
            self.starting.remove(wid)
        self.recalled.discard(wid)
        self._handle(WorkerDied(wid, "killed", pid=1, replace=replace))

    @precondition(lambda self: self._busy())
    @rule(data=st.data(), n=st.integers(0, 3))
    def block(self, data: Any, n: int) -> None:
        w = self._pick(data, self._busy())
        self._handle(WorkerBlocked(w.id, tuple(t.id for t in list(w.tasks)[1:1 + n])))

    @precondition(lambda self: any(w.blocked for w in self.core.workers.values()))
    @rule(data=st.data())
    def unblock(self, data: Any) -> None:
        w = self._pick(data, [w for w in self.core.workers.values() if w.blocked])
        self.unblocked_ever = self.unblocked_ever or w.lease is not None
        self._handle(WorkerUnblocked(w.id))

    @precondition(lambda self: self._busy())
    @rule(data=st.data())
    def hand_back(self, data: Any) -> None:
        w = self._pick(data, self._busy())
        self._handle(HandedBack(w.id, tuple(t.id for t in list(w.tasks)[1:])))

    @precondition(lambda self: self.core.tasks)
    @rule(data=st.data(), force=st.booleans())
    def cancel(self, data: Any, force: bool) -> None:
        self._handle(CancelRequested(self._pick(data, sorted(self.core.tasks)), force))

    @precondition(lambda self: any(map(self.core.revocable, self.core.tasks)))
    @rule(data=st.data())
    def revoke(self, data: Any) -> None:
        tid = self._pick(data, sorted(t for t in self.core.tasks if self.core.revocable(t)))
        self._handle(RevokeRequested((tid,)))

    @precondition(lambda self: self.core.queued_tasks())
    @rule(data=st.data())
    def withdraw(self, data: Any) -> None:
        tid = self._pick(data, [t for _, ids in self.core.queued_tasks() for t in ids])
        self.gone.add(tid)
        self._handle(Withdraw(tid))

    @precondition(lambda self: self.core.tasks)
    @rule(data=st.data())
    def abandon(self, data: Any) -> None:
        tid = self._pick(data, sorted(self.core.tasks))
        self.gone.add(tid)
        self._handle(TaskAbandoned(tid))

    @rule(shape=st.sampled_from(_SHAPES[:4]))
    def actor_comes(self, shape: dict[str, float]) -> None:
        aid = f"a{next(self.ids)}"
        self.actors.add(aid)
        self._handle(ActorQueued(aid, shape))

    @rule(shape=st.sampled_from(_SHAPES[:3]), caller=st.integers(1, 3))
    def lease_request(self, shape: dict[str, float], caller: int) -> None:
        self._handle(LeaseRequested(caller, shape, next(self.ids)))

    @rule(data=st.data())
    def lease_return(self, data: Any) -> None:
        leased = [w for w in self.core.workers.values() if w.caller is not None]
        if leased:
            w = self._pick(data, leased)
            self.recalled.discard(w.id)
            self._handle(LeaseReturned(w.id, w.caller))

    @rule(data=st.data())
    def leased_worker_blocks(self, data: Any) -> None:
        leased = [w for w in self.core.workers.values() if w.caller is not None]
        if leased:  # a caller's task waits in get: the worker lends its lease
            self._handle(WorkerBlocked(self._pick(data, leased).id, ()))

    @precondition(lambda self: self.core.actors)
    @rule(data=st.data(), shape=st.sampled_from([{}, {"CPU": 0.5}]))
    def actor_changes(self, data: Any, shape: dict[str, float]) -> None:
        aid = self._pick(data, sorted(self.core.actors))
        if data.draw(st.booleans()):
            self._handle(ActorResized(aid, shape))
        else:
            self._handle(ActorReleased(aid))

    # -- invariants
    @invariant()
    def bookings_are_exact_and_within_capacity(self) -> None:
        core = self.core
        booked: dict[str, float] = {}
        held = [w.lease for w in core.workers.values()
                if w.state == "LEASED" and not w.blocked and w.lease is not None]
        held += [a.holding for a in core.actors.values()]
        for demand in held:
            for k, v in demand.items():
                booked[k] = booked.get(k, 0.0) + v
        for k, total in core.pool.total.items():
            used = core.pool.used.get(k, 0.0)
            assert used == pytest.approx(booked.get(k, 0.0), abs=1e-6), (k, used, booked)
            if not self.unblocked_ever:  # (a resumed worker may take its lease back)
                assert used <= total + 1e-6, (k, used, total)
        assert all(-1e-9 <= f <= 1 + 1e-9 for f in core.gpus.free)

    @invariant()
    def every_task_is_in_exactly_one_place(self) -> None:
        core = self.core
        queued = [t for _, ids in core.queued_tasks() for t in ids]
        pipelined = [t.id for w in core.workers.values() for t in w.tasks
                     if core.tasks.get(t.id) is t]
        assert len(set(queued)) == len(queued) and len(set(pipelined)) == len(pipelined)
        assert not set(queued) & set(pipelined)
        revoking = {t for t, e in core.tasks.items() if e.state == "REVOKING"}
        assert set(core.tasks) == set(queued) | set(pipelined) | revoking
        assert not set(core.tasks) & (self.replied | self.gone)
        for w in core.workers.values():
            assert (w.state == "LEASED") == (w.lease is not None)
            if w.state != "LEASED":
                assert not w.tasks
            if w.caller is not None:  # a caller's: its tasks never pass the core
                assert w.state == "LEASED" and not w.tasks
        assert sorted(w.id for w in core.idle) == sorted(
            w.id for w in core.workers.values() if w.state == "IDLE")

    @invariant()
    def actors_wait_in_the_queue_or_own_their_worker(self) -> None:
        core = self.core
        queued = {i.id for _, items in core.queue.by_shape() for i in items
                  if not isinstance(i, TaskEntry)}
        for aid, a in core.actors.items():
            if a.worker is None:
                assert aid in queued and not a.holding, aid
            else:
                w = core.workers.get(a.worker)
                assert w is None or (w.state == "ACTOR" and w.actor == aid and not w.tasks)
        assert queued <= set(core.actors)
        assert all(isinstance(t, TaskEntry) for w in core.workers.values() for t in w.tasks)

    def teardown(self) -> None:
        """Run everything to its end: each accepted task got exactly one Reply or Failed."""
        core = self.core
        for _ in range(500):
            if not core.tasks:
                break
            for wid in list(self.starting):
                self.starting.remove(wid)
                self._handle(WorkerReady(wid))
            for w in list(core.workers.values()):
                if w.blocked:
                    self._handle(WorkerUnblocked(w.id))
            for aid in list(core.actors):
                self._handle(ActorReleased(aid))
            for w in list(core.workers.values()):
                if w.caller is not None and w.recalled:  # callers obey a recall
                    self._handle(LeaseReturned(w.id, w.caller))
            self.now += 1.0
            self._handle(Tick(self.now))
            self._handle(Pipeline(0))
            for w in self._busy():
                self._handle(TaskFinished(w.id, w.tasks[0].id, [], self.now))
            for tid in [t for t, e in core.tasks.items() if e.state == "REVOKING"]:
                w = core.workers[core.tasks[tid].worker]  # type: ignore[index]
                self._handle(TaskFinished(w.id, tid, [], self.now))
            if not core.workers:
                self._apply(core.start())
        assert not core.tasks, {t: e.state for t, e in core.tasks.items()}
        assert self.replied == self.accepted - self.gone


TestCoreInvariants = pytest.mark.timeout(300)(CoreMachine.TestCase)
TestCoreInvariants.settings = settings(max_examples=300, stateful_step_count=40, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])


def test_free_is_what_the_queue_leaves_once_it_took_what_fits():
    """What a node reports: a task queued while no worker is idle has its share
    already; one that does not fit takes nothing."""
    core = _core(cpus=4, pool_size=0)
    core.handle(TaskSubmitted("a", "a", {"CPU": 1}, 0))
    core.handle(TaskSubmitted("b", "b", {"CPU": 1}, 0))
    core.handle(TaskSubmitted("c", "c", {"CPU": 8}, 0))  # never fits here
    assert core.pool.available()["CPU"] == 4
    assert core.free()["CPU"] == 2
