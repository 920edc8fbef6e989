"""The head's actor directory as pure state (``backends.native.directory``)."""

from __future__ import annotations

from fedexec.backends.native.directory import ActorDirectory


def spec(name=None, max_restarts=0, namespace="default"):
    return {"name": name, "namespace": namespace, "max_restarts": max_restarts}


def test_a_name_is_held_by_one_actor_until_it_is_removed():
    d = ActorDirectory()
    assert d.register("a1", spec("svc"), "n1", "n1").actor_id == "a1"
    assert d.register("a2", spec("svc"), "n2", "n2").actor_id == "a1"  # taken
    assert d.register("a3", spec("svc", namespace="other"), "n2", "n2").actor_id == "a3"
    assert d.lookup("svc", "default").node_id == "n1"
    d.remove("a1")
    assert d.lookup("svc", "default") is None
    assert d.register("a2", spec("svc"), "n2", "n2").actor_id == "a2"


def test_a_node_death_restarts_what_may_restart_and_frees_the_rest():
    d = ActorDirectory()
    d.register("keep", spec("k", max_restarts=1), "n1", "owner")
    d.register("local", spec("l", max_restarts=1), "n1", "n1")  # its owner dies with it
    d.register("once", spec("o"), "n1", "owner")
    alive = {"owner", "n2"}
    restarting, removed = d.node_died("n1", alive.__contains__)
    assert restarting == ["keep"] and sorted(removed) == ["local", "once"]
    assert d.lookup("k", "default").state == "RESTARTING"
    assert d.lookup("o", "default") is None
    # Made again elsewhere under its id: it moves, and its one restart is used up.
    assert d.register("keep", spec("k", max_restarts=1), "n2", "owner").node_id == "n2"
    entry = d.lookup("k", "default")
    assert entry.state == "ALIVE" and entry.restarts == 1 and not entry.may_restart()
    _, removed = d.node_died("n2", alive.__contains__)
    assert removed == ["keep"] and d.lookup("k", "default") is None


def test_restarting_actors_of_an_owner_that_dies_are_gone():
    d = ActorDirectory()
    d.register("x", spec("x", max_restarts=-1), "n1", "owner")
    d.node_died("n1", lambda n: True)
    _, removed = d.node_died("owner", lambda n: False)
    assert removed == ["x"] and not d.entries


def test_rows_load_back_into_an_equal_directory():
    d = ActorDirectory()
    d.register("a", spec("svc", max_restarts=2), "n1", "n0")
    d.node_died("n1", lambda n: True)
    e = ActorDirectory()
    e.load(d.rows())
    assert e.rows() == d.rows() and e.lookup("svc", "default").state == "RESTARTING"
