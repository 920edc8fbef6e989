"""Shutdown ends, whatever state tasks and actors are in (API.md: ``shutdown``
behaves like the stdlib's; issue #11: a shutdown that hung on the dask backend).

Each test calls shutdown on a thread and joins it with a generous bound, so a
hang fails the test instead of hanging it. Tasks here end on their own within a
few seconds (``wait=True`` lets running work finish, as the stdlib does); the
bound is far above that. After shutdown no ref is left pending, and no process
or ``fedexec`` thread started by the test is left (beyond what a backend keeps for
the whole interpreter, such as Spark's context and its Python daemon: one
executor of the backend has run before the test measures).
"""

from __future__ import annotations

import threading
import time

import pytest
from _support import poll_until, touch

import _leaks
import fedexec

T = 30
#: Shutdown must return within this (it is a "does not hang" bound, not a speed).
BOUND = 30
#: How long the slow tasks and calls here run.
SLOW_S = 3


def touch_then_sleep(path, seconds):
    touch(path)
    time.sleep(seconds)  # inside C code: only killing the worker stops it early
    return "slept"


def parent_waiting_on_child(started, seconds):
    child = fedexec.remote(time.sleep).remote(seconds)
    touch(started)
    fedexec.get(child, timeout=T)
    return "child done"


class Napper:
    def nap(self, started, seconds):
        touch(started)
        time.sleep(seconds)
        return "woke"


@pytest.fixture(scope="module")
def warmed_up(backend_name):
    """One executor of the backend has run a task and shut down: what the backend
    keeps for the whole interpreter exists before a test measures."""
    executor = fedexec.Executor(backend=backend_name, num_cpus=2)
    executor.get([executor.submit(time.sleep, 0.1) for _ in range(2)], timeout=T)
    executor.shutdown()


@pytest.fixture
def nothing_left(warmed_up):
    """A check to call after shutdown: no child process and no ``fedexec`` thread
    started since the test began is left (waits up to 15 s for them to end)."""
    before = _leaks.snapshot()

    def check():
        def left():
            procs, files, threads = _leaks.started_since(before)
            return [*procs.values(), *files, *threads.values()]

        assert poll_until(lambda: not left(), timeout=15), f"left after shutdown: {left()}"

    return check


def shut_down_within(shutdown, bound=BOUND):
    """Run ``shutdown()`` on a thread; fail the test if it has not returned within
    ``bound`` seconds or raised."""
    errors = []

    def run():
        try:
            shutdown()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True, name="test-shutdown")
    start = time.monotonic()
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"shutdown did not return within {bound} s (it hangs)"
    assert not errors, f"shutdown raised {errors[0]!r}"
    return time.monotonic() - start


@pytest.mark.timeout(120)
@pytest.mark.requires("cancel_running", "worker_processes")
def test_shutdown_returns_after_a_running_task_was_force_cancelled(backend_name, tmp_path,
                                                                   nothing_left):
    executor = fedexec.Executor(backend=backend_name, num_cpus=2)
    started = str(tmp_path / "started")
    ref = executor.submit(touch_then_sleep, started, 40)
    assert poll_until(lambda: (tmp_path / "started").exists(), timeout=T)
    assert executor.cancel(ref, force=True) is True
    shut_down_within(lambda: executor.shutdown(wait=True, cancel_futures=True))
    with pytest.raises(fedexec.TaskCancelledError):
        ref.result(0)
    nothing_left()


@pytest.mark.timeout(120)
def test_shutdown_of_the_default_executor_returns_after_a_get_timed_out(backend_name,
                                                                       nothing_left):
    fedexec.init(backend=backend_name, num_cpus=2)
    slow = fedexec.remote(time.sleep).remote(SLOW_S)
    with pytest.raises(fedexec.GetTimeoutError):
        fedexec.get(slow, timeout=0.3)
    shut_down_within(fedexec.shutdown)
    assert not fedexec.is_initialized()
    assert slow.result(0) is None  # wait=True: the task was let finish
    nothing_left()


@pytest.mark.timeout(120)
@pytest.mark.requires("actors")
def test_shutdown_returns_with_an_actor_call_running(backend_name, tmp_path, nothing_left):
    executor = fedexec.Executor(backend=backend_name, num_cpus=2)
    napper = executor.actor(Napper)
    ref = napper.nap.remote(str(tmp_path / "started"), SLOW_S)
    assert poll_until(lambda: (tmp_path / "started").exists(), timeout=T)
    shut_down_within(lambda: executor.shutdown(wait=True, cancel_futures=True))
    assert ref.done(), "an actor call is still pending after shutdown(wait=True)"
    nothing_left()


@pytest.mark.timeout(120)
def test_shutdown_returns_with_a_task_blocked_in_get_on_another(backend_name, tmp_path,
                                                                nothing_left):
    executor = fedexec.Executor(backend=backend_name, num_cpus=2)
    parent = executor.submit(parent_waiting_on_child, str(tmp_path / "started"), SLOW_S)
    assert poll_until(lambda: (tmp_path / "started").exists(), timeout=T)
    shut_down_within(lambda: executor.shutdown(wait=True, cancel_futures=True))
    assert parent.done(), "a task is still pending after shutdown(wait=True)"
    nothing_left()
