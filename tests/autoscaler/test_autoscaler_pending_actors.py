"""Actors that fit no live node but fit a node type the autoscaler may launch wait
for that node (see ``backends/native/pending_actors.py``) instead of being refused:
end to end with the ``local`` provider (real node processes)."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest
from test_autoscaler_local import Running, wait_for

import fedexec
from _backend_support import Recorder
from fedexec.autoscaler import ClusterConfig, NodeTypeConfig, request_resources
from fedexec.autoscaler.monitor import Monitor
from fedexec.autoscaler.providers import TAG_NODE_ID, LocalProvider
from fedexec.backends.native import state
from fedexec.cli import format_status
from fedexec.testing import Cluster


def custom_config() -> ClusterConfig:
    """A 1-CPU head and up to one node of a type that alone has ``custom``."""
    types = {"head": NodeTypeConfig("head", {"CPU": 1}, 0, 0),
             "custom": NodeTypeConfig("custom", {"CPU": 1, "custom": 1}, 0, 1)}
    return ClusterConfig(node_types=types, head_node_type="head", max_workers=1,
                         idle_timeout_minutes=5.0, upscaling_speed=1.0)


def pending_rows(cluster: Cluster) -> list[dict]:
    status = state.cluster_status(cluster.address, cluster.token)
    return [row for n in status["nodes"] for row in n.get("pending_actors", [])]


def listed(cluster: Cluster, actor: object) -> list[dict]:
    """``fedexec list actors`` rows of ``actor``."""
    rows = state.list_state("actors", cluster.address, cluster.token)
    return [r for r in rows if r["actor_id"] == actor.actor_id]  # type: ignore[attr-defined]


@pytest.mark.timeout(300)
def kill_launched_node(run: Running, ex: fedexec.Executor, node_id: str) -> None:
    """SIGKILL the launched node ``node_id``; return once the head declared it dead."""
    victim = next(p for p in run.provider.non_terminated_nodes()
                  if run.provider.node_tags(p).get(TAG_NODE_ID) == node_id)
    os.kill(run.provider._load()[victim]["pid"], signal.SIGKILL)
    wait_for(lambda: not any(n["alive"] for n in ex.nodes() if n["node_id"] == node_id),
             60, "the head to declare the killed node dead")


def test_an_actor_only_a_launchable_node_fits_waits_for_it_and_runs_its_calls(tmp_path):
    """No autoscaler: refused. With one whose node type has ``custom``: the actor
    waits on the head (shown by ``fedexec status`` with why, found by name), the
    node is launched for it, and the calls made meanwhile run there, in order."""
    with Cluster(head_num_cpus=1) as cluster, cluster.connect() as ex:
        with pytest.raises(ValueError, match="no autoscaler runs"):
            ex.options(resources={"custom": 1}).actor(Recorder)
        with Running(cluster, tmp_path, 300.0, custom_config()) as run:
            wait_for(lambda: run.monitor.last_plan is not None, 60,
                     "the monitor's first round")
            actor = ex.options(name="recorder", resources={"custom": 1}).actor(Recorder)
            refs = [actor.add.remote(i) for i in range(5)]
            where = actor.node.remote()
            # A node process takes seconds to start: the actor is still waiting.
            [row] = pending_rows(cluster)
            assert row["actor_id"] == actor.actor_id
            assert row["waits_for"] == "node" and row["shape"]["custom"] == 1
            text = format_status(state.cluster_status(cluster.address, cluster.token))
            assert "pending actors: 1" in text
            assert "'Recorder'" in text and "waits for a node to be launched" in text, text
            assert ex.get_actor("recorder") == actor
            assert ex.get(refs, timeout=240) == [list(range(i + 1)) for i in range(5)]
            assert ex.get(where, timeout=60) != cluster.head.node_id
            assert "launching 1 x custom for 1 pending {CPU: 1, custom: 1} actor" in run.log_text()
            assert pending_rows(cluster) == []
            # Found by name where it lives now; a new call goes there.
            assert ex.get(ex.get_actor("recorder").add.remote(5), timeout=60)[-1] == 5
            ex.kill(actor)


@pytest.mark.timeout(300)
def test_an_actor_whose_launched_node_dies_waits_for_a_replacement_node(tmp_path):
    """``max_restarts=1``: the node it runs on is SIGKILLed; no live node has
    ``custom``, so the actor waits again on the head, a new node is launched, and
    the actor restarts there (fresh state) and runs the call made meanwhile."""
    with Cluster(head_num_cpus=1) as cluster, cluster.connect() as ex:
        with Running(cluster, tmp_path, 300.0, custom_config()) as run:
            wait_for(lambda: run.monitor.last_plan is not None, 60,
                     "the monitor's first round")
            actor = ex.options(resources={"custom": 1}, max_restarts=1).actor(Recorder)
            first = ex.get(actor.node.remote(), timeout=240)
            assert ex.get(actor.add.remote(1), timeout=60) == [1]
            kill_launched_node(run, ex, first)
            call = actor.add.remote(2)
            assert ex.get(call, timeout=240) == [2]
            assert ex.get(actor.node.remote(), timeout=60) not in (first,
                                                                   cluster.head.node_id)
            ex.kill(actor)


@pytest.mark.timeout(240)
def test_killing_a_pending_actor_removes_it_and_its_demand(tmp_path):
    """A pending actor is autoscaler demand until it is killed: then its calls
    fail with ActorDiedError, it is no longer listed, and the next round plans
    nothing for it. (The provider's nodes never join: a head address where nothing
    listens.)"""
    with Cluster(head_num_cpus=1) as cluster, cluster.connect() as ex:
        provider = LocalProvider("pending-kill", "127.0.0.1:1", cluster.token,
                                 state_dir=str(tmp_path / "state"))
        monitor = Monitor(custom_config(), provider, cluster.address, cluster.token,
                          log_path=str(tmp_path / "monitor.log"), backoff_base=600.0)
        try:
            assert not monitor.step().launches  # reports the node types it may launch
            actor = ex.options(resources={"custom": 1}).actor(Recorder)
            call = actor.add.remote(1)
            assert [r["actor_id"] for r in pending_rows(cluster)] == [actor.actor_id]
            assert [r["state"] for r in listed(cluster, actor)] == ["WAITING_FOR_NODE"]
            decided = monitor.step()
            assert [(x.node_type, x.count) for x in decided.launches] == [("custom", 1)]
            assert "for 1 pending {CPU: 1, custom: 1} actor" in decided.launches[0].reason
            provider.wait_launches(60)
            ex.kill(actor)
            with pytest.raises(fedexec.ActorDiedError, match="killed before a node"):
                ex.get(call, timeout=30)
            assert pending_rows(cluster) == []
            assert listed(cluster, actor) == []
            decided = monitor.step()
            assert not decided.launches
            assert not any("actor" in line for line in decided.reasons()), decided.reasons()
        finally:
            monitor.close()
            provider.wait_launches(60)
            monitor.terminate_all()


def cpu4_config() -> ClusterConfig:
    """A 1-CPU head and up to one 4-CPU node."""
    types = {"head": NodeTypeConfig("head", {"CPU": 1}, 0, 0),
             "cpu4": NodeTypeConfig("cpu4", {"CPU": 4}, 0, 1)}
    return ClusterConfig(node_types=types, head_node_type="head", max_workers=1,
                         idle_timeout_minutes=5.0, upscaling_speed=1.0)


@pytest.mark.timeout(300)
def test_an_actor_the_summed_totals_fit_but_no_node_does_waits_for_a_launched_node(tmp_path):
    """Three 1-CPU nodes (3 CPUs in all) and an autoscaler that may launch a 4-CPU
    node: an actor asking for 3 CPUs fits no live node, so it pends (not refused),
    the node is launched for it, and its calls run there."""
    with Cluster(head_num_cpus=1) as cluster:
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1)
        with cluster.connect() as ex, Running(cluster, tmp_path, 300.0, cpu4_config()) as run:
            assert ex.cluster_resources()["CPU"] == 3
            wait_for(lambda: run.monitor.last_plan is not None, 60,
                     "the monitor's first round")
            actor = ex.options(num_cpus=3).actor(Recorder)
            refs = [actor.add.remote(i) for i in range(3)]
            [row] = pending_rows(cluster)
            assert row["actor_id"] == actor.actor_id and row["shape"]["CPU"] == 3
            assert ex.get(refs, timeout=240) == [[0], [0, 1], [0, 1, 2]]
            launched = {run.provider.node_tags(p).get(TAG_NODE_ID)
                        for p in run.provider.non_terminated_nodes()}
            assert ex.get(actor.node.remote(), timeout=60) in launched
            assert "launching 1 x cpu4 for 1 pending {CPU: 3} actor" in run.log_text()
            ex.kill(actor)


@pytest.mark.timeout(300)
def test_an_actor_placed_on_a_live_node_that_dies_waits_for_a_launched_one(tmp_path):
    """The actor is made on a live ``custom`` node (launched for a
    ``request_resources`` call, then withdrawn: it does not pend when made). That
    node is SIGKILLed; no live node has ``custom``, but the autoscaler may launch
    one: the actor (``max_restarts=1``) pends again on the head, is reported as
    demand, and is made again on the new node, where the calls made meanwhile run."""
    with Cluster(head_num_cpus=1) as cluster, cluster.connect() as ex, \
            contextlib.ExitStack() as stack:
        with Running(cluster, tmp_path, 300.0, custom_config()) as run:
            request_resources(bundles=[{"custom": 1}], executor=ex)
            wait_for(lambda: ex.cluster_resources().get("custom") == 1, 240,
                     "a custom node launched for request_resources")
            request_resources(executor=ex)
            # A driver that joined after the node did: it sees a node that fits.
            ex = stack.enter_context(cluster.connect())
            actor = ex.options(resources={"custom": 1}, max_restarts=1).actor(Recorder)
            first = ex.get(actor.node.remote(), timeout=60)
            assert first != cluster.head.node_id
            assert ex.get(actor.add.remote(1), timeout=60) == [1]
            kill_launched_node(run, ex, first)
            calls = [actor.add.remote(i) for i in (2, 3)]
            wait_for(lambda: [r["actor_id"] for r in pending_rows(cluster)] == [actor.actor_id]
                     or calls[0].done(), 60, "the actor to pend again")
            assert ex.get(calls, timeout=240) == [[2], [2, 3]]  # a fresh instance
            again = ex.get(actor.node.remote(), timeout=60)
            assert again not in (first, cluster.head.node_id)
            assert pending_rows(cluster) == []
            ex.kill(actor)
