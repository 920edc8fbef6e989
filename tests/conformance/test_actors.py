"""Actors (API.md "Actors", "Options" and "Semantics in detail")."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from _support import block, gates_fixture, square

import fedexec

pytestmark = pytest.mark.requires("actors")

gates = gates_fixture()

T = 30


class Counter:
    def __init__(self, start=0, *, step=1):
        self.value = start
        self.step = step

    def incr(self, n=None):
        self.value += self.step if n is None else n
        return self.value

    def read(self):
        return self.value

    def fail(self, message):
        raise ValueError(message)

    def pair(self):
        return self.value, -self.value

    def wait_for(self, release, started):
        return block(release, "unblocked", started)


class Log:
    def __init__(self):
        self.items = []

    def append(self, x):
        self.items.append(x)

    def read(self):
        return list(self.items)


class Meeting:
    """``meet(n, timeout)`` is True only if ``n`` calls were inside it at once."""

    def __init__(self):
        self.count = 0
        self.cond = threading.Condition()

    def meet(self, n, timeout):
        with self.cond:
            self.count += 1
            self.cond.notify_all()
            return self.cond.wait_for(lambda: self.count >= n, timeout)


class AsyncMeeting:
    def __init__(self):
        self.count = 0
        self.event = None

    async def meet(self, n, timeout):
        if self.event is None:
            self.event = asyncio.Event()
        self.count += 1
        if self.count >= n:
            self.event.set()
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def running_loop(self):
        return asyncio.get_running_loop() is not None


class LoopBound:
    """An async actor whose ``__init__`` makes a task on the actor's event loop."""

    def __init__(self):
        self.ticker = asyncio.get_running_loop().create_task(asyncio.sleep(0, "ticked"))

    async def tick(self):
        return await self.ticker


class AsyncGauge:
    """Counts how many calls are inside ``hold`` at once."""

    def __init__(self):
        self.active = 0
        self.most = 0

    async def hold(self, seconds):
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.active -= 1

    async def most_at_once(self):
        return self.most


class BrokenInit:
    def __init__(self):
        raise RuntimeError("constructor exploded")

    def read(self):
        return "unreachable"


class Forwarder:
    def __init__(self, target):
        self.target = target

    def forward(self, n):
        return fedexec.get(self.target.incr.remote(n), timeout=T)

    def forward_to(self, other, n):
        return fedexec.get(other.incr.remote(n), timeout=T)


def use_counter(handle, n):
    return fedexec.get(handle.incr.remote(n), timeout=T)


