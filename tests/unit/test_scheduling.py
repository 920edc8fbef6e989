"""The pure scheduler state machine, driven without threads or processes."""

from hypothesis import given, settings
from hypothesis import strategies as st

from fedexec.backends._scheduling import ResourcePool, Scheduler


def test_dispatch_starts_only_what_fits_and_in_fifo_order():
    s = Scheduler(ResourcePool({"CPU": 2}))
    for name in "abcd":
        s.enqueue(name, {"CPU": 1})
    assert [item for item, _ in s.dispatch()] == ["a", "b"]
    assert s.dispatch() == []
    s.pool.release({"CPU": 1})
    assert [item for item, _ in s.dispatch()] == ["c"]


def test_a_big_head_does_not_block_a_smaller_shape():
    s = Scheduler(ResourcePool({"CPU": 2}))
    s.enqueue("small1", {"CPU": 1})
    assert [i for i, _ in s.dispatch()] == ["small1"]
    s.enqueue("big", {"CPU": 2})
    s.enqueue("small2", {"CPU": 1})
    assert [i for i, _ in s.dispatch()] == ["small2"]
    s.pool.release({"CPU": 1})
    s.pool.release({"CPU": 1})
    assert [i for i, _ in s.dispatch()] == ["big"]


def test_remove_takes_an_item_out_of_its_queue():
    s = Scheduler(ResourcePool({"CPU": 1}))
    s.enqueue("a", {"CPU": 1})
    s.enqueue("b", {"CPU": 1})
    assert s.remove("a")
    assert not s.remove("a")
    assert [i for i, _ in s.dispatch()] == ["b"]
    assert len(s) == 0


def test_custom_resources_limit_dispatch():
    s = Scheduler(ResourcePool({"CPU": 8, "disk": 1}))
    s.enqueue("a", {"CPU": 1, "disk": 1})
    s.enqueue("b", {"CPU": 1, "disk": 1})
    assert [i for i, _ in s.dispatch()] == ["a"]


def test_feasible_compares_with_the_total():
    pool = ResourcePool({"CPU": 2, "GPU": 1})
    assert pool.feasible({"CPU": 2, "GPU": 1})
    assert not pool.feasible({"CPU": 3})
    assert not pool.feasible({"TPU": 1})


def test_acquire_past_total_is_allowed_and_available_never_negative():
    pool = ResourcePool({"CPU": 1})
    pool.acquire({"CPU": 1})
    pool.acquire({"CPU": 1})  # a blocked task taking its CPU back
    assert pool.available() == {"CPU": 0.0}
    assert not pool.fits({"CPU": 0.5})


shapes = st.dictionaries(st.sampled_from(["CPU", "GPU", "x"]),
                         st.sampled_from([0.5, 1.0, 2.0]), min_size=1)


@settings(max_examples=200, deadline=None)
@given(total=st.fixed_dictionaries({"CPU": st.integers(1, 4), "GPU": st.integers(0, 2),
                                    "x": st.integers(0, 3)}),
       ops=st.lists(st.one_of(st.tuples(st.just("enqueue"), shapes),
                              st.tuples(st.just("finish"), st.integers(0, 50))), max_size=60))
def test_usage_never_exceeds_total_and_every_started_item_fits(total, ops):
    pool = ResourcePool(total)
    s = Scheduler(pool)
    running: list[dict[str, float]] = []
    queued = 0
    for op, arg in ops:
        if op == "enqueue":
            if pool.feasible(arg):
                s.enqueue(object(), arg)
                queued += 1
        elif running:
            pool.release(running.pop(arg % len(running)))
        started = s.dispatch()
        queued -= len(started)
        running.extend(d for _, d in started)
        for k, t in pool.total.items():
            assert pool.used.get(k, 0.0) <= t + 1e-9
        assert len(s) == queued
    # Once everything finishes, every queued item gets to run.
    while running or len(s):
        if running:
            pool.release(running.pop())
        started = s.dispatch()
        running.extend(d for _, d in started)
    assert len(s) == 0


def test_a_retired_resource_gives_its_base_back_as_its_holders_release_it():
    pool = ResourcePool({"CPU": 4})
    pool.acquire({"CPU": 2})                     # a placement group carves 2 CPUs out
    pool.total.update({"CPU_group_g": 2.0})
    pool.used["CPU_group_g"] = 0.0
    pool.acquire({"CPU_group_g": 1})             # one of its tasks runs
    pool.release({"CPU": 1})                     # removal: the unused CPU back at once
    pool.retire("CPU_group_g", "CPU")
    assert pool.available()["CPU"] == 3 and not pool.fits({"CPU_group_g": 1})
    pool.release({"CPU_group_g": 1})             # the task ends: its CPU comes back too
    assert pool.available() == {"CPU": 4} and pool.retired == {}
    pool.retire("unused")                        # nothing held: dropped at once
    assert "unused" not in pool.total


def test_unretire_offers_the_resource_again_without_holding_its_base_twice():
    pool = ResourcePool({"CPU": 2})
    pool.total["CPU_group_g"] = 1.0
    pool.acquire({"CPU": 1})
    pool.acquire({"CPU_group_g": 1})
    pool.retire("CPU_group_g", "CPU")            # removed while its task runs
    pool.acquire({"CPU": 1})                     # placed here again: the bundle's CPU
    pool.unretire("CPU_group_g")
    pool.total["CPU_group_g"] += 1.0
    assert pool.used["CPU"] == 1.0 and not pool.fits({"CPU_group_g": 1})
    pool.release({"CPU_group_g": 1})
    assert pool.fits({"CPU_group_g": 1}) and pool.used["CPU"] == 1.0
