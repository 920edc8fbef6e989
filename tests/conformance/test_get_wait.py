"""``get`` and ``wait`` (API.md "Executor methods" and "Semantics in detail")."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest
from _support import block, fail, gates_fixture, identity, square

import fedexec

gates = gates_fixture()

T = 30


# --------------------------------------------------------------------------- get
def test_get_of_a_single_ref_returns_its_value(ex):
    assert ex.get(ex.submit(square, 5), timeout=T) == 25


def test_get_of_a_list_returns_values_in_list_order(ex, gates):
    gate = gates()
    first = ex.submit(block, gate.release, "first")  # finishes last
    rest = [ex.submit(identity, i) for i in range(5)]
    threading.Timer(0.05, gate.open).start()
    assert ex.get([first, *rest], timeout=T) == ["first", 0, 1, 2, 3, 4]


def test_get_of_a_tuple_of_refs_returns_a_list(ex):
    assert ex.get((ex.put(1), ex.put(2)), timeout=T) == [1, 2]


def test_get_of_an_empty_list_returns_an_empty_list(ex):
    assert ex.get([], timeout=T) == []


def test_get_of_a_list_may_repeat_a_ref(ex):
    ref = ex.submit(square, 3)
    assert ex.get([ref, ref], timeout=T) == [9, 9]


def test_get_of_list_raises_first_failure_without_waiting_for_rest(ex, gates):
    gate = gates()
    slow = ex.submit(block, gate.release, "never needed")  # blocked for the whole get
    bad = ex.submit(fail, "early failure")
    # If get waited for the slow sibling it would time out instead of raising ValueError.
    with pytest.raises(ValueError, match="early failure"):
        ex.get([slow, bad], timeout=10)
    assert not slow.done()


def test_get_of_list_raises_the_failure_even_if_listed_after_a_success(ex):
    refs = [ex.submit(square, 2), ex.submit(fail, "second fails", KeyError)]
    with pytest.raises(KeyError):
        ex.get(refs, timeout=T)


def test_get_timeout_raises_get_timeout_error(ex, gates):
    gate = gates()
    ref = ex.submit(block, gate.release)
    with pytest.raises(fedexec.GetTimeoutError):
        ex.get(ref, timeout=0.1)


def test_get_timeout_error_is_also_timeout_error_and_cf_timeout_error(ex, gates):
    gate = gates()
    ref = ex.submit(block, gate.release)
    with pytest.raises(TimeoutError) as info:
        ex.get(ref, timeout=0.05)
    assert isinstance(info.value, cf.TimeoutError)
    assert isinstance(info.value, fedexec.FedexecError)
    assert isinstance(info.value, fedexec.GetTimeoutError)


def test_get_of_a_list_times_out_with_get_timeout_error(ex, gates):
    gate = gates()
    refs = [ex.put(1), ex.submit(block, gate.release)]
    with pytest.raises(fedexec.GetTimeoutError):
        ex.get(refs, timeout=0.1)


def test_result_timeout_raises_get_timeout_error(ex, gates):
    gate = gates()
    ref = ex.submit(block, gate.release)
    with pytest.raises(fedexec.GetTimeoutError):
        ref.result(timeout=0.05)


def test_get_after_a_timeout_still_returns_the_value_later(ex, gates):
    gate = gates()
    ref = ex.submit(block, gate.release, "late")
    with pytest.raises(fedexec.GetTimeoutError):
        ex.get(ref, timeout=0.05)
    gate.open()
    assert ex.get(ref, timeout=T) == "late"


def test_get_with_zero_timeout_returns_a_finished_value(ex):
    ref = ex.put("ready")
    assert ex.get(ref, timeout=0) == "ready"


def test_get_of_a_non_ref_raises_type_error(ex):
    with pytest.raises(TypeError):
        ex.get(42)


def test_get_of_a_list_with_a_non_ref_element_raises_type_error(ex):
    with pytest.raises(TypeError):
        ex.get([ex.put(1), 2], timeout=T)


# --------------------------------------------------------------------------- wait
def test_wait_returns_ready_and_not_ready_lists(ex, gates):
    gate = gates()
    done = ex.put(1)
    pending = ex.submit(block, gate.release)
    ready, not_ready = ex.wait([pending, done], num_returns=1, timeout=T)
    assert ready == [done]
    assert not_ready == [pending]
    assert isinstance(ready, list) and isinstance(not_ready, list)


def test_wait_returns_after_one_ref_by_default(ex, gates):
    gate = gates()
    pending = [ex.submit(block, gate.release) for _ in range(2)]
    done = ex.submit(square, 2)
    ready, not_ready = ex.wait([*pending, done], timeout=T)
    assert ready == [done]
    assert not_ready == pending


def test_wait_ready_holds_at_most_num_returns_refs(ex):
    refs = [ex.put(i) for i in range(5)]
    ready, not_ready = ex.wait(refs, num_returns=2, timeout=T)
    assert len(ready) == 2 and len(not_ready) == 3
    assert set(ready) | set(not_ready) == set(refs)


def test_wait_preserves_input_order_within_each_list(ex, gates):
    gate = gates()
    refs = []
    for i in range(8):
        refs.append(ex.put(i) if i % 2 else ex.submit(block, gate.release, i))
    ready, not_ready = ex.wait(refs, num_returns=4, timeout=T)
    assert ready == refs[1::2]
    assert not_ready == refs[0::2]


def test_wait_with_num_returns_equal_to_len_waits_for_all(ex, gates):
    gate = gates()
    refs = [ex.submit(block, gate.release, i) for i in range(3)]
    threading.Timer(0.05, gate.open).start()
    ready, not_ready = ex.wait(refs, num_returns=3, timeout=T)
    assert ready == refs and not_ready == []


def test_wait_blocks_until_num_returns_are_ready(ex, gates):
    gate_a, gate_b = gates(), gates()
    a = ex.submit(block, gate_a.release, "a")
    b = ex.submit(block, gate_b.release, "b")
    threading.Timer(0.1, gate_b.open).start()
    ready, not_ready = ex.wait([a, b], num_returns=1, timeout=T)
    assert ready == [b] and not_ready == [a]


def test_wait_with_duplicate_refs_raises_value_error(ex):
    ref = ex.put(1)
    with pytest.raises(ValueError):
        ex.wait([ref, ref], timeout=T)


def test_wait_with_num_returns_greater_than_len_raises_value_error(ex):
    with pytest.raises(ValueError):
        ex.wait([ex.put(1), ex.put(2)], num_returns=3, timeout=T)


def test_wait_of_an_empty_list_returns_two_empty_lists(ex):
    assert ex.wait([], timeout=T) == ([], [])


def test_wait_of_a_non_iterable_raises_type_error(ex):
    with pytest.raises(TypeError):
        ex.wait(42, timeout=T)


def test_wait_of_a_single_ref_not_in_a_list_raises_type_error(ex):
    # An ObjectRef is not an iterable of refs.
    with pytest.raises(TypeError):
        ex.wait(ex.put(1), timeout=T)


def test_wait_with_a_non_ref_element_raises_type_error(ex):
    with pytest.raises(TypeError):
        ex.wait([ex.put(1), "not a ref"], timeout=T)


def test_wait_accepts_any_iterable_of_refs(ex):
    refs = [ex.put(i) for i in range(3)]
    ready, not_ready = ex.wait((r for r in refs), num_returns=3, timeout=T)
    assert ready == refs and not_ready == []
    ready, _ = ex.wait(tuple(refs), num_returns=2, timeout=T)
    assert ready == refs[:2]


def test_wait_timeout_returns_what_is_ready_without_raising(ex, gates):
    gate = gates()
    done = ex.put("done")
    pending = ex.submit(block, gate.release)
    ready, not_ready = ex.wait([done, pending], num_returns=2, timeout=0.1)
    assert ready == [done]
    assert not_ready == [pending]


def test_wait_timeout_with_nothing_ready_returns_empty_ready_list(ex, gates):
    gate = gates()
    pending = [ex.submit(block, gate.release) for _ in range(2)]
    ready, not_ready = ex.wait(pending, timeout=0.05)
    assert ready == [] and not_ready == pending


def test_wait_counts_a_failed_task_as_ready_and_does_not_raise(ex, gates):
    gate = gates()
    bad = ex.submit(fail)
    pending = ex.submit(block, gate.release)
    ready, not_ready = ex.wait([pending, bad], num_returns=1, timeout=T)
    assert ready == [bad] and not_ready == [pending]


def test_wait_counts_a_cancelled_task_as_ready(make_executor, gates):
    executor = make_executor(num_cpus=1)
    gate = gates()
    running = executor.submit(block, gate.release, None, gate.started)
    gate.wait_started()
    queued = executor.submit(square, 2)
    assert queued.cancel()
    ready, not_ready = executor.wait([running, queued], num_returns=1, timeout=T)
    assert ready == [queued] and not_ready == [running]


def test_wait_counts_refs_that_finished_before_it_was_called_once(ex, gates):
    # Two refs are done before wait() starts; it must still wait for a third.
    done = [ex.put(1), ex.submit(square, 2)]
    ex.get(done, timeout=T)
    gate_a, gate_b = gates(), gates()
    slow = [ex.submit(block, gate_a.release, "a"), ex.submit(block, gate_b.release, "b")]
    ready, not_ready = ex.wait(done + slow, num_returns=3, timeout=0.5)
    assert ready == done and not_ready == slow  # timed out with only the two
    gate_b.open()
    ready, not_ready = ex.wait(done + slow, num_returns=3, timeout=T)
    assert ready == [*done, slow[1]] and not_ready == [slow[0]]
