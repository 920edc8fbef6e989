"""Task and actor options (API.md "Options", "Semantics in detail")."""

from __future__ import annotations

import math

import pytest
from _support import (
    attempts,
    block,
    fail,
    flaky,
    gates_fixture,
    probe_concurrency,
    rendezvous,
    square,
)

import fedexec

gates = gates_fixture()

T = 30


class Plain:
    def read(self):
        return "alive"


def three_values():
    return 1, 2, 3


def two_values(a, b):
    return a, b


# --------------------------------------------------------------------------- validation
def test_unknown_option_raises_value_error(ex):
    with pytest.raises(ValueError, match="no_such_option"):
        ex.options(no_such_option=1).submit(square, 2)


def test_unknown_option_in_remote_decorator_raises_value_error(backend_name):
    with pytest.raises(ValueError):
        fedexec.remote(no_such_option=True)(square)


@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf])
def test_negative_nan_or_infinite_num_cpus_raises_value_error(ex, value):
    with pytest.raises(ValueError):
        ex.options(num_cpus=value).submit(square, 2)


def test_negative_custom_resource_raises_value_error(ex):
    with pytest.raises(ValueError):
        ex.options(resources={"thing": -1}).submit(square, 2)


def test_negative_executor_num_cpus_raises_value_error(make_executor):
    with pytest.raises(ValueError):
        make_executor(num_cpus=-2)


def test_infeasible_num_cpus_raises_value_error_at_submit(ex):
    assert ex.cluster_resources()["CPU"] == 4
    with pytest.raises(ValueError):
        ex.options(num_cpus=5).submit(square, 2)


def test_infeasible_num_gpus_raises_value_error_at_submit(make_executor):
    executor = make_executor(num_cpus=1, num_gpus=0)
    with pytest.raises(ValueError):
        executor.options(num_gpus=1).submit(square, 2)


def test_infeasible_custom_resource_raises_value_error_at_submit(ex):
    with pytest.raises(ValueError):
        ex.options(resources={"unobtainium": 1}).submit(square, 2)


@pytest.mark.requires("actors")
def test_infeasible_actor_num_cpus_raises_value_error(ex):
    with pytest.raises(ValueError):
        ex.options(num_cpus=64).actor(Plain)


def test_invalid_scheduling_strategy_raises_value_error(ex):
    with pytest.raises(ValueError):
        ex.options(scheduling_strategy="EVERYWHERE").submit(square, 2)


def test_unknown_runtime_env_key_raises_value_error(ex):
    with pytest.raises(ValueError):
        ex.options(runtime_env={"conda": "env"}).submit(square, 2)


def test_num_returns_below_one_raises_value_error(ex):
    with pytest.raises(ValueError):
        ex.options(num_returns=0).submit(square, 2)


# --------------------------------------------------------------------------- resources
def test_fractional_num_cpus_runs_and_shares_a_cpu(make_executor, tmp_path):
    executor = make_executor(num_cpus=1)
    refs = [
        executor.options(num_cpus=0.5).submit(rendezvous, str(tmp_path), i, 2) for i in range(2)
    ]
    assert executor.get(refs, timeout=T) == [True, True]


def test_zero_num_cpus_task_runs_while_all_cpus_are_taken(make_executor, gates):
    executor = make_executor(num_cpus=1)
    gate = gates()
    executor.submit(block, gate.release, None, gate.started)
    gate.wait_started()
    assert executor.get(executor.options(num_cpus=0).submit(square, 3), timeout=T) == 9


def test_num_cpus_option_limits_how_many_such_tasks_run_at_once(make_executor, tmp_path):
    executor = make_executor(num_cpus=4)
    refs = [
        executor.options(num_cpus=2).submit(probe_concurrency, str(tmp_path), i) for i in range(5)
    ]
    assert max(executor.get(refs, timeout=T)) <= 2


def test_node_affinity_to_an_existing_node_runs_the_task(ex):
    node_id = ex.nodes()[0]["node_id"]
    strategy = fedexec.NodeAffinity(node_id)
    assert ex.get(ex.options(scheduling_strategy=strategy).submit(square, 4), timeout=T) == 16


def test_soft_node_affinity_to_an_unknown_node_runs_elsewhere(ex):
    strategy = fedexec.NodeAffinity("f" * 28, soft=True)
    assert ex.get(ex.options(scheduling_strategy=strategy).submit(square, 5), timeout=T) == 25


def test_spread_scheduling_strategy_runs_the_task(ex):
    assert ex.get(ex.options(scheduling_strategy="SPREAD").submit(square, 6), timeout=T) == 36


# --------------------------------------------------------------------------- num_returns
def test_num_returns_gives_a_list_of_that_many_refs(ex):
    refs = ex.options(num_returns=3).submit(three_values)
    assert isinstance(refs, list) and len(refs) == 3
    assert all(isinstance(r, fedexec.ObjectRef) for r in refs)
    assert len({r.id for r in refs}) == 3
    assert ex.get(refs, timeout=T) == [1, 2, 3]


