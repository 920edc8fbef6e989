"""The native runtime's node table (``backends.native.membership``): pure state,
tested without processes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fedexec.backends.native.membership import Membership


def table() -> Membership:
    m = Membership(timeout=5.0)
    m.join("a", "127.0.0.1:1", {"CPU": 4.0}, now=0.0)
    m.join("b", "127.0.0.1:2", {"CPU": 2.0}, now=0.0)
    return m


def test_silent_nodes_expire_and_a_dead_node_must_join_again():
    m = table()
    assert m.heartbeat("a", {"CPU": 1.0}, 0, now=4.0)
    assert m.expire(now=6.0) == ["b"]
    assert [e.node_id for e in m.alive()] == ["a"]
    assert not m.heartbeat("b", {"CPU": 2.0}, 0, now=6.1)  # it must join again
    m.join("b", "127.0.0.1:2", {"CPU": 2.0}, now=6.2)
    assert m.is_alive("b")


def test_changes_since_sends_only_the_rows_that_changed():
    m = table()
    seen = m.version
    m.heartbeat("a", {"CPU": 3.0}, 1, now=1.0)
    m.heartbeat("b", {"CPU": 2.0}, 0, now=1.0)  # nothing changed: no new version
    assert [r[0] for r in m.changes_since(seen)] == ["a"]


def test_shape_version_moves_with_what_the_cluster_could_ever_run_not_with_load():
    """It keys the head's "fits no node" cache: a join, a death or a new total
    changes it; free resources changing (every heartbeat under load) do not."""
    m = table()
    v = m.shape_version
    m.heartbeat("a", {"CPU": 0.0}, 3, now=1.0)
    m.heartbeat("a", {"CPU": 4.0}, 0, now=1.5, total={"CPU": 4.0})
    assert m.shape_version == v
    m.heartbeat("a", {"CPU": 4.0}, 0, now=2.0, total={"CPU": 4.0, "pg_bundle": 1.0})
    assert m.shape_version > v
    v = m.shape_version
    m.mark_dead("b")
    assert m.shape_version > v
    v = m.shape_version
    m.join("c", "127.0.0.1:3", {"CPU": 8.0}, now=3.0)
    assert m.shape_version > v


def test_a_replica_fed_by_rows_reports_deaths_and_tracks_shape_changes():
    head = table()
    replica = Membership()
    replica.apply(head.changes_since(0))
    v = replica.shape_version
    replica.apply([["a", "127.0.0.1:1", {"CPU": 4.0}, {"CPU": 1.0}, True, 2]])
    assert replica.shape_version == v  # load only
    head.mark_dead("b")
    assert replica.apply(head.changes_since(0)) == ["b"]
    assert replica.shape_version > v


def test_a_replica_never_takes_a_row_older_than_a_report_it_got_directly():
    """A node tells the peers that forwarded it work what it has free (``report``,
    FWD_SEEN); a row from the head built from an earlier heartbeat (a lower beat)
    must not bring back the room that work took."""
    head = table()
    replica = Membership()
    head.heartbeat("a", {"CPU": 4.0}, 0, now=1.0, beat=10)
    stale = head.changes_since(0)
    replica.report("a", 11, {"CPU": 3.0}, 0)  # unknown node: nothing to update
    replica.apply(stale)
    replica.report("a", 11, {"CPU": 3.0}, 0)  # "a" took the actor we sent it
    replica.apply(stale)  # the head's older row comes late
    assert replica.nodes["a"].available == {"CPU": 3.0}
    head.heartbeat("a", {"CPU": 2.0}, 1, now=2.0, beat=12)
    replica.apply(head.changes_since(0))
    assert replica.nodes["a"].available == {"CPU": 2.0} and replica.nodes["a"].queued == 1
    assert not head.heartbeat("z", {}, 0, now=2.0, beat=1)
    head.report("a", 11, {"CPU": 4.0}, 0)  # out of order: ignored
    assert head.nodes["a"].available == {"CPU": 2.0}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["join", "beat", "dead", "apply"]),
                          st.sampled_from(["a", "b", "c"]),
                          st.integers(min_value=0, max_value=4)), max_size=30))
def test_totals_always_equal_the_live_nodes_sums(ops):
    m = Membership(timeout=5.0)
    for op, node, cpus in ops:
        total = {"CPU": float(cpus), "GPU": float(cpus % 2)}
        if op == "join":
            m.join(node, "", total, 0.0)
        elif op == "beat":
            m.heartbeat(node, total, 0, 0.0, total)
        elif op == "dead":
            m.mark_dead(node)
        else:
            m.apply([[node, "", total, total, cpus > 0, 0]])
        expected: dict[str, float] = {}
        for e in m.nodes.values():
            if e.alive:
                for k, v in e.total.items():
                    expected[k] = expected.get(k, 0.0) + v
        assert m.totals() == expected
