"""The shared actor host (``fedexec.backends._actor_host``), without processes:
ordering, the concurrency bound, exactly-once outcomes, cancel, interrupt, close."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedexec.backends._actor_host import ActorHost
from fedexec.exceptions import TaskCancelledError

T = 30.0


class Runner:
    """Calls are ``(caller, seq, method, args)``; outcomes are recorded by key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: dict[str, list[tuple[Any, BaseException | None]]] = {}
        self.done = threading.Condition(self.lock)

    @contextlib.contextmanager
    def context(self, call: Any) -> Iterator[None]:
        yield

    def waits_for(self, call: Any) -> tuple[()]:
        return ()

    def arguments(self, call: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        return call[2], call[3], {}

    def finish(self, call: Any, result: Any, error: BaseException | None) -> None:
        with self.done:
            self.outcomes.setdefault(key(call), []).append((result, error))
            self.done.notify_all()

    def wait(self, n: int) -> None:
        with self.done:
            assert self.done.wait_for(lambda: len(self.outcomes) >= n, T)


def key(call: Any) -> str:
    return f"{call[0]}-{call[1]}"


class Recorder:
    """Records the order calls start in and the most running at once."""

    def __init__(self, hold: float = 0.0):
        self.lock = threading.Lock()
        self.started: list[tuple[int, int]] = []
        self.active = 0
        self.most = 0
        self.hold = hold

    def _enter(self, caller: int, seq: int) -> None:
        with self.lock:
            self.started.append((caller, seq))
            self.active += 1
            self.most = max(self.most, self.active)

    def _exit(self) -> None:
        with self.lock:
            self.active -= 1

    def work(self, caller: int, seq: int) -> int:
        self._enter(caller, seq)
        try:
            time.sleep(self.hold)
            return seq
        finally:
            self._exit()

    def fail(self, caller: int, seq: int) -> None:
        raise KeyError(seq)


class AsyncRecorder(Recorder):
    async def work(self, caller: int, seq: int) -> int:  # type: ignore[override]
        self._enter(caller, seq)
        try:
            await asyncio.sleep(self.hold)
            return seq
        finally:
            self._exit()

    async def nap(self) -> str:
        await asyncio.sleep(T)
        return "woke"


def make(instance: Any, concurrency: int, is_async: bool) -> tuple[ActorHost[Any], Runner]:
    runner = Runner()
    host: ActorHost[Any] = ActorHost(runner, concurrency=concurrency, is_async=is_async,
                                     name="Test")
    return host, runner


def submit(host: ActorHost[Any], caller: int, seq: int, method: str = "work") -> None:
    call = (caller, seq, method, (caller, seq))
    assert host.submit(key(call), call)


@pytest.mark.timeout(300)
@settings(max_examples=25, deadline=None)
@given(is_async=st.booleans(), concurrency=st.integers(1, 4),
       calls=st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=25),
       early=st.integers(0, 25))
def test_order_bound_and_exactly_once(is_async, concurrency, calls, early):
    recorder = (AsyncRecorder if is_async else Recorder)(hold=0.001)
    host, runner = make(recorder, concurrency, is_async)
    seqs: dict[int, int] = {}
    for i, (caller, failing) in enumerate(calls):
        if i == early:  # some calls are queued before the instance exists
            host.start(lambda: recorder)
        seqs[caller] = seqs.get(caller, -1) + 1
        submit(host, caller, seqs[caller], "fail" if failing else "work")
    if early >= len(calls):
        host.start(lambda: recorder)
    runner.wait(len(calls))
    assert host.drain(T)
    # every accepted call ended exactly once, with its own outcome
    assert len(runner.outcomes) == len(calls)
    for k, outs in runner.outcomes.items():
        assert len(outs) == 1
        result, error = outs[0]
        seq = int(k.split("-")[1])
        assert result == seq if error is None else isinstance(error, KeyError)
    # never more than max_concurrency at once; strictly serial with one
    assert recorder.most <= concurrency
    # each caller's calls started in submission order
    for caller in seqs:
        mine = [s for c, s in recorder.started if c == caller]
        assert mine == sorted(mine)
    host.close()


