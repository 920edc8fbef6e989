"""Actors waiting for a node (``backends/native/pending_actors.py``): the pure
bookkeeping against a real ``Membership`` table, and an actor made in a placement
group that is not placed yet, which waits for it across real node processes."""

from __future__ import annotations

import pytest

import fedexec
from _backend_support import Recorder, poll_until
from fedexec.backends.native import state
from fedexec.backends.native.directory import ActorDirectory
from fedexec.backends.native.membership import Membership
from fedexec.backends.native.pending_actors import PendingActor, PendingActors
from fedexec.options import PlacementGroupStrategy
from fedexec.testing import Cluster

T = 60


def pending(actor_id: str, shape: dict[str, float], waits: str = "node") -> PendingActor:
    spec = {"class_name": "Recorder", "demand_create": shape, "await_node": waits}
    return PendingActor(actor_id, spec, None, [], [], 1, 0.0)


def ids(entries: list[PendingActor]) -> list[str]:
    return [e.actor_id for e in entries]


def test_pending_actors_are_tried_again_only_when_the_cluster_shape_changes():
    members = Membership()
    members.join("head", "", {"CPU": 1}, 0.0)
    book = PendingActors()
    assert book.due(members.shape_version) == []  # nothing pends
    book.add(pending("a", {"CPU": 1, "custom": 1}), members.shape_version)
    assert book.due(members.shape_version) == []  # just found to fit no node
    members.heartbeat("head", {"CPU": 0}, 3, 1.0)  # only free resources changed
    assert book.due(members.shape_version) == []
    members.join("n1", "", {"CPU": 1}, 2.0)  # a node joined: try again (it does not fit)
    assert ids(book.due(members.shape_version)) == ["a"]
    assert book.due(members.shape_version) == []  # once per shape
    book.add(pending("b", {"CPU_group_0_g": 1}, waits="group"), members.shape_version)
    members.heartbeat("n1", {"CPU": 1}, 0, 3.0, total={"CPU": 1, "CPU_group_0_g": 1})
    assert ids(book.due(members.shape_version)) == ["a", "b"]  # oldest first
    members.mark_dead("n1")
    assert ids(book.due(members.shape_version)) == ["a", "b"]
    # Only the actor waiting for a node to be launched is autoscaler demand.
    assert book.demand() == [{"CPU": 1, "custom": 1}]
    rows = {r["actor_id"]: r for r in book.rows()}
    assert rows["a"]["waits_for"] == "node"
    assert "waits for a node to be launched" in rows["a"]["reason"]
    assert "{CPU: 1, custom: 1}" in rows["a"]["reason"]
    assert "waits for its placement group" in rows["b"]["reason"]
    assert book.pop("a") is not None and book.pop("a") is None
    assert "a" not in book and "b" in book and len(book) == 1


def test_a_pending_actor_placed_on_its_node_is_not_counted_as_a_restart():
    """The head's directory: a waiting actor registers where it waited, then where
    it is placed; that move must not use up a restart (``max_restarts=1`` would be
    spent before the actor ever ran). A move after its node died still counts."""
    directory = ActorDirectory()
    spec = {"name": "w", "max_restarts": 1, "await_node": "node"}
    directory.register("a", spec, "head", "head")
    entry = directory.register("a", spec, "n1", "head")
    assert (entry.node_id, entry.restarts, entry.may_restart()) == ("n1", 0, True)
    restarting, _ = directory.node_died("n1", lambda node: node == "head")
    assert restarting == ["a"]
    entry = directory.register("a", spec, "n2", "head")
    assert (entry.node_id, entry.restarts, entry.may_restart()) == ("n2", 1, False)