def unique(prefix="actor"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- basics
def test_actor_method_returns_a_ref_with_its_result(ex):
    counter = ex.actor(Counter)
    ref = counter.incr.remote()
    assert isinstance(ref, fedexec.ObjectRef)
    assert ex.get(ref, timeout=T) == 1


def test_actor_constructor_gets_positional_and_keyword_arguments(ex):
    counter = ex.actor(Counter, 10, step=5)
    assert ex.get(counter.incr.remote(), timeout=T) == 15


def test_actor_keeps_state_between_calls(ex):
    counter = ex.actor(Counter)
    for _ in range(3):
        counter.incr.remote(2)
    assert ex.get(counter.read.remote(), timeout=T) == 6


def test_actor_handle_exposes_an_actor_id(ex):
    a, b = ex.actor(Counter), ex.actor(Counter)
    assert isinstance(a.actor_id, str) and a.actor_id
    assert a.actor_id != b.actor_id


def test_separate_actors_have_separate_state(ex):
    a, b = ex.actor(Counter), ex.actor(Counter, 100)
    a.incr.remote(1)
    assert ex.get([a.read.remote(), b.read.remote()], timeout=T) == [1, 100]


def test_calls_from_one_caller_run_in_submission_order(ex):
    log = ex.actor(Log)
    for i in range(200):
        log.append.remote(i)
    assert ex.get(log.read.remote(), timeout=T) == list(range(200))


def test_default_max_concurrency_runs_one_call_at_a_time(ex):
    meeting = ex.actor(Meeting)
    first, second = meeting.meet.remote(2, 0.5), meeting.meet.remote(2, 0.5)
    # Run one after the other: the first waits alone and times out.
    assert ex.get([first, second], timeout=T) == [False, True]


def test_max_concurrency_above_one_runs_calls_concurrently(ex):
    meeting = ex.options(max_concurrency=3).actor(Meeting)
    refs = [meeting.meet.remote(3, 10) for _ in range(3)]
    assert ex.get(refs, timeout=T) == [True, True, True]


def test_actor_method_accepts_refs_as_arguments(ex):
    counter = ex.actor(Counter)
    assert ex.get(counter.incr.remote(ex.submit(square, 3)), timeout=T) == 9


class Unboxer:
    def first(self, boxed):
        return fedexec.get(boxed[0], timeout=T)


def test_actor_gets_a_just_put_ref_nested_in_an_argument(ex):
    # The put and the call leave back to back; the actor must find the object
    # (native: the call once went straight to the worker, which could ask for the
    # object before the node manager had read the PUT, and got ObjectLostError).
    unboxer = ex.actor(Unboxer)
    assert ex.get(unboxer.first.remote([ex.put(-1)]), timeout=T) == -1  # links set up
    values = [{"v": i, "pad": bytes(64)} for i in range(200)]
    got = [ex.get(unboxer.first.remote([ex.put(v)]), timeout=T) for v in values]
    assert got == values


def test_actor_result_ref_can_feed_a_task(ex):
    counter = ex.actor(Counter)
    assert ex.get(ex.submit(square, counter.incr.remote(4)), timeout=T) == 16


def test_actor_method_num_returns_gives_several_refs(ex):
    counter = ex.actor(Counter, 7)
    refs = counter.pair.options(num_returns=2).remote()
    assert isinstance(refs, list) and len(refs) == 2
    assert ex.get(refs, timeout=T) == [7, -7]


def test_actor_accepts_an_actor_class_made_by_remote(ex):
    counter = ex.actor(fedexec.remote(Counter), 3)
    assert ex.get(counter.read.remote(), timeout=T) == 3


# --------------------------------------------------------------------------- misuse
def test_calling_an_actor_method_directly_raises_type_error(ex):
    counter = ex.actor(Counter)
    with pytest.raises(TypeError, match="remote"):
        counter.incr(1)


def test_instantiating_a_remote_actor_class_directly_raises_type_error(backend_name):
    remote_counter = fedexec.remote(Counter)
    with pytest.raises(TypeError, match="remote"):
        remote_counter()


def test_actor_of_a_non_class_raises_type_error(ex):
    with pytest.raises(TypeError):
        ex.actor(square)


def test_unknown_actor_method_raises_attribute_error(ex):
    counter = ex.actor(Counter)
    with pytest.raises(AttributeError):
        counter.no_such_method


# --------------------------------------------------------------------------- failures
def test_method_raising_leaves_the_actor_alive_with_its_state(ex):
    counter = ex.actor(Counter)
    counter.incr.remote(5)
    with pytest.raises(ValueError, match="method failed"):
        ex.get(counter.fail.remote("method failed"), timeout=T)
    assert ex.get(counter.incr.remote(1), timeout=T) == 6


def test_method_error_is_a_task_error_of_the_original_type(ex):
    counter = ex.actor(Counter)
    err = counter.fail.remote("typed").exception(timeout=T)
    assert isinstance(err, fedexec.TaskError) and isinstance(err, ValueError)


def test_init_raising_makes_calls_raise_actor_died_error(ex):
    broken = ex.actor(BrokenInit)
    with pytest.raises(fedexec.ActorDiedError):
        ex.get(broken.read.remote(), timeout=T)
    with pytest.raises(fedexec.ActorDiedError):
        ex.get(broken.read.remote(), timeout=T)


def test_actor_died_error_from_init_mentions_the_constructor_error(ex):
    broken = ex.actor(BrokenInit)
    with pytest.raises(fedexec.ActorDiedError) as info:
        ex.get(broken.read.remote(), timeout=T)
    assert "constructor exploded" in str(info.value)


def test_kill_makes_later_calls_raise_actor_died_error(ex):
    counter = ex.actor(Counter)
    assert ex.get(counter.incr.remote(), timeout=T) == 1
    ex.kill(counter)
    ref = counter.read.remote()  # .remote() itself does not raise
    with pytest.raises(fedexec.ActorDiedError):
        ex.get(ref, timeout=T)


def test_kill_fails_calls_queued_behind_a_running_call(ex, gates):
    gate = gates()
    counter = ex.actor(Counter)
    counter.wait_for.remote(gate.release, gate.started)
    queued = counter.incr.remote()
    gate.wait_started()
    ex.kill(counter)
    with pytest.raises(fedexec.ActorDiedError):
        ex.get(queued, timeout=T)


def test_kill_of_a_non_handle_raises_type_error(ex):
    with pytest.raises(TypeError):
        ex.kill("not an actor")


@pytest.mark.requires("actors", "actor_restarts")
def test_killed_actor_with_restarts_left_is_rebuilt_by_init(ex):
    counter = ex.options(max_restarts=1).actor(Counter, 10)
    assert ex.get(counter.incr.remote(5), timeout=T) == 15
    ex.kill(counter, no_restart=False)
    assert ex.get(counter.read.remote(), timeout=T) == 10


@pytest.mark.requires("actors", "actor_restarts")
def test_actor_dies_for_good_once_restarts_are_exhausted(ex):
    counter = ex.options(max_restarts=1).actor(Counter)
    ex.kill(counter, no_restart=False)
    assert ex.get(counter.incr.remote(), timeout=T) == 1
    ex.kill(counter, no_restart=False)
    with pytest.raises(fedexec.ActorDiedError):
        ex.get(counter.read.remote(), timeout=T)


@pytest.mark.requires("actors", "actor_restarts")
def test_kill_with_no_restart_true_ignores_max_restarts(ex):
    counter = ex.options(max_restarts=5).actor(Counter)
    ex.kill(counter)
    with pytest.raises(fedexec.ActorDiedError):
        ex.get(counter.read.remote(), timeout=T)


# --------------------------------------------------------------------------- handles
def test_actor_handle_passed_to_a_task_works(ex):
    counter = ex.actor(Counter)
    assert ex.get(ex.submit(use_counter, counter, 5), timeout=T) == 5
    assert ex.get(counter.read.remote(), timeout=T) == 5


def test_actor_handle_passed_to_another_actor_works(ex):
    counter = ex.actor(Counter)
    forwarder = ex.actor(Forwarder, counter)
    assert ex.get(forwarder.forward.remote(3), timeout=T) == 3
    assert ex.get(forwarder.forward_to.remote(counter, 4), timeout=T) == 7
    assert ex.get(counter.read.remote(), timeout=T) == 7


# --------------------------------------------------------------------------- async
@pytest.mark.requires("actors", "async_actors")
def test_async_methods_run_on_an_event_loop(ex):
    actor = ex.actor(AsyncMeeting)
    assert ex.get(actor.running_loop.remote(), timeout=T) is True


@pytest.mark.requires("actors", "async_actors")
def test_async_actor_runs_calls_concurrently_by_default(ex):
    actor = ex.actor(AsyncMeeting)
    refs = [actor.meet.remote(3, 10) for _ in range(3)]
    assert ex.get(refs, timeout=T) == [True, True, True]


@pytest.mark.requires("actors", "async_actors")
def test_async_actor_init_runs_on_the_loop_its_calls_run_on(ex):
    actor = ex.actor(LoopBound)
    assert ex.get(actor.tick.remote(), timeout=T) == "ticked"


@pytest.mark.requires("actors", "async_actors")
def test_async_actor_max_concurrency_bounds_concurrent_calls(ex):
    gauge = ex.options(max_concurrency=2).actor(AsyncGauge)
    holds = [gauge.hold.remote(0.5) for _ in range(4)]
    ex.get(holds, timeout=T)
    # Four calls that each hold for 0.5 s: two at a time, never three.
    assert ex.get(gauge.most_at_once.remote(), timeout=T) == 2


# --------------------------------------------------------------------------- named
@pytest.mark.requires("actors", "named_actors")
def test_named_actor_is_found_by_get_actor(ex):
    name = unique()
    counter = ex.options(name=name).actor(Counter)
    found = ex.get_actor(name)
    assert found == counter
    found.incr.remote(3)
    assert ex.get(counter.read.remote(), timeout=T) == 3


@pytest.mark.requires("actors", "named_actors")
def test_get_actor_of_an_unknown_name_raises_value_error(ex):
    with pytest.raises(ValueError):
        ex.get_actor(unique("missing"))


@pytest.mark.requires("actors", "named_actors")
def test_creating_a_second_actor_with_a_taken_name_raises_value_error(ex):
    name = unique()
    ex.options(name=name).actor(Counter)
    with pytest.raises(ValueError):
        ex.options(name=name).actor(Counter)


@pytest.mark.requires("actors", "named_actors")
def test_get_if_exists_returns_the_existing_named_actor(ex):
    name = unique()
    first = ex.options(name=name, get_if_exists=True).actor(Counter, 1)
    second = ex.options(name=name, get_if_exists=True).actor(Counter, 99)
    assert second.actor_id == first.actor_id
    assert ex.get(second.read.remote(), timeout=T) == 1


@pytest.mark.requires("actors", "named_actors")
def test_same_name_in_different_namespaces_names_different_actors(ex):
    name = unique()
    ex.options(name=name, namespace="ns-a").actor(Counter, 1)
    ex.options(name=name, namespace="ns-b").actor(Counter, 2)
    a, b = ex.get_actor(name, namespace="ns-a"), ex.get_actor(name, namespace="ns-b")
    assert a != b
    assert ex.get([a.read.remote(), b.read.remote()], timeout=T) == [1, 2]
    with pytest.raises(ValueError):
        ex.get_actor(name, namespace="ns-c")


@pytest.mark.requires("actors", "named_actors")
def test_executor_namespace_is_the_default_namespace_of_named_actors(make_executor):
    executor = make_executor(namespace="team")
    name = unique()
    executor.options(name=name).actor(Counter, 5)
    assert executor.get(executor.get_actor(name).read.remote(), timeout=T) == 5
    assert executor.get(executor.get_actor(name, "team").read.remote(), timeout=T) == 5
    with pytest.raises(ValueError):
        executor.get_actor(name, namespace="other-team")


@pytest.mark.requires("actors", "named_actors")
def test_killed_named_actor_frees_its_name(ex):
    name = unique()
    ex.kill(ex.options(name=name).actor(Counter))
    with pytest.raises(ValueError):
        ex.get_actor(name)
    again = ex.options(name=name).actor(Counter, 8)
    assert ex.get(ex.get_actor(name).read.remote(), timeout=T) == 8
    assert ex.get_actor(name) == again