@pytest.mark.parametrize("is_async", [False, True])
def test_max_concurrency_calls_do_run_at_once(is_async):
    recorder = (AsyncRecorder if is_async else Recorder)(hold=0.3)
    host, runner = make(recorder, 3, is_async)
    host.start(lambda: recorder)
    for seq in range(6):
        submit(host, 0, seq)
    runner.wait(6)
    assert recorder.most == 3
    host.close()


def test_a_cancelled_queued_call_never_runs_and_is_not_finished():
    recorder = Recorder()
    host, runner = make(recorder, 1, False)
    for seq in range(3):
        submit(host, 0, seq)
    taken = host.cancel("0-1")
    assert taken is not None and taken[1] == 1
    assert host.cancel("0-1") is None
    host.start(lambda: recorder)
    runner.wait(2)
    assert host.drain(T)
    assert sorted(runner.outcomes) == ["0-0", "0-2"]
    assert recorder.started == [(0, 0), (0, 2)]
    host.close()


class SlowFinish(Runner):
    """A runner whose ``finish`` (the backend completing the caller's refs) blocks
    until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def finish(self, call: Any, result: Any, error: BaseException | None) -> None:
        self.entered.set()
        assert self.release.wait(T)
        super().finish(call, result, error)


@pytest.mark.parametrize("is_async", [False, True])
def test_drain_returns_only_after_the_last_calls_finish_returned(is_async):
    # A graceful shutdown drains, then closes: were drain to return while finish
    # still ran, the call's refs would be pending after shutdown(wait=True).
    runner = SlowFinish()
    host: ActorHost[Any] = ActorHost(runner, concurrency=1, is_async=is_async, name="Test")
    recorder = AsyncRecorder() if is_async else Recorder()
    host.start(lambda: recorder)
    submit(host, 0, 0)
    assert runner.entered.wait(T)
    assert not host.drain(0.3), "drain returned while finish was still running"
    runner.release.set()
    assert host.drain(T)
    assert list(runner.outcomes) == ["0-0"]
    host.close()


def test_interrupting_a_running_async_call_finishes_it_with_task_cancelled_error():
    recorder = AsyncRecorder()
    host, runner = make(recorder, 10, True)
    host.start(lambda: recorder).result(T)
    call = (0, 0, "nap", ())
    host.submit(key(call), call)
    deadline = time.monotonic() + T
    while not host.interrupt("0-0"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    runner.wait(1)
    [(result, error)] = runner.outcomes["0-0"]
    assert result is None
    assert isinstance(error, TaskCancelledError)
    assert not host.interrupt("0-0")
    host.close()


@pytest.mark.parametrize("is_async", [False, True])
def test_close_returns_queued_and_running_calls_and_drops_their_outcome(is_async):
    release = threading.Event()

    class Blocker:
        def work(self, caller, seq):
            release.wait(T)
            return seq

    class AsyncBlocker:
        async def work(self, caller, seq):
            while not release.is_set():
                await asyncio.sleep(0.01)
            return seq

    instance = AsyncBlocker() if is_async else Blocker()
    host, runner = make(instance, 1, is_async)
    host.start(lambda: instance).result(T)
    for seq in range(3):
        submit(host, 0, seq)
    deadline = time.monotonic() + T
    while host.queued() != 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    queued, running = host.close()
    assert [c[1] for c in queued] == [1, 2]
    assert [c[1] for c in running] == [0]
    assert host.close() == ([], [])
    assert not host.submit("x", (1, 0, "work", (1, 0)))
    release.set()
    time.sleep(0.2)
    assert runner.outcomes == {}


@pytest.mark.parametrize("is_async", [False, True])
def test_a_raising_constructor_runs_no_call(is_async):
    host, runner = make(None, 1, is_async)
    submit(host, 0, 0)

    def broken():
        raise RuntimeError("constructor exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        host.start(broken).result(T)
    queued, running = host.close()
    assert [c[1] for c in queued] == [0] and running == []
    assert runner.outcomes == {}


def test_an_async_constructor_runs_on_the_loop_its_calls_run_on():
    loops = []

    class Actor:
        def __init__(self):
            loops.append(asyncio.get_running_loop())

        async def work(self, caller, seq):
            loops.append(asyncio.get_running_loop())
            return seq

    host, runner = make(None, 1, True)
    host.start(Actor).result(T)
    submit(host, 0, 0)
    runner.wait(1)
    assert loops[0] is loops[1]
    host.close()


def test_a_sync_method_of_an_async_actor_runs_on_the_loop_thread():
    class Actor:
        async def work(self, caller, seq):
            return threading.get_ident()

        def plain(self, caller, seq):
            return threading.get_ident()

    host, runner = make(None, 5, True)
    host.start(Actor).result(T)
    submit(host, 0, 0)
    submit(host, 0, 1, "plain")
    runner.wait(2)
    assert runner.outcomes["0-0"][0][0] == runner.outcomes["0-1"][0][0]
    host.close()


def test_an_async_call_waits_for_its_futures_without_blocking_the_loop():
    import concurrent.futures as cf

    gate: cf.Future[int] = cf.Future()

    class Actor:
        async def work(self, caller, seq):
            return seq

    class Waiting(Runner):
        def waits_for(self, call):
            return [gate] if call[1] == 0 else []

    runner = Waiting()
    host: ActorHost[Any] = ActorHost(runner, concurrency=2, is_async=True, name="Test")
    host.start(Actor).result(T)
    submit(host, 0, 0)
    submit(host, 0, 1)
    runner.wait(1)
    assert list(runner.outcomes) == ["0-1"]
    gate.set_result(0)
    runner.wait(2)
    host.close()


def test_start_here_serves_on_the_calling_thread_until_closed():
    class Actor:
        def work(self, caller, seq):
            return threading.get_ident()

    host, runner = make(None, 1, False)
    submit(host, 0, 0)

    def close_when_done():
        runner.wait(1)
        host.close()

    closer = threading.Thread(target=close_when_done)
    closer.start()
    built = host.start(Actor, here=True)  # returns once closed
    closer.join(T)
    assert built.exception() is None
    assert runner.outcomes["0-0"][0][0] == threading.get_ident()


class _Idle:
    """A stand-in for a worker reading its links while the actor is idle: polls
    ``ready`` (the host's) and says how often it was entered; ``able`` False: it
    declines, so the host waits on its condition as before."""

    def __init__(self, able: bool = True):
        self.able = able
        self.entered = 0
        self.threads: set[str] = set()

    def __call__(self, ready: Any) -> bool:
        self.entered += 1
        self.threads.add(threading.current_thread().name)
        if not self.able:
            return False
        deadline = time.monotonic() + T
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.001)
        return True


@pytest.mark.parametrize("able", [True, False])
def test_an_idle_sync_actor_hands_its_thread_to_the_idle_hook_and_serves_in_order(able):
    idle = _Idle(able)
    runner = Runner()
    host: ActorHost[Any] = ActorHost(runner, concurrency=1, is_async=False, name="Test",
                                     idle=idle)
    host.start(Recorder)
    time.sleep(0.05)
    assert idle.entered >= 1  # idle from the start: the hook got the thread
    for seq in range(50):
        submit(host, 0, seq)
        if seq % 10 == 0:
            time.sleep(0.01)  # (idle again between some)
    runner.wait(50)
    assert [runner.outcomes[f"0-{i}"] for i in range(50)] == [[(i, None)] for i in range(50)]
    assert idle.threads == {"fedexec-actor-Test"}  # only ever the host's own thread
    host.close()  # ends the idle hook's wait (ready: no longer serving)
    assert host.drain(T)


def test_the_idle_hook_is_for_one_thread_sync_actors_only():
    for concurrency, is_async in [(2, False), (1, True)]:
        idle = _Idle()
        host: ActorHost[Any] = ActorHost(Runner(), concurrency=concurrency,
                                         is_async=is_async, name="Test", idle=idle)
        host.start(AsyncRecorder if is_async else Recorder)
        time.sleep(0.05)
        host.close()
        assert idle.entered == 0
