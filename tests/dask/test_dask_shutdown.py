"""The dask backend's shutdown ends, whatever state its tasks are in, and leaves
nothing behind: no Dask worker process, no fedexec thread, no open client."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import fedexec

distributed = pytest.importorskip("distributed")

T = 30
#: Generous: shutdown must return, not be fast (the machine may be loaded).
BOUND = 30


def shut_down_within(shutdown, bound=BOUND):
    """Call ``shutdown()`` on a thread; True if it returned within ``bound`` s (a
    hang fails the test instead of hanging it)."""
    errors = []

    def run():
        try:
            shutdown()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True, name="test-shutdown")
    thread.start()
    thread.join(bound)
    assert not errors, errors
    return not thread.is_alive()


def wait_until(predicate, timeout=T):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def assert_closed(ex):
    """The executor's Dask client and (embedded) cluster are closed."""
    backend = ex._backend
    assert backend.client.status == "closed"
    if backend.cluster is not None:
        assert backend.cluster.status.name == "closed"


def test_shutdown_after_force_cancelling_a_running_task_returns_and_leaves_nothing(
        nothing_left):
    ex = fedexec.Executor(backend="dask", num_cpus=2)
    ref = ex.submit(time.sleep, 40)  # inside C code: only a worker restart stops it
    assert wait_until(ref.running)
    assert ex.cancel(ref, force=True) is True
    assert shut_down_within(lambda: ex.shutdown(wait=True, cancel_futures=True)), (
        "shutdown hung after a running task was force-cancelled")
    with pytest.raises(fedexec.TaskCancelledError):
        ref.result(0)
    assert_closed(ex)
    nothing_left()


def test_shutdown_of_the_default_executor_after_a_get_timed_out_returns(nothing_left):
    ex = fedexec.init(backend="dask")
    slow = fedexec.remote(time.sleep).remote(3)
    with pytest.raises(fedexec.GetTimeoutError):
        fedexec.get(slow, timeout=0.3)
    assert shut_down_within(fedexec.shutdown), "fedexec.shutdown() hung after a get timed out"
    assert not fedexec.is_initialized()
    assert slow.result(0) is None  # wait=True: the running task was let finish
    assert_closed(ex)
    nothing_left()


@pytest.mark.timeout(120)
def test_cancel_then_shutdown_with_cancel_futures_logs_nothing_critical(caplog, nothing_left):
    """Cancelling a ref completes it once: no ``concurrent.futures`` CRITICAL
    "Future in unexpected state" from a ref completed again after its cancel."""
    caplog.set_level(logging.WARNING)
    ex = fedexec.Executor(backend="dask", num_cpus=1)
    blocker = ex.submit(time.sleep, 5)
    assert wait_until(blocker.running)
    queued = [ex.submit(time.sleep, 0.01) for _ in range(6)]
    assert queued[0].cancel()
    assert ex.cancel(queued[1]) is True
    assert shut_down_within(lambda: ex.shutdown(wait=True, cancel_futures=True))
    assert all(q.cancelled() for q in queued)
    assert blocker.result(0) is None
    critical = [r for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert not critical, [r.getMessage() for r in critical]
    assert_closed(ex)
    nothing_left()


def test_a_shutdown_still_waiting_says_on_what(monkeypatch, nothing_left):
    from fedexec.backends.dask import _drain

    # a handler of its own: caplog's handlers are shared with the "distributed"
    # logger under pytest, and the local cluster sets those to CRITICAL while it runs
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    monkeypatch.setattr(_drain, "REPORT_EVERY_S", 0.5)
    _drain.logger.addHandler(handler)
    try:
        ex = fedexec.Executor(backend="dask", num_cpus=2)
        ref = ex.options(name="slow-one").submit(time.sleep, 3)
        assert wait_until(ref.running)
        assert shut_down_within(lambda: ex.shutdown(wait=True))
    finally:
        _drain.logger.removeHandler(handler)
    assert ref.done() and ref.exception() is None  # waited for it: it ran to its end
    said = [m for m in said if "still waits" in m]
    assert said and "'slow-one' (running on tcp://" in said[0], said
    nothing_left()


class _Sleeper:
    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


@pytest.mark.timeout(120)
def test_shutdown_waits_for_actor_calls_within_a_bound_then_fails_them(monkeypatch, caplog):
    """An actor call that does not finish (here a long sleep; in the field a
    frozen worker) holds shutdown(wait=True) only DRAIN_LIMIT_S: then it fails,
    and a warning says which call was given up on."""
    from fedexec.backends.dask import _actors

    monkeypatch.setattr(_actors, "DRAIN_LIMIT_S", 2.0)
    ex = fedexec.Executor(backend="dask", num_cpus=2)
    actor = ex.options(num_cpus=0).actor(_Sleeper)
    assert actor.sleep.remote(0).result(T) == 0
    ref = actor.sleep.remote(600)
    with caplog.at_level(logging.WARNING, logger=_actors.__name__):
        assert shut_down_within(lambda: ex.shutdown(wait=True)), "shutdown hung"
    with pytest.raises(fedexec.ActorDiedError, match="still unfinished"):
        ref.result(T)
    assert "_Sleeper.sleep" in caplog.text
