"""Tasks that submit tasks, and refs passed directly vs nested (API.md "ObjectRef",
"Semantics in detail": inside a task the module-level API talks to its runtime)."""

from __future__ import annotations

import pytest
from _support import block, gates_fixture, square

import fedexec

gates = gates_fixture()

T = 30


@fedexec.remote
def remote_square(x):
    return x * x


@fedexec.remote
def remote_add_one(x):
    return x + 1


@fedexec.remote(resources={"marker": 1})
def needs_marker():
    return "ran where the marker is"


def submit_children(n):
    return fedexec.get([remote_square.remote(i) for i in range(n)], timeout=T)


def submit_marker_child():
    return fedexec.get(needs_marker.remote(), timeout=T)


def put_then_use():
    ref = fedexec.put(41)
    return fedexec.get(remote_add_one.remote(ref), timeout=T)


def return_put_ref_in_list():
    return [fedexec.put("made inside")]


def return_child_ref_in_list():
    return [remote_square.remote(5)]


def fib(n):
    if n < 2:
        return n
    a, b = fedexec.remote(fib).remote(n - 1), fedexec.remote(fib).remote(n - 2)
    return sum(fedexec.get([a, b], timeout=T))


def chain_depth(n):
    if n == 0:
        return 0
    return 1 + fedexec.get(fedexec.remote(chain_depth).remote(n - 1), timeout=T)


def inspect_list(items):
    return [isinstance(i, fedexec.ObjectRef) for i in items], fedexec.get(items, timeout=T)


def inspect_dict(mapping):
    return isinstance(mapping["ref"], fedexec.ObjectRef), fedexec.get(mapping["ref"], timeout=T)


def count_items(items):
    return len(items)


def wait_inside(refs):
    ready, not_ready = fedexec.wait(refs, num_returns=1, timeout=T)
    return len(ready), len(not_ready)


def call_remote_function(f, x):
    return fedexec.get(f.remote(x), timeout=T)


def test_task_can_submit_tasks_with_remote_functions(ex):
    assert ex.get(ex.submit(submit_children, 5), timeout=T) == [0, 1, 4, 9, 16]


def test_nested_calls_do_not_create_a_default_executor(ex):
    assert not fedexec.is_initialized()
    ex.get(ex.submit(submit_children, 2), timeout=T)
    assert not fedexec.is_initialized()


def test_nested_calls_use_the_task_runtime_even_when_a_default_executor_exists(
    backend_name, make_executor
):
    fedexec.init(backend=backend_name, num_cpus=1)  # has no "marker" resource
    executor = make_executor(num_cpus=2, resources={"marker": 1})
    assert executor.get(executor.submit(submit_marker_child), timeout=T) == (
        "ran where the marker is"
    )


def test_put_inside_a_task_gives_a_ref_usable_by_child_tasks(ex):
    assert ex.get(ex.submit(put_then_use), timeout=T) == 42


def test_ref_put_inside_a_task_and_returned_in_a_list_is_usable_by_the_driver(ex):
    (inner,) = ex.get(ex.submit(return_put_ref_in_list), timeout=T)
    assert isinstance(inner, fedexec.ObjectRef)
    assert ex.get(inner, timeout=T) == "made inside"


def test_child_task_ref_returned_from_a_task_is_usable_by_the_driver(ex):
    (child,) = ex.get(ex.submit(return_child_ref_in_list), timeout=T)
    assert isinstance(child, fedexec.ObjectRef)
    assert ex.get(child, timeout=T) == 25


def test_nested_get_does_not_deadlock_with_one_cpu(make_executor):
    executor = make_executor(num_cpus=1)
    assert executor.get(executor.submit(submit_children, 3), timeout=T) == [0, 1, 4]


def test_recursive_tasks_do_not_deadlock_with_few_cpus(make_executor):
    executor = make_executor(num_cpus=2)
    assert executor.get(executor.submit(fib, 7), timeout=T) == 13


def test_deep_chain_of_blocking_nested_gets_completes_with_one_cpu(make_executor):
    executor = make_executor(num_cpus=1)
    assert executor.get(executor.submit(chain_depth, 8), timeout=T) == 8


def test_ref_nested_in_a_list_is_passed_as_a_ref(ex):
    refs = [ex.put(1), ex.submit(square, 3)]
    flags, values = ex.get(ex.submit(inspect_list, refs), timeout=T)
    assert flags == [True, True]
    assert values == [1, 9]


def test_ref_nested_in_a_dict_is_passed_as_a_ref(ex):
    is_ref, value = ex.get(ex.submit(inspect_dict, {"ref": ex.put("v")}), timeout=T)
    assert is_ref is True
    assert value == "v"


def test_task_with_a_nested_unfinished_ref_starts_without_waiting_for_it(ex, gates):
    gate = gates()
    pending = ex.submit(block, gate.release, "later")
    # Nested refs are not dependencies: the task runs while ``pending`` is blocked.
    assert ex.get(ex.submit(count_items, [pending, pending]), timeout=T) == 2
    assert not pending.done()


def test_wait_inside_a_task_works_on_nested_refs(ex, gates):
    gate = gates()
    refs = [ex.put("done"), ex.submit(block, gate.release)]
    assert ex.get(ex.submit(wait_inside, refs), timeout=T) == (1, 1)


def test_remote_function_passed_as_an_argument_can_be_called_in_a_task(ex):
    assert ex.get(ex.submit(call_remote_function, fedexec.remote(square), 6), timeout=T) == 36


@pytest.mark.parametrize("depth", [1, 3])
def test_nested_results_flow_back_through_several_levels(ex, depth):
    assert ex.get(ex.submit(chain_depth, depth), timeout=T) == depth
