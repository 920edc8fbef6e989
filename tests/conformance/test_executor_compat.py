"""Drop-in ``ProcessPoolExecutor`` behaviour (API.md "Runtime": stdlib semantics)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time
import uuid

import pytest
from _support import (
    add,
    block,
    gates_fixture,
    poll_until,
    probe_concurrency,
    square,
    touch,
)

from _backend_support import check_values_stay_readable_after_shutdown

gates = gates_fixture()

T = 30


def fail_on_negative(x):
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x


def set_env(key, value):
    os.environ[key] = value


def read_env(key):
    return os.environ.get(key)


def broken_initializer():
    raise RuntimeError("initializer failed on purpose")


@pytest.fixture
def env_key():
    key = f"FEDEXEC_CONFORMANCE_{uuid.uuid4().hex}"
    yield key
    os.environ.pop(key, None)  # the local backend runs initializers in this process


def stdlib_style_program(pool: cf.Executor) -> tuple[dict[int, int], list[int]]:
    """Code written for ProcessPoolExecutor, unchanged."""
    with pool:
        futures = {pool.submit(pow, 2, i): i for i in range(8)}
        by_input = {}
        for fut in cf.as_completed(futures, timeout=T):
            by_input[futures[fut]] = fut.result()
        mapped = list(pool.map(abs, [-3, -2, -1], timeout=T))
    return by_input, mapped


def test_program_written_for_process_pool_runs_unchanged(make_executor):
    by_input, mapped = stdlib_style_program(make_executor())
    assert by_input == {i: 2**i for i in range(8)}
    assert mapped == [3, 2, 1]


# --------------------------------------------------------------------------- map
def test_map_returns_results_in_input_order_not_completion_order(ex, gates):
    gate = gates()
    items = [gate.release, *range(6)]

    def slow_first(x):
        return block(x, "first") if isinstance(x, str) else x

    threading.Timer(0.1, gate.open).start()
    assert list(ex.map(slow_first, items, timeout=T)) == ["first", 0, 1, 2, 3, 4, 5]


def test_map_returns_an_iterator(ex):
    it = ex.map(square, [1, 2])
    assert iter(it) is it
    assert list(it) == [1, 4]


def test_map_with_several_iterables_stops_at_the_shortest(ex):
    assert list(ex.map(add, [1, 2, 3], [10, 20], timeout=T)) == [11, 22]


def test_map_of_an_empty_iterable_yields_nothing(ex):
    assert list(ex.map(square, [], timeout=T)) == []


def test_map_submits_every_call_before_the_results_are_consumed(ex, tmp_path):
    paths = [str(tmp_path / f"f{i}") for i in range(4)]
    it = ex.map(touch, paths)
    assert poll_until(lambda: all(os.path.exists(p) for p in paths), timeout=T)
    assert list(it) == paths


def test_map_with_timeout_raises_timeout_error(ex, gates):
    gate = gates()
    it = ex.map(block, [gate.release], timeout=0.2)
    with pytest.raises(cf.TimeoutError):
        next(it)


def test_map_raises_a_task_error_at_its_position_after_earlier_results(ex):
    it = ex.map(fail_on_negative, [1, 2, -3, 4], timeout=T)
    assert next(it) == 1
    assert next(it) == 2
    with pytest.raises(ValueError, match="negative: -3"):
        next(it)


def test_map_with_chunksize_returns_the_same_ordered_results(ex):
    assert list(ex.map(square, range(23), chunksize=5, timeout=T)) == [i * i for i in range(23)]


def test_map_with_chunksize_below_one_raises_value_error(ex):
    with pytest.raises(ValueError):
        ex.map(square, [1], chunksize=0)


def test_map_with_chunksize_raises_a_failing_call_error(ex):
    with pytest.raises(ValueError, match="negative"):
        list(ex.map(fail_on_negative, [1, -1, 2, 3], chunksize=2, timeout=T))


# --------------------------------------------------------------------------- shutdown
def test_context_manager_returns_the_executor_and_shuts_it_down(make_executor):
    executor = make_executor()
    with executor as entered:
        assert entered is executor
        ref = executor.submit(square, 3)
    assert ref.done() and ref.result(timeout=0) == 9
    with pytest.raises(RuntimeError):
        executor.submit(square, 1)


def test_submit_after_shutdown_raises_runtime_error(make_executor):
    executor = make_executor()
    executor.shutdown()
    with pytest.raises(RuntimeError):
        executor.submit(square, 1)


def test_map_after_shutdown_raises_runtime_error(make_executor):
    executor = make_executor()
    executor.shutdown()
    with pytest.raises(RuntimeError):
        list(executor.map(square, [1, 2]))


def test_results_stay_readable_after_shutdown(make_executor):
    check_values_stay_readable_after_shutdown(make_executor(num_cpus=1))


def test_shutdown_twice_is_harmless(make_executor):
    executor = make_executor()
    executor.shutdown(wait=True)
    executor.shutdown(wait=True)
    executor.shutdown(wait=False, cancel_futures=True)


def test_shutdown_wait_true_waits_for_running_tasks(make_executor, gates):
    executor = make_executor()
    gate = gates()
    ref = executor.submit(block, gate.release, "finished", gate.started)
    gate.wait_started()
    threading.Timer(0.1, gate.open).start()
    executor.shutdown(wait=True)
    assert ref.done()
    assert ref.result(timeout=0) == "finished"


def test_shutdown_wait_true_runs_queued_tasks_too(make_executor, gates):
    executor = make_executor(num_cpus=1)
    gate = gates()
    running = executor.submit(block, gate.release, "a", gate.started)
    gate.wait_started()
    queued = [executor.submit(square, i) for i in range(3)]
    threading.Timer(0.1, gate.open).start()
    executor.shutdown(wait=True)
    assert running.result(timeout=0) == "a"
    assert [q.result(timeout=0) for q in queued] == [0, 1, 4]


def test_shutdown_wait_false_returns_while_tasks_still_run(make_executor, gates):
    executor = make_executor()
    gate = gates()
    ref = executor.submit(block, gate.release, "done later", gate.started)
    gate.wait_started()
    executor.shutdown(wait=False)
    assert not ref.done()
    gate.open()
    assert ref.result(timeout=T) == "done later"


def test_shutdown_cancel_futures_cancels_queued_tasks(make_executor, gates):
    executor = make_executor(num_cpus=1)
    gate = gates()
    running = executor.submit(block, gate.release, "ran", gate.started)
    gate.wait_started()
    queued = [executor.submit(touch, gate.marker(f"q{i}")) for i in range(3)]
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(q.cancelled() for q in queued)
    gate.open()
    assert running.result(timeout=T) == "ran"
    assert not any(os.path.exists(gate.marker(f"q{i}")) for i in range(3))


def test_shutdown_cancel_futures_lets_the_tasks_workers_took_finish(make_executor):
    """As CPython's ``test_cancel_futures``: many short tasks on few workers, then
    ``shutdown(cancel_futures=True)`` at once. Only what no worker took is cancelled;
    what a worker took finishes normally."""
    executor = make_executor(max_workers=5, num_cpus=None)
    refs = [executor.submit(time.sleep, 0.1) for _ in range(50)]
    executor.shutdown(cancel_futures=True)
    cancelled = [r for r in refs if r.cancelled()]
    others = [r for r in refs if not r.cancelled()]
    assert len(cancelled) > 20
    assert others, "every task was cancelled, also those the workers had taken"
    for ref in others:
        assert ref.done()
        assert ref.exception(timeout=0) is None


# --------------------------------------------------------------------------- workers
def test_initializer_runs_with_initargs_before_tasks(make_executor, env_key):
    executor = make_executor(initializer=set_env, initargs=(env_key, "initialized"))
    assert list(executor.map(read_env, [env_key] * 4, timeout=T)) == ["initialized"] * 4


def test_failing_initializer_makes_the_executor_broken(make_executor):
    executor = make_executor(initializer=broken_initializer)
    with pytest.raises(cf.BrokenExecutor):
        executor.submit(square, 2).result(timeout=T)


def test_broken_executor_rejects_later_work_with_broken_executor(make_executor):
    executor = make_executor(initializer=broken_initializer)
    with pytest.raises(cf.BrokenExecutor):
        executor.submit(square, 2).result(timeout=T)
    with pytest.raises(cf.BrokenExecutor):  # at submit, or from the new future
        executor.submit(square, 3).result(timeout=T)


@pytest.mark.parametrize("max_workers", [0, -1])
def test_max_workers_not_positive_raises_value_error(make_executor, max_workers):
    with pytest.raises(ValueError):
        make_executor(max_workers=max_workers)


def test_max_workers_sizes_the_embedded_runtime_cpus(make_executor):
    executor = make_executor(max_workers=3, num_cpus=None)
    assert executor.cluster_resources()["CPU"] == 3


def test_max_workers_bounds_how_many_tasks_run_at_once(make_executor, tmp_path):
    executor = make_executor(max_workers=2, num_cpus=None)
    refs = [executor.submit(probe_concurrency, str(tmp_path), i) for i in range(6)]
    seen = executor.get(refs, timeout=T)
    assert max(seen) <= 2
