"""Placement-group bookkeeping on one native node: a group's CPUs are never used
twice — not by a task on a bundle index and one on "any bundle" at once, and not by
the group's running work and other work after the group is removed (its share comes
back as that work ends). Tasks still queued for a removed group fail."""

from __future__ import annotations

import time

import pytest

import fedexec
from _backend_support import Counter, poll_until
from fedexec.exceptions import ActorDiedError, TaskCancelledError
from fedexec.options import PlacementGroupStrategy

pytestmark = pytest.mark.timeout(120)

T = 60


def span(seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def in_group(ex, pg, index=-1, **options):
    return ex.options(scheduling_strategy=PlacementGroupStrategy(pg, index), **options)


def no_group_keys(ex):
    return not any("_group_" in k for k in ex.available_resources())


def test_a_task_on_a_bundle_and_one_on_any_bundle_share_its_cpu():
    with fedexec.Executor(backend="native", num_cpus=3) as ex:
        pg = ex.placement_group([{"CPU": 1}])
        assert pg.ready(timeout=T)
        first = in_group(ex, pg, 0).submit(span, 1.0)
        second = in_group(ex, pg, -1).submit(span, 1.0)
        (s1, e1), (s2, e2) = first.result(timeout=T), second.result(timeout=T)
        assert e1 <= s2 or e2 <= s1, "two tasks ran at once in a one-CPU bundle"
        # Two bundles: one task on each index and none left for "any bundle".
        two = ex.placement_group([{"CPU": 1}, {"CPU": 1}])
        assert two.ready(timeout=T)
        a, b = in_group(ex, two, 0).submit(span, 1.0), in_group(ex, two, 1).submit(span, 1.0)
        c = in_group(ex, two, -1).submit(span, 0.1)
        (_, ea), (_, eb), (sc, _) = (r.result(timeout=T) for r in (a, b, c))
        assert sc >= min(ea, eb)


def test_removing_a_group_returns_its_running_tasks_cpu_when_they_end():
    with fedexec.Executor(backend="native", num_cpus=1) as ex:
        pg = ex.placement_group([{"CPU": 1}])
        assert pg.ready(timeout=T)
        running = in_group(ex, pg, 0).submit(span, 2.0)
        assert poll_until(running.running, timeout=T)
        queued = in_group(ex, pg, 0).submit(span, 0.1)
        ex.remove_placement_group(pg)
        after = ex.submit(span, 0.1)
        with pytest.raises(TaskCancelledError):  # a cancelled future: no message
            queued.result(timeout=T)
        (_, end), (start, _) = running.result(timeout=T), after.result(timeout=T)
        assert start >= end, "the group's CPU was used twice after the group was removed"
        assert poll_until(lambda: ex.available_resources().get("CPU") == 1.0, timeout=T)
        assert poll_until(lambda: no_group_keys(ex), timeout=T)


def test_an_actor_in_a_removed_group_keeps_its_cpu_until_it_ends():
    with fedexec.Executor(backend="native", num_cpus=1) as ex:
        pg = ex.placement_group([{"CPU": 1}])
        assert pg.ready(timeout=T)
        actor = in_group(ex, pg, 0, num_cpus=1).actor(Counter)  # holds its CPU
        assert actor.add.remote(1).result(timeout=T) == 1
        ex.remove_placement_group(pg)
        other = ex.submit(span, 0.1)
        done, _ = fedexec.wait([other], timeout=1.5)
        assert not done, "a task took the CPU an actor of the removed group holds"
        assert actor.add.remote(1).result(timeout=T) == 2
        ex.kill(actor)
        other.result(timeout=T)
        assert poll_until(lambda: no_group_keys(ex), timeout=T)


def test_removing_a_group_placed_on_another_node_books_nothing_twice_there():
    from fedexec.testing import Cluster

    with Cluster(head_num_cpus=0) as cluster:
        cluster.add_node(num_cpus=1)
        with cluster.connect() as ex:
            pg = ex.placement_group([{"CPU": 1}])
            assert pg.ready(timeout=T)
            running = in_group(ex, pg, 0).submit(span, 2.0)
            assert poll_until(running.running, timeout=T)
            queued = in_group(ex, pg, 0).submit(span, 0.1)
            ex.remove_placement_group(pg)
            with pytest.raises(TaskCancelledError):
                queued.result(timeout=T)
            after = ex.submit(span, 0.1)
            (_, end), (start, _) = running.result(timeout=T), after.result(timeout=T)
            assert start >= end, "the group's CPU was used twice after the group was removed"
            assert poll_until(lambda: no_group_keys(ex), timeout=T)


def test_an_actor_waiting_for_a_removed_groups_cpu_dies_with_a_reason():
    with fedexec.Executor(backend="native", num_cpus=1) as ex:
        pg = ex.placement_group([{"CPU": 1}])
        assert pg.ready(timeout=T)
        holder = in_group(ex, pg, 0, num_cpus=1).actor(Counter)
        assert holder.add.remote(1).result(timeout=T) == 1
        waiting = in_group(ex, pg, 0, num_cpus=1).actor(Counter)
        call = waiting.add.remote(1)
        ex.remove_placement_group(pg)
        with pytest.raises(ActorDiedError, match="placement group"):
            call.result(timeout=T)
        assert holder.add.remote(1).result(timeout=T) == 2  # the placed one lives on
