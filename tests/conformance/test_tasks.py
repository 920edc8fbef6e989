"""Tasks: submit, put, argument passing and ref resolution (API.md "Executor methods")."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os

import pytest
from _support import (
    add,
    attempts,
    block,
    gates_fixture,
    identity,
    record_attempt,
    rendezvous,
    square,
    touch,
)

import fedexec

gates = gates_fixture()

T = 30  # seconds: the timeout of every blocking call


def kwargs_echo(*args, **kwargs):
    return args, kwargs


def takes_fn_keyword(fn, *, extra=0):
    return fn + extra


class Multiplier:
    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        return self.k * x


def is_ref(x):
    return isinstance(x, fedexec.ObjectRef)


def exit_first_attempt(directory):
    if record_attempt(directory) == 0:
        os._exit(1)
    return "survived"


def test_executor_is_a_concurrent_futures_executor(ex):
    assert isinstance(ex, cf.Executor)
    assert isinstance(ex, fedexec.Executor)


def test_executor_backend_property_names_the_backend(ex, backend_name):
    assert ex.backend == backend_name


def test_submit_returns_objectref_with_the_result(ex):
    ref = ex.submit(square, 7)
    assert isinstance(ref, fedexec.ObjectRef)
    assert ex.get(ref, timeout=T) == 49


def test_submit_passes_positional_and_keyword_arguments(ex):
    ref = ex.submit(kwargs_echo, 1, "two", three=3, four=[4])
    assert ex.get(ref, timeout=T) == ((1, "two"), {"three": 3, "four": [4]})


def test_submit_forwards_a_keyword_argument_named_fn_to_the_function(ex):
    # stdlib signature submit(fn, /, *args, **kwargs): "fn" is free for the task.
    assert ex.get(ex.submit(kwargs_echo, fn=5), timeout=T) == ((), {"fn": 5})


def test_submit_accepts_builtin_functions(ex):
    assert ex.get([ex.submit(pow, 2, 10), ex.submit(sum, [1, 2, 3])], timeout=T) == [1024, 6]


def test_submit_accepts_lambdas_and_closures(ex):
    offset = 100

    def closure(x):
        return x + offset

    refs = [ex.submit(lambda x: x * 3, 5), ex.submit(closure, 1)]
    assert ex.get(refs, timeout=T) == [15, 101]


def test_submit_accepts_functools_partial(ex):
    assert ex.get(ex.submit(functools.partial(add, 10), 5), timeout=T) == 15


def test_submit_accepts_callable_instances(ex):
    assert ex.get(ex.submit(Multiplier(4), 5), timeout=T) == 20


def test_submit_of_non_callable_raises_type_error(ex):
    with pytest.raises(TypeError):
        ex.submit(42, 1)


def test_task_returning_none_gives_none(ex):
    assert ex.get(ex.submit(identity, None), timeout=T) is None


def test_put_returns_a_finished_ref_holding_the_value(ex):
    ref = ex.put({"a": [1, 2, 3]})
    assert isinstance(ref, fedexec.ObjectRef)
    assert ref.done()
    assert ex.get(ref, timeout=T) == {"a": [1, 2, 3]}


def test_put_of_an_objectref_raises_type_error(ex):
    with pytest.raises(TypeError):
        ex.put(ex.put(1))


def test_ref_passed_directly_is_resolved_to_its_value_before_the_task_runs(ex):
    ref = ex.put(21)
    assert ex.get(ex.submit(is_ref, ref), timeout=T) is False
    assert ex.get(ex.submit(square, ref), timeout=T) == 441


def test_ref_passed_as_keyword_argument_is_resolved(ex):
    ref = ex.submit(square, 3)
    assert ex.get(ex.submit(add, a=ref, b=1), timeout=T) == 10


def test_task_waits_for_an_unfinished_argument_ref(ex, gates):
    gate = gates()
    upstream = ex.submit(block, gate.release, 5, gate.started)
    downstream = ex.submit(square, upstream)
    gate.wait_started()
    assert not downstream.done()
    gate.open()
    assert ex.get(downstream, timeout=T) == 25


def test_chain_of_dependent_tasks_computes_in_order(ex):
    ref = ex.put(1)
    for _ in range(20):
        ref = ex.submit(add, ref, 1)
    assert ex.get(ref, timeout=T) == 21


def test_one_put_value_can_feed_many_tasks(ex):
    big = ex.put(list(range(1000)))
    refs = [ex.submit(sum, big) for _ in range(10)]
    assert ex.get(refs, timeout=T) == [499500] * 10


def test_many_small_tasks_all_complete_with_correct_results(ex):
    refs = [ex.submit(square, i) for i in range(300)]
    assert ex.get(refs, timeout=T) == [i * i for i in range(300)]


def test_tasks_run_concurrently_when_cpus_allow(make_executor, tmp_path):
    executor = make_executor(num_cpus=3)
    refs = [executor.submit(rendezvous, str(tmp_path), i, 3) for i in range(3)]
    assert executor.get(refs, timeout=T) == [True, True, True]


def test_several_executors_in_one_process_work_independently(make_executor):
    first, second = make_executor(num_cpus=1), make_executor(num_cpus=2)
    a, b = first.submit(square, 2), second.submit(square, 3)
    assert first.get(a, timeout=T) == 4
    assert second.get(b, timeout=T) == 9
    assert first.cluster_resources()["CPU"] == 1
    assert second.cluster_resources()["CPU"] == 2


def test_shutting_down_one_executor_leaves_another_usable(make_executor):
    first, second = make_executor(), make_executor()
    first.shutdown(wait=True)
    assert second.get(second.submit(square, 4), timeout=T) == 16


def test_successful_task_runs_exactly_once(ex, tmp_path):
    assert ex.get(ex.submit(record_attempt, str(tmp_path)), timeout=T) == 0
    assert ex.get(ex.submit(square, 2), timeout=T) == 4  # let any stray re-run happen
    assert attempts(str(tmp_path)) == 1


def test_task_side_effects_are_visible_once_get_returns(ex, tmp_path):
    marker = tmp_path / "ran"
    ex.get(ex.submit(touch, str(marker)), timeout=T)
    assert marker.exists()


@pytest.mark.requires("worker_processes")
def test_task_whose_worker_dies_is_retried_up_to_max_retries(ex, tmp_path):
    ref = ex.options(max_retries=1).submit(exit_first_attempt, str(tmp_path))
    assert ex.get(ref, timeout=T) == "survived"


@pytest.mark.requires("worker_processes")
def test_worker_crash_without_retries_raises_worker_crashed_error(ex, tmp_path):
    ref = ex.options(max_retries=0).submit(exit_first_attempt, str(tmp_path))
    with pytest.raises(fedexec.WorkerCrashedError):
        ex.get(ref, timeout=T)
