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


def test_the_event_log_keeps_the_last_tasks_and_counts_all():
    from fedexec.backends.native.events import EventLog

    log = EventLog(max_finished_tasks=3, max_dead_actors=1)
    log.record("n1", [["T", f"t{i}", "f", "FINISHED", "j", "", 1, 0.0] for i in range(5)])
    log.record("n2", [["T", "t9", "g", "FAILED", "j", "", 1, 0.0],
                      ["T", "t4", "f", "FAILED", "j", "", 1, 0.0]])  # t4 reported again
    assert [r["task_id"] for r in log.task_rows()] == ["t3", "t9", "t4"]
    assert log.task_rows()[-1]["node_id"] == "n2"
    assert {(r["name"], r["state"]): r["count"] for r in log.count_rows()} == {
        ("f", "FINISHED"): 4, ("f", "FAILED"): 1, ("g", "FAILED"): 1}
    log.record("n1", [["A", "a1", "C", "", "default", "ALIVE", "j", 5, 0, 0.0],
                      ["A", "a2", "C", "", "default", "DEAD", "j", 6, 0, 0.0]])
    log.node_event("n1", "DEAD", "killed")
    assert {r["actor_id"]: r["state"] for r in log.actor_rows()} == {"a1": "DEAD"}
