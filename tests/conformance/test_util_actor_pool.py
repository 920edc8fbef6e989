"""``fedexec.util.ActorPool`` (API.md "Runtime helpers"; Ray's ActorPool semantics)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from _support import block, gates_fixture, poll_until

import fedexec
from fedexec.util import ActorPool

pytestmark = pytest.mark.requires("actors")

gates = gates_fixture()

T = 30


class Worker:
    def __init__(self):
        self.id = uuid.uuid4().hex

    def double(self, v):
        return 2 * v

    def sleepy_double(self, v):
        time.sleep(0.02 * (v % 3))
        return 2 * v

    def gated(self, v, release, started):
        """Touch ``started``, wait for ``release``, return ``v``."""
        return block(release, v, started)

    def checked(self, v):
        if v < 0:
            raise ValueError(f"negative input {v}")
        return v

    def whoami(self, _):
        return self.id


def double(actor, v):
    return actor.double.remote(v)


def gated(gate):
    """``fn`` whose call for ``v`` touches ``gate.marker(f"started-{v}")`` and waits."""
    return lambda actor, v: actor.gated.remote(v, gate.release, gate.marker(f"started-{v}"))


def started(gate):
    return sum(name.startswith("started-") for name in os.listdir(gate.dir))


def run_pool_in_task(actors, values):
    pool = ActorPool(actors)
    return list(pool.map(lambda a, v: a.double.remote(v), values))


# --------------------------------------------------------------------------- map
def test_map_returns_results_in_input_order(ex):
    pool = ActorPool([ex.actor(Worker) for _ in range(3)])
    values = list(range(12))
    assert list(pool.map(lambda a, v: a.sleepy_double.remote(v), values)) == [
        2 * v for v in values]
    assert not pool.has_next()


def test_map_unordered_yields_results_as_they_finish(ex, gates):
    gate = gates()
    pool = ActorPool([ex.actor(Worker) for _ in range(2)])
    slow_then_fast = gated(gate)

    def fn(actor, v):
        return slow_then_fast(actor, v) if v == "slow" else actor.double.remote(v)

    results = pool.map_unordered(fn, ["slow", 21])
    assert next(results) == 42  # the second value finished first
    gate.open()
    assert next(results) == "slow"
    assert list(results) == []


def test_map_on_no_values_is_empty(ex):
    pool = ActorPool([ex.actor(Worker)])
    assert list(pool.map(double, [])) == []
    assert list(pool.map_unordered(double, [])) == []


def test_map_drops_results_not_taken_from_an_earlier_map(ex):
    pool = ActorPool([ex.actor(Worker) for _ in range(2)])
    first = pool.map(double, range(6))
    assert next(first) == 0
    assert list(pool.map(double, [10, 11])) == [20, 22]
    assert pool.has_free() and not pool.has_next()


def test_pool_works_inside_a_task(ex):
    actors = [ex.actor(Worker) for _ in range(2)]
    assert ex.get(ex.submit(run_pool_in_task, actors, range(5)), timeout=T) == [
        0, 2, 4, 6, 8]


# --------------------------------------------------------------------------- submit / get_next
def test_more_work_than_actors_waits_in_the_pool(ex, gates):
    gate = gates()
    pool = ActorPool([ex.actor(Worker) for _ in range(2)])
    for v in range(6):
        pool.submit(gated(gate), v)
    assert pool.has_next()
    assert not pool.has_free()
    assert pool.pop_idle() is None
    assert poll_until(lambda: started(gate) == 2, timeout=T)
    gate.open()
    assert [pool.get_next(timeout=T) for _ in range(6)] == list(range(6))
    assert not pool.has_next()
    assert pool.has_free()


def test_waiting_work_goes_to_whichever_actor_frees_first(ex, gates):
    gate = gates()
    pool = ActorPool([ex.actor(Worker) for _ in range(2)])
    pool.submit(gated(gate), "stuck")  # holds one actor until the gate opens
    for v in range(1, 5):
        pool.submit(double, v)  # all must run on the other actor
    assert sorted(pool.get_next_unordered(timeout=T) for _ in range(4)) == [2, 4, 6, 8]
    assert pool.has_next()  # "stuck" is still held at its gate
    gate.open()
    assert pool.get_next_unordered(timeout=T) == "stuck"


def test_each_actor_runs_one_call_at_a_time_and_all_are_used(ex):
    actors = [ex.actor(Worker) for _ in range(3)]
    ids = {ex.get(a.whoami.remote(None), timeout=T) for a in actors}
    pool = ActorPool(actors)
    for v in range(9):
        pool.submit(lambda a, v: a.whoami.remote(v), v)
    seen = [pool.get_next_unordered(timeout=T) for _ in range(9)]
    assert set(seen) == ids


def test_get_next_with_nothing_pending_raises_stop_iteration(ex):
    pool = ActorPool([ex.actor(Worker)])
    assert not pool.has_next()
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_get_next_timeout_raises_and_the_result_stays_fetchable(ex, gates):
    gate = gates()
    pool = ActorPool([ex.actor(Worker)])
    pool.submit(gated(gate), "late")
    with pytest.raises(TimeoutError) as info:
        pool.get_next(timeout=0.2)
    assert isinstance(info.value, fedexec.GetTimeoutError)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.2)
    assert pool.has_next() and not pool.has_free()
    gate.open()
    assert pool.get_next(timeout=T) == "late"
    assert pool.has_free()


def test_get_next_ignore_if_timedout_drops_the_call_and_frees_its_actor(ex, gates):
    gate = gates()
    pool = ActorPool([ex.actor(Worker)])
    pool.submit(gated(gate), "dropped")
    pool.submit(double, 5)  # waits for the only actor
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.2, ignore_if_timedout=True)
    gate.open()
    assert pool.get_next(timeout=T) == 10  # the dropped result is never returned
    assert not pool.has_next()


def test_get_next_after_unordered_took_the_next_in_order_raises(ex, gates):
    gate = gates()
    pool = ActorPool([ex.actor(Worker) for _ in range(2)])
    pool.submit(gated(gate), "slow")
    pool.submit(double, 1)
    assert pool.get_next_unordered(timeout=T) == 2
    with pytest.raises(ValueError, match="get_next_unordered"):
        pool.get_next()
    gate.open()
    assert pool.get_next_unordered(timeout=T) == "slow"


def test_a_failing_call_raises_and_its_actor_returns_to_the_pool(ex):
    pool = ActorPool([ex.actor(Worker)])
    for v in [1, -2, 3]:
        pool.submit(lambda a, v: a.checked.remote(v), v)
    assert pool.get_next(timeout=T) == 1
    with pytest.raises(ValueError, match="negative input -2"):
        pool.get_next(timeout=T)
    assert pool.get_next(timeout=T) == 3
    assert pool.has_free()
    assert list(pool.map(double, [4, 5])) == [8, 10]


def test_fn_that_does_not_return_a_ref_is_a_type_error(ex):
    actor = ex.actor(Worker)
    pool = ActorPool([actor])
    with pytest.raises(TypeError, match="ObjectRef"):
        pool.submit(lambda a, v: v, 1)
    assert pool.has_free() and not pool.has_next()
    assert pool.pop_idle() == actor


# --------------------------------------------------------------------------- membership
def test_pop_idle_and_push(ex):
    a, b = ex.actor(Worker), ex.actor(Worker)
    pool = ActorPool([a])
    assert pool.has_free()
    assert pool.pop_idle() == a
    assert not pool.has_free()
    assert pool.pop_idle() is None
    pool.submit(double, 3)  # no actor: waits in the pool
    assert not pool.has_next()
    pool.push(b)  # starts the waiting call
    assert pool.has_next()
    assert pool.get_next(timeout=T) == 6
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(b)
    pool.push(a)
    assert pool.has_free()


def test_push_of_a_busy_member_raises(ex, gates):
    gate = gates()
    a = ex.actor(Worker)
    pool = ActorPool([a])
    pool.submit(gated(gate), 0)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a)
    gate.open()
    assert pool.get_next(timeout=T) == 0
