"""ObjectRef is a genuine ``concurrent.futures.Future`` (API.md "ObjectRef")."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import copy
import pickle
import threading

import pytest
from _support import block, fail, gates_fixture, identity, square

import fedexec
from _backend_support import poll_until

gates = gates_fixture()

T = 30


def get_pickled_ref(blob):
    return fedexec.get(pickle.loads(blob), timeout=T)


def test_objectref_is_a_concurrent_futures_future(ex):
    ref = ex.submit(square, 2)
    assert isinstance(ref, cf.Future)
    assert ref.result(timeout=T) == 4


def test_ref_id_is_a_hex_string(ex):
    for ref in (ex.submit(square, 2), ex.put(3)):
        assert isinstance(ref.id, str) and ref.id
        int(ref.id, 16)  # raises if not hex


def test_refs_of_distinct_tasks_and_puts_have_distinct_ids(ex):
    refs = [ex.submit(square, 1) for _ in range(5)] + [ex.put(1) for _ in range(5)]
    assert len({r.id for r in refs}) == 10


def test_refs_compare_equal_and_hash_by_id_across_pickling(ex):
    ref = ex.put("x")
    clone = pickle.loads(pickle.dumps(ref))
    assert clone.id == ref.id
    assert clone == ref and hash(clone) == hash(ref)
    assert len({ref, clone}) == 1
    assert {ref: 1}[clone] == 1
    assert ref != ex.put("x")


def test_copy_and_deepcopy_of_a_ref_return_the_same_ref(ex):
    ref = ex.put([1])
    assert copy.copy(ref) is ref
    assert copy.deepcopy({"r": ref})["r"] is ref


def test_ref_pickled_by_user_code_resolves_inside_a_task(ex):
    ref = ex.put({"k": "v"})
    assert ex.get(ex.submit(get_pickled_ref, pickle.dumps(ref)), timeout=T) == {"k": "v"}


def test_result_returns_the_value_every_time_it_is_called(ex):
    ref = ex.submit(square, 9)
    assert ref.result(timeout=T) == 81
    assert ref.result(timeout=T) == 81
    assert ref.result() == 81


def test_result_of_a_failed_task_raises_the_original_exception_type(ex):
    ref = ex.submit(fail, "nope", KeyError)
    with pytest.raises(KeyError):
        ref.result(timeout=T)


def test_exception_returns_none_for_a_successful_task(ex):
    assert ex.submit(square, 2).exception(timeout=T) is None


def test_exception_returns_the_task_error_without_raising(ex):
    err = ex.submit(fail, "bad value").exception(timeout=T)
    assert isinstance(err, fedexec.TaskError)
    assert isinstance(err, ValueError)


def test_exception_timeout_raises_get_timeout_error(ex, gates):
    gate = gates()
    ref = ex.submit(block, gate.release)
    with pytest.raises(fedexec.GetTimeoutError):
        ref.exception(timeout=0.05)


def test_done_is_false_while_the_task_runs_and_true_after(ex, gates):
    gate = gates()
    ref = ex.submit(block, gate.release, 1, gate.started)
    gate.wait_started()
    assert not ref.done()
    gate.open()
    assert ref.result(timeout=T) == 1
    assert ref.done()


def test_running_is_true_while_the_task_executes(ex, gates):
    gate = gates()
    ref = ex.submit(block, gate.release, 1, gate.started)
    gate.wait_started()
    # (a distributed backend hears of the start a little after it: dask's event
    # comes from the worker through the scheduler; the task blocks until ``open``)
    assert poll_until(ref.running, timeout=T)
    gate.open()
    ref.result(timeout=T)
    assert not ref.running()


def test_add_done_callback_is_called_with_the_ref_when_it_finishes(ex, gates):
    gate = gates()
    ref = ex.submit(block, gate.release, "v")
    seen = []
    called = threading.Event()

    def callback(fut):
        seen.append(fut)
        called.set()

    ref.add_done_callback(callback)
    assert not called.is_set()
    gate.open()
    assert called.wait(T)
    assert seen == [ref] and seen[0] is ref
    assert seen[0].result(timeout=0) == "v"


def test_add_done_callback_on_a_finished_ref_runs_at_once(ex):
    ref = ex.put(5)
    seen = []
    ref.add_done_callback(seen.append)
    assert seen == [ref]


def test_add_done_callback_fires_once_for_a_failed_task(ex):
    ref = ex.submit(fail)
    called = threading.Event()
    seen = []

    def callback(fut):
        seen.append(fut.exception(timeout=0))
        called.set()

    ref.add_done_callback(callback)
    assert called.wait(T)
    assert len(seen) == 1 and isinstance(seen[0], ValueError)


def test_cf_wait_all_completed_returns_every_ref_done(ex):
    refs = [ex.submit(square, i) for i in range(8)]
    done, not_done = cf.wait(refs, timeout=T)
    assert done == set(refs) and not not_done


def test_cf_wait_first_completed_returns_the_finished_one_only(ex, gates):
    gate = gates()
    slow = ex.submit(block, gate.release)
    fast = ex.submit(square, 3)
    done, not_done = cf.wait([slow, fast], timeout=T, return_when=cf.FIRST_COMPLETED)
    assert done == {fast}
    assert not_done == {slow}


def test_cf_wait_first_exception_returns_when_a_task_fails(ex, gates):
    gate = gates()
    slow = ex.submit(block, gate.release)
    bad = ex.submit(fail)
    done, not_done = cf.wait([slow, bad], timeout=T, return_when=cf.FIRST_EXCEPTION)
    assert bad in done
    assert slow in not_done


def test_cf_as_completed_yields_refs_in_completion_order(ex, gates):
    gate = gates()
    slow = ex.submit(block, gate.release, "slow")
    fast = ex.submit(identity, "fast")
    it = cf.as_completed([slow, fast], timeout=T)
    assert next(it) is fast
    gate.open()
    assert next(it) is slow
    assert slow.result(timeout=0) == "slow"


def test_cf_as_completed_yields_every_ref_once(ex):
    refs = [ex.submit(square, i) for i in range(10)]
    got = list(cf.as_completed(refs, timeout=T))
    assert len(got) == 10 and set(got) == set(refs)


def test_await_ref_in_asyncio_gives_the_value(ex):
    ref = ex.submit(square, 6)

    async def main():
        return await ref

    assert asyncio.run(main()) == 36


def test_asyncio_gather_of_refs_gives_values_in_order(ex, gates):
    gate = gates()
    refs = [ex.submit(block, gate.release, "first"), ex.submit(identity, "second")]

    async def main():
        asyncio.get_running_loop().call_later(0.05, gate.open)
        return await asyncio.wait_for(asyncio.gather(*refs), T)

    assert asyncio.run(main()) == ["first", "second"]


def test_await_failed_ref_raises_the_original_exception_type(ex):
    ref = ex.submit(fail, "async failure", RuntimeError)

    async def main():
        await ref

    with pytest.raises(RuntimeError, match="async failure"):
        asyncio.run(main())
