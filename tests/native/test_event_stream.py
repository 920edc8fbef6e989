"""The event stream to the head, across node processes on loopback: ended tasks from
every node are listed (FINISHED/FAILED, with their node) and counted, the head keeps
at most ``max_finished_tasks`` of them in detail while its counts keep every one,
and actors of a SIGKILLed node are listed dead from the head."""

from __future__ import annotations

import argparse
import json

import pytest

import fedexec
from _backend_support import poll_until
from fedexec.backends.native import state
from fedexec.backends.native.protocol import Call
from fedexec.dashboard import _cli
from fedexec.testing import Cluster

pytestmark = pytest.mark.timeout(180)

T = 60


def square(x):
    return x * x


def boom(x):
    raise ValueError(f"boom {x}")


class Pinger:
    def ping(self):
        return fedexec.get_runtime_context().node_id


def ended(cluster, name):
    rows = state.list_state("tasks", cluster.address, cluster.token)
    return [r for r in rows if r["name"] == name and "end_time" in r]


def head_rows(cluster, kind, key="name"):
    """The head's own LIST rows by ``key`` (it adds what its event log holds)."""
    with state._Session(cluster.address, cluster.token, 30.0) as session:
        return {r.get(key): r for r in session.request(Call.LIST, kind, timeout=30.0)}


def counts(cluster):
    rows = state.list_state("task_counts", cluster.address, cluster.token)
    return {(r["name"], r["state"]): r["count"] for r in rows}


def test_ended_tasks_of_every_node_are_listed_and_counted():
    with Cluster(head_num_cpus=1) as cluster:
        far = cluster.add_node(num_cpus=1, resources={"far": 1})
        with cluster.connect() as ex:
            here = [ex.options(num_cpus=1).submit(square, i) for i in range(3)]
            there = [ex.options(resources={"far": 1}).submit(square, i) for i in range(4)]
            bad = [ex.options(resources={"far": 1}, max_retries=0).submit(boom, i)
                   for i in range(2)]
            assert [r.result(timeout=T) for r in here + there] == [0, 1, 4, 0, 1, 4, 9]
            for r in bad:
                with pytest.raises(ValueError):
                    r.result(timeout=T)
            assert poll_until(lambda: len(ended(cluster, "square")) == 7, timeout=30)
            rows = ended(cluster, "square")
            assert all(r["state"] == "FINISHED" for r in rows)
            by_node = {r["node_id"] for r in rows}
            assert far.node_id in by_node
            assert {r["task_id"] for r in rows} == {r.id[:-2] for r in here + there}
            assert poll_until(lambda: len(ended(cluster, "boom")) == 2, timeout=30)
            assert {r["state"] for r in ended(cluster, "boom")} == {"FAILED"}
            assert {r["node_id"] for r in ended(cluster, "boom")} == {far.node_id}
            assert counts(cluster)[("square", "FINISHED")] == 7
            assert counts(cluster)[("boom", "FAILED")] == 2


def test_the_head_keeps_a_bounded_list_and_counts_every_ended_task(capsys, monkeypatch):
    with Cluster(head_num_cpus=1, max_finished_tasks=10) as cluster:
        cluster.add_node(num_cpus=1)
        with cluster.connect() as ex:
            refs = [ex.submit(square, i) for i in range(40)]
            assert sum(r.result(timeout=T) for r in refs) == sum(i * i for i in range(40))
            assert poll_until(lambda: counts(cluster).get(("square", "FINISHED")) == 40,
                              timeout=30)
            rows = ended(cluster, "square")
            assert len(rows) == 10
            # The newest ones stay.
            assert {r["task_id"] for r in rows} <= {r.id[:-2] for r in refs}
            assert refs[-1].id[:-2] in {r["task_id"] for r in rows}
            monkeypatch.setenv("FEDEXEC_TOKEN", cluster.token)
            args = argparse.Namespace(kind="tasks", address=cluster.address, format="json")
            assert _cli.summary_main(args) == 0
            table = json.loads(capsys.readouterr().out)
            assert {"name": "square", "state": "FINISHED", "count": 40} in table


def test_actors_of_a_killed_node_are_listed_dead_from_the_head():
    with Cluster(head_num_cpus=1) as cluster:
        far = cluster.add_node(num_cpus=1, resources={"far": 1})
        with cluster.connect() as ex:
            actor = ex.options(resources={"far": 1}).actor(Pinger)
            assert actor.ping.remote().result(timeout=T) == far.node_id

            def listed():
                rows = state.list_state("actors", cluster.address, cluster.token)
                return {r["actor_id"]: r for r in rows}

            assert listed()[actor.actor_id]["state"] == "ALIVE"
            # Events travel in batches: wait until the head has this one.
            assert poll_until(lambda: actor.actor_id in head_rows(cluster, "actors",
                                                                  "actor_id"), timeout=30)
            cluster.remove_node(far)
            assert poll_until(lambda: listed().get(actor.actor_id, {}).get("state") ==
                              "DEAD", timeout=30)
            assert listed()[actor.actor_id]["node_id"] == far.node_id
            events = state.list_state("node_events", cluster.address, cluster.token)
            assert [e["state"] for e in events if e["node_id"] == far.node_id] == \
                ["ALIVE", "DEAD"]


def test_placement_groups_are_listed_cluster_wide_from_the_head():
    with Cluster(head_num_cpus=1) as cluster:
        far = cluster.add_node(num_cpus=2, resources={"far": 1})
        other = cluster.add_node(num_cpus=1)

        def groups():
            rows = state.list_state("placement_groups", cluster.address, cluster.token)
            return {r["name"]: r for r in rows}

        # Asked of a driver on node `far`; listed by the head with that origin.
        with fedexec.Executor(address=far.address, token=cluster.token) as ex:
            kept = ex.placement_group([{"CPU": 1}], name="kept")
            gone = ex.placement_group([{"CPU": 1}], name="gone")
            assert kept.ready(timeout=T) and gone.ready(timeout=T)
            ex.remove_placement_group(gone)
            assert poll_until(lambda: groups().get("gone", {}).get("state") == "REMOVED",
                              timeout=30)
            assert groups()["kept"]["state"] == "CREATED"
            assert groups()["kept"]["node_id"] == far.node_id
        # Its origin node dies: the head still lists the group, as removed.
        with fedexec.Executor(address=other.address, token=cluster.token) as ex:
            assert ex.placement_group([{"CPU": 1}], name="orphan").ready(timeout=T)
            # Events travel in batches: wait until the head has this one.
            assert poll_until(lambda: "orphan" in head_rows(cluster, "placement_groups"),
                              timeout=30)
        cluster.remove_node(other)
        assert poll_until(lambda: groups().get("orphan", {}).get("state") == "REMOVED",
                          timeout=30), groups()
        assert groups()["orphan"]["node_id"] == other.node_id, groups()