@pytest.mark.timeout(180)
def test_an_actor_in_a_placement_group_not_placed_yet_waits_for_the_group():
    """The group needs a 2-CPU node the cluster does not have: the actor made in it
    waits (listed with why), its calls queue (one is cancelled), and once a node joins and the group is
    placed there, the actor starts there and runs them in order."""
    with Cluster(head_num_cpus=1) as cluster, cluster.connect() as ex:
        pg = ex.placement_group([{"CPU": 2}], strategy="PACK")
        assert not pg.ready(timeout=0.5)
        actor = ex.options(scheduling_strategy=PlacementGroupStrategy(pg, 0)).actor(Recorder)
        refs = [actor.add.remote(i) for i in range(3)]
        rows: list[dict] = []

        def listed() -> bool:  # the creation and the calls reach the head asynchronously
            status = state.cluster_status(cluster.address, cluster.token)
            rows[:] = [r for n in status["nodes"] for r in n["pending_actors"]]
            return len(rows) == 1 and rows[0]["calls"] == 3

        assert poll_until(listed, timeout=T), rows
        [row] = rows
        assert row["actor_id"] == actor.actor_id
        assert row["waits_for"] == "group" and "placement group" in row["reason"]
        assert refs[1].cancel()  # a queued call can be cancelled meanwhile
        node = cluster.add_node(num_cpus=2)
        assert pg.ready(timeout=T)
        assert ex.get([refs[0], refs[2]], timeout=T) == [[0], [0, 2]]
        assert ex.get(actor.node.remote(), timeout=T) == node.node_id
        ex.kill(actor)
        ex.remove_placement_group(pg)
        # A group that can never be placed (no node has 8 CPUs): removing it ends
        # the actor waiting for it, and its calls.
        never = ex.placement_group([{"CPU": 8}])
        doomed = ex.options(scheduling_strategy=PlacementGroupStrategy(never, 0)
                            ).actor(Recorder)
        call = doomed.add.remote(1)
        ex.remove_placement_group(never)
        with pytest.raises(fedexec.ActorDiedError, match="placement group was removed"):
            ex.get(call, timeout=T)


@pytest.mark.timeout(120)
def test_an_actor_no_single_node_fits_is_refused_even_when_the_sum_would_fit():
    """Three 1-CPU nodes sum to 3 CPUs, but an actor or task asking for 2 fits none
    of them, and no autoscaler runs: refused at once, saying what it asked and the
    largest node (no actor is made, nothing waits)."""
    with Cluster(head_num_cpus=1) as cluster:
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1)
        with cluster.connect() as ex:
            assert ex.cluster_resources()["CPU"] == 3
            with pytest.raises(ValueError, match=r"no single node") as info:
                ex.options(num_cpus=2).actor(Recorder)
            text = str(info.value)
            assert "'Recorder'" in text and "{'CPU': 2.0}" in text, text
            assert "the largest node has {'CPU': 1.0" in text, text
            assert "no autoscaler runs" in text, text
            with pytest.raises(ValueError, match=r"no single node"):
                ex.options(num_cpus=2).submit(sum, [1])
            rows = state.list_state("actors", cluster.address, cluster.token)
            assert [r for r in rows if r.get("class") == "Recorder"] == []


@pytest.mark.timeout(120)
def test_work_for_a_node_that_just_joined_is_not_refused_from_another_node():
    """A driver on node a asks for node b's resource right after b joined the head:
    a's table may not list b yet (it lags the head's by a heartbeat tick), which
    must not make the work look impossible."""
    with Cluster(head_num_cpus=1) as cluster:
        a = cluster.add_node(num_cpus=1)
        with fedexec.Executor(address=a.address, token=cluster.token) as ex:
            for i in range(3):
                cluster.add_node(num_cpus=1, resources={f"b{i}": 1}, wait=False)
                ref = ex.options(num_cpus=0, resources={f"b{i}": 1}).submit(sum, [i, 1])
                assert ref.result(timeout=T) == i + 1


@pytest.mark.timeout(120)
def test_an_actor_whose_node_dies_with_nothing_left_to_fit_it_dies_saying_why():
    """``max_restarts=1``, but the only node with ``custom`` is SIGKILLed and no
    autoscaler runs: no node can ever host the actor again, so it dies at once and
    its calls raise ActorDiedError saying why (it does not linger, nor wait)."""
    with Cluster(head_num_cpus=1) as cluster:
        node = cluster.add_node(num_cpus=1, resources={"custom": 1})
        with cluster.connect() as ex:
            actor = ex.options(resources={"custom": 1}, max_restarts=1).actor(Recorder)
            assert ex.get(actor.add.remote(1), timeout=T) == [1]
            cluster.remove_node(node)  # SIGKILL
            assert poll_until(lambda: not any(n["alive"] for n in ex.nodes()
                                              if n["node_id"] == node.node_id), T)
            with pytest.raises(fedexec.ActorDiedError) as info:
                ex.get(actor.add.remote(2), timeout=T)
            text = str(info.value)
            assert "no live node can host it" in text and "'custom': 1" in text, text
            assert "no autoscaler runs" in text, text
            assert pending_rows_of(cluster) == []


def pending_rows_of(cluster: Cluster) -> list[dict]:
    status = state.cluster_status(cluster.address, cluster.token)
    return [row for n in status["nodes"] for row in n.get("pending_actors", [])]