def test_num_returns_one_gives_a_single_ref_not_a_list(ex):
    ref = ex.options(num_returns=1).submit(three_values)
    assert isinstance(ref, fedexec.ObjectRef)
    assert ex.get(ref, timeout=T) == (1, 2, 3)


def test_num_returns_refs_can_be_used_separately(ex):
    a, b = ex.options(num_returns=2).submit(two_values, "left", "right")
    assert ex.get(ex.submit(str.upper, b), timeout=T) == "RIGHT"
    assert ex.get(a, timeout=T) == "left"


def test_num_returns_task_raising_makes_every_ref_raise(ex):
    refs = ex.options(num_returns=3).submit(fail, "all fail", KeyError)
    for ref in refs:
        with pytest.raises(KeyError, match="all fail"):
            ex.get(ref, timeout=T)


def test_num_returns_with_the_wrong_number_of_values_raises_value_error(ex):
    refs = ex.options(num_returns=2).submit(three_values)
    for ref in refs:
        with pytest.raises(ValueError):
            ex.get(ref, timeout=T)


# --------------------------------------------------------------------------- retries
def test_retry_exceptions_true_retries_a_raising_task_until_it_succeeds(ex, tmp_path):
    ref = ex.options(retry_exceptions=True, max_retries=3).submit(flaky, str(tmp_path), 2)
    assert ex.get(ref, timeout=T) == 2
    assert attempts(str(tmp_path)) == 3


def test_without_retry_exceptions_a_raising_task_runs_once(ex, tmp_path):
    ref = ex.options(max_retries=3).submit(flaky, str(tmp_path), 1)
    with pytest.raises(ValueError):
        ex.get(ref, timeout=T)
    assert attempts(str(tmp_path)) == 1


def test_retry_exceptions_list_retries_listed_exception_types(ex, tmp_path):
    opts = ex.options(retry_exceptions=[KeyError], max_retries=2)
    ref = opts.submit(flaky, str(tmp_path), 1, KeyError)
    assert ex.get(ref, timeout=T) == 1
    assert attempts(str(tmp_path)) == 2


def test_retry_exceptions_list_does_not_retry_other_exception_types(ex, tmp_path):
    opts = ex.options(retry_exceptions=[KeyError], max_retries=2)
    ref = opts.submit(flaky, str(tmp_path), 1, ValueError)
    with pytest.raises(ValueError):
        ex.get(ref, timeout=T)
    assert attempts(str(tmp_path)) == 1


def test_retry_exceptions_list_retries_subclasses_of_listed_types(ex, tmp_path):
    opts = ex.options(retry_exceptions=[LookupError], max_retries=2)
    assert ex.get(opts.submit(flaky, str(tmp_path), 1, IndexError), timeout=T) == 1


def test_exhausted_retries_raise_the_last_error(ex, tmp_path):
    ref = ex.options(retry_exceptions=True, max_retries=2).submit(flaky, str(tmp_path), 10)
    with pytest.raises(ValueError, match="attempt 2 fails"):
        ex.get(ref, timeout=T)
    assert attempts(str(tmp_path)) == 3


def test_max_retries_zero_with_retry_exceptions_runs_once(ex, tmp_path):
    ref = ex.options(retry_exceptions=True, max_retries=0).submit(flaky, str(tmp_path), 1)
    with pytest.raises(ValueError):
        ex.get(ref, timeout=T)
    assert attempts(str(tmp_path)) == 1


# --------------------------------------------------------------------------- options views
def test_options_view_submit_uses_its_options(ex):
    refs = ex.options(num_returns=2).submit(two_values, 1, 2)
    assert ex.get(refs, timeout=T) == [1, 2]


def test_options_view_map_uses_its_options(make_executor, tmp_path):
    executor = make_executor(num_cpus=4, resources={"slot": 1})
    view = executor.options(resources={"slot": 1})
    seen = list(view.map(probe_concurrency, [str(tmp_path)] * 4, range(4), timeout=T))
    assert max(seen) == 1  # one "slot": one task at a time, though 4 CPUs are free


def test_options_view_map_rejects_an_infeasible_demand(ex):
    with pytest.raises(ValueError):
        list(ex.options(num_cpus=5).map(square, [1, 2], timeout=T))


@pytest.mark.requires("actors", "named_actors")
def test_options_view_actor_uses_its_options(ex):
    handle = ex.options(name="options-view-actor").actor(Plain)
    assert ex.get_actor("options-view-actor") == handle


def test_options_view_submit_rejects_actor_only_options(ex):
    with pytest.raises(ValueError):
        ex.options(max_restarts=1).submit(square, 2)


@pytest.mark.requires("actors")
def test_options_view_actor_rejects_task_only_options(ex):
    with pytest.raises(ValueError):
        ex.options(num_returns=2).actor(Plain)


def test_chained_options_views_merge_their_options(ex):
    refs = ex.options(num_returns=2).options(name="chained").submit(two_values, "a", "b")
    assert ex.get(refs, timeout=T) == ["a", "b"]


def test_options_view_does_not_change_the_executor_defaults(ex):
    ex.options(num_returns=2)
    assert isinstance(ex.submit(three_values), fedexec.ObjectRef)
