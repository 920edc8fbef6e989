"""Cancellation (API.md "Semantics in detail": cancel; ObjectRef.cancel stdlib semantics)."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import threading

import pytest
from _support import block, gates_fixture, spin, square, touch, wait_for_path

import fedexec

gates = gates_fixture()

T = 30


class Sleeper:
    def nap(self, release, started):
        return block(release, "woke", started)


def parent_of_spinner(started, release, interrupted):
    child = fedexec.remote(spin).remote(started, release, interrupted)
    return fedexec.get(child, timeout=T)


def child_then_touch(release, started, done_marker):
    block(release, None, started)
    touch(done_marker)
    return "child finished"


def parent_of_toucher(release, child_started, done_marker, parent_started):
    fedexec.remote(child_then_touch).remote(release, child_started, done_marker)
    return spin(parent_started, release)


@pytest.fixture
def busy(make_executor, gates):
    """A one-CPU executor whose CPU is taken by a running task until the gate opens."""
    executor = make_executor(num_cpus=1)
    gate = gates()
    running = executor.submit(block, gate.release, "blocker", gate.started)
    gate.wait_started()
    return executor, gate, running


# --------------------------------------------------------------------------- queued
def test_cancelled_queued_task_never_runs_and_get_raises_task_cancelled_error(busy):
    executor, gate, running = busy
    marker = gate.marker("queued-ran")
    queued = executor.submit(touch, marker)
    assert executor.cancel(queued) is True
    with pytest.raises(fedexec.TaskCancelledError):
        executor.get(queued, timeout=T)
    gate.open()
    assert executor.get(running, timeout=T) == "blocker"
    executor.get(executor.submit(square, 1), timeout=T)  # later work still runs
    assert not os.path.exists(marker)


def test_task_cancelled_error_is_also_a_cf_cancelled_error(busy):
    executor, _, _ = busy
    queued = executor.submit(square, 2)
    executor.cancel(queued)
    with pytest.raises(cf.CancelledError) as info:
        queued.result(timeout=T)
    assert isinstance(info.value, fedexec.TaskCancelledError)
    assert isinstance(info.value, fedexec.FedexecError)


def test_ref_cancel_of_a_queued_task_returns_true_and_marks_it_cancelled(busy):
    executor, gate, _ = busy
    marker = gate.marker("ran")
    queued = executor.submit(touch, marker)
    assert queued.cancel() is True
    assert queued.cancelled() and queued.done()
    assert not queued.running()
    gate.open()
    executor.get(executor.submit(square, 1), timeout=T)
    assert not os.path.exists(marker)


def test_ref_cancel_of_an_already_cancelled_ref_returns_true(busy):
    executor, _, _ = busy
    queued = executor.submit(square, 2)
    assert queued.cancel() is True
    assert queued.cancel() is True


def test_ref_cancel_of_a_running_task_returns_false_and_it_completes(busy):
    executor, gate, running = busy
    assert running.cancel() is False
    assert not running.cancelled()
    gate.open()
    assert executor.get(running, timeout=T) == "blocker"


def test_ref_cancel_of_a_finished_task_returns_false_and_keeps_the_result(ex):
    ref = ex.submit(square, 3)
    assert ex.get(ref, timeout=T) == 9
    assert ref.cancel() is False
    assert ex.get(ref, timeout=T) == 9


def test_executor_cancel_of_a_finished_task_keeps_its_result(ex):
    ref = ex.submit(square, 4)
    assert ex.get(ref, timeout=T) == 16
    ex.cancel(ref)
    assert not ref.cancelled()
    assert ex.get(ref, timeout=T) == 16


def test_cancelling_a_task_waiting_for_its_argument_means_it_never_runs(ex, gates):
    gate = gates()
    upstream = ex.submit(block, gate.release, 1)
    marker = gate.marker("dependent-ran")
    dependent = ex.submit(touch, marker, upstream)
    assert ex.cancel(dependent) is True
    gate.open()
    assert ex.get(upstream, timeout=T) == 1
    with pytest.raises(fedexec.TaskCancelledError):
        ex.get(dependent, timeout=T)
    assert not os.path.exists(marker)


def test_done_callback_runs_when_a_queued_task_is_cancelled(busy):
    executor, _, _ = busy
    queued = executor.submit(square, 5)
    called = threading.Event()
    queued.add_done_callback(lambda fut: called.set())
    executor.cancel(queued)
    assert called.wait(T)


def test_cancel_of_a_non_ref_raises_type_error(ex):
    with pytest.raises(TypeError):
        ex.cancel("not a ref")


def test_shutdown_cancel_futures_makes_queued_refs_raise_task_cancelled_error(busy):
    executor, gate, running = busy
    queued = [executor.submit(square, i) for i in range(3)]
    executor.shutdown(wait=False, cancel_futures=True)
    for ref in queued:
        with pytest.raises(fedexec.TaskCancelledError):
            executor.get(ref, timeout=T)
    gate.open()
    assert running.result(timeout=T) == "blocker"


# --------------------------------------------------------------------------- running
@pytest.mark.requires("cancel_running")
def test_cancelling_a_running_task_makes_get_raise_task_cancelled_error(ex, gates):
    gate = gates()
    ref = ex.submit(spin, gate.started, gate.release)
    gate.wait_started()
    assert ex.cancel(ref) is True
    with pytest.raises(fedexec.TaskCancelledError):
        ex.get(ref, timeout=T)


@pytest.mark.requires("cancel_running")
def test_cancelling_a_running_task_raises_keyboard_interrupt_in_it(ex, gates):
    gate = gates()
    interrupted = gate.marker("interrupted")
    ref = ex.submit(spin, gate.started, gate.release, interrupted)
    gate.wait_started()
    ex.cancel(ref)
    assert wait_for_path(interrupted, timeout=T), "the task never saw KeyboardInterrupt"


@pytest.mark.requires("cancel_running")
def test_cancelled_running_task_frees_its_cpu_for_other_tasks(make_executor, gates):
    executor = make_executor(num_cpus=1)
    gate = gates()
    ref = executor.submit(spin, gate.started, gate.release)
    gate.wait_started()
    executor.cancel(ref)
    # The gate stays shut: the next task can only run if the cancel stopped the spinner.
    assert executor.get(executor.submit(square, 7), timeout=T) == 49


@pytest.mark.requires("cancel_running")
def test_recursive_cancel_interrupts_the_tasks_a_task_submitted(ex, gates):
    gate = gates()
    interrupted = gate.marker("child-interrupted")
    parent = ex.submit(parent_of_spinner, gate.started, gate.release, interrupted)
    gate.wait_started()  # the child is spinning
    ex.cancel(parent, recursive=True)
    with pytest.raises(fedexec.TaskCancelledError):
        ex.get(parent, timeout=T)
    assert wait_for_path(interrupted, timeout=T), "the child task was not cancelled"


@pytest.mark.requires("cancel_running")
def test_non_recursive_cancel_leaves_child_tasks_running(ex, gates):
    gate = gates()
    child_started, done = gate.marker("child-started"), gate.marker("child-done")
    parent_started = gate.marker("parent-started")
    parent = ex.submit(parent_of_toucher, gate.release, child_started, done, parent_started)
    gate.wait_started("parent-started")
    gate.wait_started("child-started")
    ex.cancel(parent, recursive=False)
    with pytest.raises(fedexec.TaskCancelledError):
        ex.get(parent, timeout=T)
    gate.open()
    assert wait_for_path(done, timeout=T), "the child was cancelled with its parent"


@pytest.mark.requires("cancel_running", "worker_processes")
def test_force_cancel_kills_a_running_task(make_executor, gates):
    executor = make_executor(num_cpus=1)
    gate = gates()
    ref = executor.submit(spin, gate.started, gate.release)
    gate.wait_started()
    assert executor.cancel(ref, force=True) is True
    with pytest.raises(fedexec.TaskCancelledError):
        executor.get(ref, timeout=T)
    assert executor.get(executor.submit(square, 3), timeout=T) == 9


@pytest.mark.requires("cancel_running", "worker_processes")
def test_force_cancel_leaves_the_tasks_queued_behind_it_untouched(make_executor, gates):
    # Tasks waiting for the killed worker's CPU (a runtime may already have handed
    # them to that worker) were not running: they run, and use up no retry.
    executor = make_executor(num_cpus=1)
    gate = gates()
    ref = executor.submit(spin, gate.started, gate.release)
    behind = [executor.options(max_retries=0).submit(square, i) for i in range(3)]
    gate.wait_started()
    assert executor.cancel(ref, force=True) is True
    with pytest.raises(fedexec.TaskCancelledError):
        executor.get(ref, timeout=T)
    assert executor.get(behind, timeout=T) == [0, 1, 4]


@pytest.mark.requires("actors")
def test_force_cancelling_an_actor_call_raises_value_error(ex, gates):
    gate = gates()
    sleeper = ex.actor(Sleeper)
    ref = sleeper.nap.remote(gate.release, gate.started)
    gate.wait_started()
    with pytest.raises(ValueError):
        ex.cancel(ref, force=True)
    gate.open()
    assert ex.get(ref, timeout=T) == "woke"


@pytest.mark.requires("actors")
@pytest.mark.parametrize("threads", [1, 2])
def test_cancelling_a_queued_actor_call_means_it_never_runs(ex, gates, threads):
    """The call waits behind busy actor threads (``max_concurrency`` of them)."""
    gate = gates()
    sleeper = ex.options(max_concurrency=threads).actor(Sleeper)
    busy = [sleeper.nap.remote(gate.release, gate.marker(f"busy{i}")) for i in range(threads)]
    for i in range(threads):
        gate.wait_started(f"busy{i}")
    marker = gate.marker("queued")
    queued = sleeper.nap.remote(gate.release, marker)
    assert ex.cancel(queued) is True
    with pytest.raises(fedexec.TaskCancelledError):
        ex.get(queued, timeout=T)
    gate.open()
    assert ex.get(busy, timeout=T) == ["woke"] * threads
    # Calls start in order: had the cancelled call run, it would have started before this one.
    assert ex.get(sleeper.nap.remote(gate.release, gate.marker("after")), timeout=T) == "woke"
    assert not os.path.exists(marker)


def test_concurrent_futures_wait_and_as_completed_see_a_cancelled_ref_as_done(busy):
    executor, _, _ = busy
    queued = executor.submit(square, 3)
    assert executor.cancel(queued) is True
    done, not_done = cf.wait([queued], timeout=T)
    assert done == {queued} and not not_done
    assert list(cf.as_completed([queued], timeout=T)) == [queued]
    assert queued.cancel() is True  # cancelling again stays true and changes nothing


class AsyncSleeper:
    async def nap(self, started):
        touch(started)
        await asyncio.sleep(60)
        return "woke"

    async def ping(self):
        return "pong"


@pytest.mark.requires("actors", "async_actors")
def test_cancelling_a_running_async_actor_call_cancels_its_coroutine(ex, gates):
    gate = gates()
    sleeper = ex.actor(AsyncSleeper)
    ref = sleeper.nap.remote(gate.started)
    gate.wait_started()
    assert ex.cancel(ref) is True
    with pytest.raises(fedexec.TaskCancelledError):
        ex.get(ref, timeout=T)  # well before the 60 s nap would end
    assert ex.get(sleeper.ping.remote(), timeout=T) == "pong"
