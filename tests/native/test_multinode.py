"""The native runtime across nodes, each node a real process with its own store:
object transfer, spillback, locality, SPREAD, affinity, actors elsewhere, node loss
(SIGKILL) with retries and lineage rebuild, late joiners, a head restart, and the
CLI that joins nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fedexec
from _backend_support import Counter, poll_until
from fedexec.exceptions import (
    AuthenticationError,
    NodeDiedError,
    ObjectLostError,
    WorkerCrashedError,
)
from fedexec.options import NodeAffinity
from fedexec.testing import Cluster

pytestmark = pytest.mark.timeout(180)

T = 60


def node_of(*_args):
    """The node a task ran on (arguments are ignored: they only create dependencies)."""
    return fedexec.get_runtime_context().node_id


def sleep_on_node(seconds):
    time.sleep(seconds)
    return fedexec.get_runtime_context().node_id


def make_array(n, value=1.0):
    return np.full(n, value)


def total(arr):
    return float(arr.sum()), fedexec.get_runtime_context().node_id


def stats_of(address, token):
    with fedexec.Executor(address=address, token=token) as ex:
        return ex._backend.stats()


@pytest.fixture
def cluster():
    with Cluster(head_num_cpus=1) as c:
        yield c


def test_nodes_join_and_resources_add_up(cluster):
    far = cluster.add_node(num_cpus=2, resources={"far": 1})
    with cluster.connect() as ex:
        nodes = {n["node_id"]: n for n in ex.nodes()}
        assert set(nodes) == {cluster.head.node_id, far.node_id}
        assert all(n["alive"] for n in nodes.values())
        assert nodes[cluster.head.node_id]["is_head"]
        assert ex.cluster_resources()["CPU"] == 3
        assert ex.cluster_resources()["far"] == 1


def test_a_large_result_made_elsewhere_is_pulled_to_the_driver(cluster):
    far = cluster.add_node(num_cpus=1, resources={"far": 1})
    with cluster.connect() as ex:
        ref = ex.options(resources={"far": 1}).submit(make_array, 3_000_000, 2.0)
        value = ref.result(timeout=T)
        assert value.shape == (3_000_000,) and float(value.sum()) == 6_000_000.0
        head = ex._backend.stats()["transfers"]
        assert head["pulls"] == 1 and head["pulled_bytes"] >= 24_000_000
        assert stats_of(far.address, cluster.token)["transfers"]["served"] == 1
        # A second get reads the cached copy: no new transfer.
        assert float(ex.get(ref).sum()) == 6_000_000.0
        assert ex._backend.stats()["transfers"]["pulls"] == 1


def test_a_put_is_pulled_by_a_task_on_another_node(cluster):
    cluster.add_node(num_cpus=1, resources={"far": 1})
    with cluster.connect() as ex:
        data = ex.put(np.arange(2_000_000, dtype=np.float64))
        value, node = ex.options(resources={"far": 1}).submit(total, data).result(timeout=T)
        assert value == float(np.arange(2_000_000, dtype=np.float64).sum())
        assert node != cluster.head.node_id


def test_concurrent_pulls_of_one_object_are_merged_and_freed_after(cluster):
    cluster.add_node(num_cpus=1, resources={"far": 1})
    with cluster.connect() as ex:
        src = ex.options(resources={"far": 1}).submit(make_array, 2_000_000)
        ex.wait([src], timeout=T)
        # Three consumers on the head at once: one transfer.
        refs = [ex.options(num_cpus=0.3, scheduling_strategy=NodeAffinity(
            cluster.head.node_id)).submit(total, src) for _ in range(3)]
        assert [r.result(timeout=T)[0] for r in refs] == [2_000_000.0] * 3
        assert ex._backend.stats()["transfers"]["pulls"] == 1
        del src, refs
        assert poll_until(lambda: ex._backend.stats()["store"]["num_objects"] == 0)


def test_spillback_runs_work_on_other_nodes_when_the_head_is_busy(cluster):
    second = cluster.add_node(num_cpus=2)
    with cluster.connect() as ex:
        refs = [ex.submit(sleep_on_node, 0.5) for _ in range(6)]
        nodes = [r.result(timeout=T) for r in refs]
        assert set(nodes) == {cluster.head.node_id, second.node_id}
        assert ex._backend.stats()["transfers"]["forwarded_tasks"] >= 2


def test_a_task_needing_a_resource_only_another_node_has_runs_there(cluster):
    far = cluster.add_node(num_cpus=1, resources={"gpuish": 2})
    with cluster.connect() as ex:
        assert ex.options(resources={"gpuish": 1}).submit(node_of).result(timeout=T) == \
            far.node_id


def test_locality_a_task_follows_its_large_argument(cluster):
    far = cluster.add_node(num_cpus=2, resources={"far": 1})
    with cluster.connect() as ex:
        big = ex.options(resources={"far": 1}).submit(make_array, 2_000_000)
        ex.wait([big], timeout=T)
        # The head has a free CPU, but the 16 MB argument lives on the far node.
        assert ex.submit(node_of, big).result(timeout=T) == far.node_id
        assert ex._backend.stats()["transfers"]["pulls"] == 0


def test_spread_puts_tasks_on_every_node(cluster):
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    with cluster.connect() as ex:
        refs = [ex.options(scheduling_strategy="SPREAD", num_cpus=0.1).submit(
            sleep_on_node, 0.2) for _ in range(6)]
        assert {r.result(timeout=T) for r in refs} == {n.node_id for n in cluster.nodes}


def test_node_affinity_hard_and_soft(cluster):
    far = cluster.add_node(num_cpus=1)
    with cluster.connect() as ex:
        on = ex.options(scheduling_strategy=NodeAffinity(far.node_id))
        assert {on.submit(node_of).result(timeout=T) for _ in range(3)} == {far.node_id}
        with pytest.raises(ValueError, match="no alive node"):
            ex.options(scheduling_strategy=NodeAffinity("0" * 28)).submit(node_of)
        soft = ex.options(scheduling_strategy=NodeAffinity("0" * 28, soft=True))
        assert soft.submit(node_of).result(timeout=T) in {n.node_id for n in cluster.nodes}


def test_a_task_pinned_to_a_node_that_died_before_it_could_run_fails_with_node_died(
        cluster):
    # It waits for an argument; meanwhile its node is declared dead: a hard affinity
    # can never be met any more.
    doomed = cluster.add_node(num_cpus=1)
    with cluster.connect() as ex:
        slow = ex.submit(sleep_on_node, 4)
        pinned = ex.options(scheduling_strategy=NodeAffinity(doomed.node_id)).submit(
            node_of, slow)
        cluster.remove_node(doomed)
        with pytest.raises(NodeDiedError, match="not alive"):
            pinned.result(timeout=T)


def call_actor(handle, k):
    return fedexec.get(handle.add.remote(k), timeout=30)


def test_actors_live_on_other_nodes_and_are_reachable_from_everywhere(cluster):
    far = cluster.add_node(num_cpus=1, resources={"far": 1})
    other = cluster.add_node(num_cpus=1, resources={"other": 1})
    with cluster.connect() as ex:
        counter = ex.options(resources={"far": 0.5}, name="c").actor(Counter, 10)
        assert counter.where.remote().result(timeout=T) == far.node_id
        assert [counter.add.remote().result(timeout=T) for _ in range(3)] == [11, 12, 13]
        # A task on a third node calls it through its handle.
        assert ex.options(resources={"other": 1}).submit(call_actor, counter, 5).result(
            timeout=T) == 18
        assert ex.get_actor("c").add.remote(2).result(timeout=T) == 20
        ex.kill(counter)
        with pytest.raises(fedexec.exceptions.ActorDiedError):
            counter.add.remote().result(timeout=T)
        assert other.node_id != far.node_id


def test_a_task_on_a_killed_node_is_retried_elsewhere(cluster):
    a = cluster.add_node(num_cpus=1, resources={"special": 1})
    b = cluster.add_node(num_cpus=1, resources={"special": 1})
    with cluster.connect() as ex:
        ref = ex.options(resources={"special": 1}).submit(sleep_on_node, 2.0)
        assert poll_until(lambda: ex._backend.stats()["transfers"]["forwarded_tasks"] >= 1)
        time.sleep(0.3)
        victim = a if poll_until(lambda: _busy(ex, a), timeout=1) else b
        survivor = b if victim is a else a
        cluster.remove_node(victim)
        assert ref.result(timeout=T) == survivor.node_id
        assert poll_until(lambda: not _alive(ex, victim.node_id), timeout=10)


def test_without_retries_a_killed_node_fails_its_task_with_node_died(cluster):
    victim = cluster.add_node(num_cpus=1, resources={"special": 1})
    with cluster.connect() as ex:
        ref = ex.options(resources={"special": 1}, max_retries=0).submit(sleep_on_node, 30)
        assert poll_until(lambda: _busy(ex, victim))
        cluster.remove_node(victim)
        with pytest.raises((NodeDiedError, WorkerCrashedError)):
            ref.result(timeout=T)


def test_lineage_rebuilds_a_result_lost_with_its_node(cluster):
    a = cluster.add_node(num_cpus=1, resources={"special": 1})
    b = cluster.add_node(num_cpus=1, resources={"special": 1})
    with cluster.connect() as ex:
        ref = ex.options(resources={"special": 1}).submit(make_array, 1_000_000, 3.0)
        ex.wait([ref], timeout=T)
        assert ex._backend.stats()["transfers"]["pulls"] == 0  # it stayed where it was made
        holder = a if _holds_objects(a, cluster) else b
        cluster.remove_node(holder)
        assert poll_until(lambda: not _alive(ex, holder.node_id), timeout=10)
        assert float(ref.result(timeout=T).sum()) == 3_000_000.0  # run again, elsewhere


def test_a_lost_object_without_lineage_raises_object_lost(cluster):
    victim = cluster.add_node(num_cpus=1, resources={"special": 1})
    with cluster.connect() as ex:
        ref = ex.options(resources={"special": 1}, max_retries=0).submit(make_array, 1_000_000)
        ex.wait([ref], timeout=T)
        cluster.remove_node(victim)
        assert poll_until(lambda: not _alive(ex, victim.node_id), timeout=10)
        with pytest.raises(ObjectLostError):
            ref.result(timeout=T)


def test_a_node_joining_late_receives_queued_work(cluster):
    with cluster.connect() as ex:
        refs = [ex.submit(sleep_on_node, 1.0) for _ in range(5)]
        time.sleep(0.3)
        late = cluster.add_node(num_cpus=3)
        nodes = [r.result(timeout=T) for r in refs]
        assert late.node_id in nodes


def test_a_node_with_a_wrong_token_cannot_join(cluster, tmp_path, monkeypatch):
    from fedexec.backends.native import cluster as native_cluster

    monkeypatch.setenv("FEDEXEC_HOME", str(tmp_path))
    with pytest.raises(AuthenticationError):
        native_cluster.start_node(cluster.address, token="00" * 32)
    with cluster.connect() as ex:
        assert len(ex.nodes()) == 1


def test_nodes_rejoin_a_restarted_head_and_running_work_survives(tmp_path):
    from fedexec.backends.native.runtime import NodeProcess
    from fedexec.config import RuntimeConfig

    token = os.urandom(32).hex()
    opts = {"heartbeat_interval": 0.2, "heartbeat_timeout": 2.0}

    def launch(**kw):
        config = RuntimeConfig.make(num_cpus=1, token=token, backend_options=opts)
        return NodeProcess.launch(config, embedded=False, owner_pid=os.getpid(), **kw)

    head = launch(tcp=("127.0.0.1", 0))
    address = head.info["address"]
    node = launch(tcp=("127.0.0.1", 0), head_address=address)
    try:
        with fedexec.Executor(address=node.info["address"], token=token) as ex:
            ref = ex.submit(sleep_on_node, 3.0)  # runs on the node across the restart
            head.proc.kill()
            head.stop()
            host, port = address.rsplit(":", 1)
            head = launch(tcp=(host, int(port)))
            assert ref.result(timeout=T) == node.info["node_id"]
        with fedexec.Executor(address=address, token=token) as ex:
            assert poll_until(lambda: node.info["node_id"] in {
                n["node_id"] for n in ex.nodes() if n["alive"]}, timeout=15)
            assert ex.options(scheduling_strategy=NodeAffinity(node.info["node_id"])).submit(
                node_of).result(timeout=T) == node.info["node_id"]
    finally:
        for proc in (node, head):
            proc.proc.terminate()
            proc.stop()


def test_cli_start_address_joins_and_stop_stops_both(tmp_path):
    env = {**os.environ, "FEDEXEC_HOME": str(tmp_path)}
    env.pop("FEDEXEC_TOKEN", None)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fedexec", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    assert cli("start", "--head", "--port", "0", "--job-port", "0", "--num-cpus",
               "1").returncode == 0
    try:
        address = json.loads((tmp_path / "cluster.json").read_text())["address"]
        out = cli("start", "--address", address, "--num-cpus", "2", "--resources",
                  '{"far": 1}')
        assert out.returncode == 0, out.stderr
        assert "joined the head" in out.stdout
        bad = cli("start", "--address", "127.0.0.1:1")
        assert bad.returncode == 1 and "cannot reach" in bad.stderr
        status = json.loads(cli("status", "--format", "json").stdout)
        assert len([n for n in status["nodes"] if n["alive"]]) == 2
        assert status["total"]["CPU"] == 3 and status["total"]["far"] == 1
    finally:
        out = cli("stop")
    assert "stopped 1 fedexec node" in out.stdout and "head stopped" in out.stdout


@pytest.mark.timeout(150)
def test_cli_head_started_again_after_a_kill_takes_its_nodes_back(tmp_path):
    """`fedexec start --head` after the head was SIGKILLed reuses the killed head's
    token (its state is still on disk), so the node still running rejoins it."""
    import signal
    import socket

    env = {**os.environ, "FEDEXEC_HOME": str(tmp_path)}
    env.pop("FEDEXEC_TOKEN", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fedexec", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    head = ("start", "--head", "--port", port, "--job-port", "0", "--num-cpus", "1",
            "--no-dashboard")
    assert cli(*head).returncode == 0
    try:
        info = json.loads((tmp_path / "cluster.json").read_text())
        out = cli("start", "--address", info["address"], "--num-cpus", "1")
        assert out.returncode == 0, out.stderr
        token = (tmp_path / "token").read_text()
        os.kill(info["pid"], signal.SIGKILL)
        assert poll_until(lambda: cli("status").returncode != 0, timeout=30)
        out = cli(*head)
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "token").read_text() == token

        def both_alive():
            out = cli("status", "--format", "json")
            return out.returncode == 0 and len(
                [n for n in json.loads(out.stdout)["nodes"] if n["alive"]]) == 2

        assert poll_until(both_alive, timeout=60)
    finally:
        cli("stop")


# ----------------------------------------------------------------- helpers
def _alive(ex, node_id):
    return any(n["node_id"] == node_id and n["alive"] for n in ex.nodes())


def _busy(ex, node):
    entry = next(n for n in ex.nodes() if n["node_id"] == node.node_id)
    return entry["available"].get("special", 1.0) < 1.0


def _holds_objects(node, cluster):
    return stats_of(node.address, cluster.token)["objects"] > 0


# --------------------------------------------------------- placement groups
def test_placement_groups_reserve_bundles_atomically_across_nodes(cluster):
    from fedexec.options import PlacementGroupStrategy

    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    with cluster.connect() as ex:
        spread = ex.placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
        assert spread.ready(timeout=T)
        in_bundle = [ex.options(scheduling_strategy=PlacementGroupStrategy(spread, i)).submit(
            sleep_on_node, 0.1) for i in range(3)]
        assert len({r.result(timeout=T) for r in in_bundle}) == 3  # one bundle per node
        assert poll_until(lambda: ex.available_resources()["CPU"] == 0)
        # Nothing left: a new group waits, all or nothing, until the first is removed.
        waiting = ex.placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
        assert not waiting.ready(timeout=1)
        too_many = ex.placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")
        ex.remove_placement_group(spread)
        assert waiting.ready(timeout=T)
        assert not too_many.ready(timeout=1)  # four distinct nodes will never exist
        ex.remove_placement_group(too_many)
        ex.remove_placement_group(waiting)
        assert poll_until(lambda: ex.available_resources()["CPU"] == 3)


def test_strict_pack_keeps_bundles_on_one_node_and_actors_run_in_them(cluster):
    from fedexec.options import PlacementGroupStrategy

    big = cluster.add_node(num_cpus=3)
    with cluster.connect() as ex:
        pg = ex.placement_group([{"CPU": 1}, {"CPU": 2}], strategy="STRICT_PACK")
        assert pg.ready(timeout=T)
        counter = ex.options(scheduling_strategy=PlacementGroupStrategy(pg, 1)).actor(Counter)
        assert counter.where.remote().result(timeout=T) == big.node_id
        task = ex.options(scheduling_strategy=PlacementGroupStrategy(pg, 0)).submit(node_of)
        assert task.result(timeout=T) == big.node_id
        with pytest.raises(ValueError, match="bundle_index"):
            ex.options(scheduling_strategy=PlacementGroupStrategy(pg, 5)).submit(node_of)
        ex.kill(counter)
        ex.remove_placement_group(pg)


def test_an_actor_on_a_killed_node_restarts_elsewhere_when_allowed(cluster):
    a = cluster.add_node(num_cpus=1, resources={"special": 1, "mark": 1})
    b = cluster.add_node(num_cpus=1, resources={"special": 1})
    with cluster.connect() as ex:
        keeper = ex.options(resources={"special": 1}, max_restarts=1,
                            scheduling_strategy=NodeAffinity(a.node_id, soft=True)
                            ).actor(Counter, 100)
        doomed = ex.options(num_cpus=0, resources={"mark": 1}, max_restarts=0).actor(Counter)
        assert keeper.where.remote().result(timeout=T) == a.node_id
        assert doomed.where.remote().result(timeout=T) == a.node_id
        assert keeper.add.remote(5).result(timeout=T) == 105
        cluster.remove_node(a)
        assert poll_until(lambda: not _alive(ex, a.node_id), timeout=10)
        assert poll_until(lambda: _call_ok(keeper), timeout=20)
        assert keeper.where.remote().result(timeout=T) == b.node_id
        assert keeper.add.remote(1).result(timeout=T) == 101  # __init__ ran again
        with pytest.raises(fedexec.exceptions.ActorDiedError):
            doomed.add.remote().result(timeout=T)


def _call_ok(handle):
    try:
        handle.where.remote().result(timeout=5)
        return True
    except (fedexec.exceptions.ActorDiedError, fedexec.exceptions.GetTimeoutError):
        return False


def test_a_driver_without_the_nodes_store_gets_bytes_not_paths(cluster, monkeypatch):
    # As a driver on another machine: the node's store files cannot be opened here.
    from fedexec.backends.native import _values

    def no_store(path):
        raise FileNotFoundError(path)

    monkeypatch.setattr(_values, "read_object", no_store)
    cluster.add_node(num_cpus=1, resources={"far": 1})
    with cluster.connect(remote_store=True) as ex:
        assert ex._backend.remote_store
        big = ex.put(np.arange(1_000_000, dtype=np.float64))
        value, _ = ex.options(resources={"far": 1}).submit(total, big).result(timeout=T)
        assert value == float(np.arange(1_000_000, dtype=np.float64).sum())
        made = ex.options(resources={"far": 1}).submit(make_array, 500_000, 2.0)
        assert float(made.result(timeout=T).sum()) == 1_000_000.0  # pulled, then sent inline
        assert float(ex.submit(total, made).result(timeout=T)[0]) == 1_000_000.0
        assert float(ex.get(ex.submit(make_array, 300_000)).sum()) == 300_000.0


def test_the_testing_cluster_follows_the_documented_api():
    from fedexec.testing import Node

    with Cluster() as c:  # head_num_cpus=0: tasks run on added nodes
        node = c.add_node(num_cpus=1, resources={"x": 1})
        assert isinstance(node, Node) and node.node_id
        with fedexec.Executor(address=c.address) as ex:  # the token is found for us
            assert ex.cluster_resources()["CPU"] == 1
            assert ex.submit(node_of).result(timeout=T) == node.node_id
        c.remove_node(node, graceful=True)
        assert not node.alive()


class Where:
    def node(self):
        return fedexec.get_runtime_context().node_id


@pytest.mark.timeout(120)
def test_actors_created_in_a_burst_each_get_a_node_with_room():
    """Three 1-CPU actors from a 0-CPU head onto three 1-CPU nodes, created at once:
    the head counts each one against its node until that node reports again, so
    they do not all pick the node that had room (the later ones used to wait there
    forever beside a free node)."""
    with Cluster(head_num_cpus=0) as c:
        for _ in range(3):
            c.add_node(num_cpus=1)
        with fedexec.Executor(address=c.address) as ex:
            actors = [ex.options(num_cpus=1).actor(Where) for _ in range(3)]
            nodes = ex.get([a.node.remote() for a in actors], timeout=30)
            assert len(set(nodes)) == 3, nodes


def call_every_other_node(others, at):
    """At wall-clock time ``at``, run a task on each node of ``others`` (hard
    affinity): every node dials the others at the same instant."""
    while time.time() < at:
        time.sleep(0.001)
    leaf = fedexec.remote(node_of)
    refs = [leaf.options(scheduling_strategy=NodeAffinity(n)).remote() for n in others]
    return fedexec.get(refs, timeout=30)


@pytest.mark.timeout(120)
def test_nodes_that_dial_each_other_at_once_both_get_through():
    """Four nodes open links to each other at the same instant. A node used to dial
    from its loop with a blocking handshake: two nodes dialing each other waited on
    each other for the handshake's timeout, again and again, and missed heartbeats
    meanwhile until the head declared one dead. Dialing is non-blocking now."""
    with Cluster(head_num_cpus=0) as c:
        for _ in range(4):
            c.add_node(num_cpus=1)
        with fedexec.Executor(address=c.address) as ex:
            nodes = sorted(n["node_id"] for n in ex.nodes() if not n["is_head"])
            at = time.time() + 1.5
            refs = [ex.options(scheduling_strategy=NodeAffinity(n)).submit(
                call_every_other_node, [m for m in nodes if m != n], at) for n in nodes]
            ran = ex.get(refs, timeout=60)
            assert ran == [[m for m in nodes if m != n] for n in nodes]
            assert {n["node_id"] for n in ex.nodes() if n["alive"]} >= set(nodes)


# ------------------------------------------- lineage across a remote driver
@pytest.fixture
def headless():
    """A head without CPUs and a node with ``safe``; drivers connect over TCP."""
    with Cluster(head_num_cpus=0) as c:
        c.add_node(num_cpus=1, resources={"safe": 1})
        yield c


def _lose_node(cluster, ex, node, noticed):
    """SIGKILL ``node`` after a replacement with ``doomed`` joined; with ``noticed``,
    return once the driver's node lists it dead, else at once."""
    cluster.add_node(num_cpus=1, resources={"doomed": 1})
    cluster.remove_node(node)
    if noticed:
        assert poll_until(lambda: not _alive(ex, node.node_id), timeout=15)


@pytest.mark.parametrize("noticed", [True, False], ids=["after-noticed", "before-noticed"])
def test_lineage_rebuilds_an_argument_lost_with_its_node(headless, noticed):
    with fedexec.Executor(address=headless.address) as ex:
        doomed = headless.add_node(num_cpus=1, resources={"doomed": 1})
        produce = ex.options(resources={"doomed": 1}, max_retries=3).submit(
            make_array, 2_000_000)
        ex.wait([produce], timeout=T)
        _lose_node(headless, ex, doomed, noticed)
        value, node = ex.options(resources={"safe": 1}).submit(total, produce).result(timeout=T)
        assert value == 2_000_000.0 and node != doomed.node_id


@pytest.mark.parametrize("noticed", [True, False], ids=["after-noticed", "before-noticed"])
def test_lineage_rebuilds_a_lost_result_for_the_drivers_get(headless, noticed):
    with fedexec.Executor(address=headless.address) as ex:
        doomed = headless.add_node(num_cpus=1, resources={"doomed": 1})
        produce = ex.options(resources={"doomed": 1}, max_retries=3).submit(
            make_array, 2_000_000)
        ex.wait([produce], timeout=T)
        _lose_node(headless, ex, doomed, noticed)
        assert float(ex.get(produce, timeout=T).sum()) == 2_000_000.0


def double(arr):
    return arr * 2


@pytest.mark.parametrize("noticed", [True, False], ids=["after-noticed", "before-noticed"])
def test_lineage_rebuilds_a_chain_of_two_lost_objects(headless, noticed):
    with fedexec.Executor(address=headless.address) as ex:
        doomed = headless.add_node(num_cpus=1, resources={"doomed": 1})
        on_doomed = ex.options(resources={"doomed": 1}, max_retries=3)
        first = on_doomed.submit(make_array, 2_000_000)
        second = on_doomed.submit(double, first)
        ex.wait([second], timeout=T)
        _lose_node(headless, ex, doomed, noticed)
        value, _ = ex.options(resources={"safe": 1}).submit(total, second).result(timeout=T)
        assert value == 4_000_000.0
        assert float(ex.get(first, timeout=T).sum()) == 2_000_000.0


# --------------------------------------------------- cluster-wide status / list
def _cli(*args, token):
    env = {**os.environ, "FEDEXEC_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "fedexec", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_status_and_list_report_every_nodes_tasks_objects_and_store(cluster):
    from fedexec.backends.native import state

    far = cluster.add_node(num_cpus=1, resources={"far": 1})
    head = cluster.head.node_id
    with cluster.connect() as ex:
        here = ex.put(np.ones(1_000_000))  # an 8 MB put: in the head's store
        there = ex.options(resources={"far": 1}).submit(make_array, 1_000_000)
        ex.wait([there], timeout=T)  # made on the far node, and left there
        on = {n: ex.options(scheduling_strategy=NodeAffinity(n), num_cpus=0.5)
              for n in (head, far.node_id)}
        running = {n: o.submit(sleep_on_node, 30) for n, o in on.items()}
        assert poll_until(lambda: all(r.running() for r in running.values()))

        objects = state.list_state("objects", cluster.address)
        where = {(o["object_id"], o["node_id"]): o["where"] for o in objects}
        assert where[(here.id, head)] == "shared memory"
        assert where[(there.id, far.node_id)] == "shared memory"
        assert where[(there.id, head)] == f"node {far.node_id}"  # the head's proxy
        assert objects.missing == {}

        tasks = state.list_state("tasks", cluster.address)
        task_node = {t["task_id"]: t["node_id"] for t in tasks}
        for node_id, ref in running.items():
            task_id = ref.id[:-2]  # a task's return id is its id and an index
            assert task_node[task_id] == node_id
            assert [t["state"] for t in tasks if t["task_id"] == task_id] == ["ASSIGNED"]

        status = state.cluster_status(cluster.address)
        nodes = {n["node_id"]: n for n in status["nodes"]}
        assert {n["state"] for n in nodes.values()} == {"alive"} and status["missing"] == {}
        assert nodes[head]["store"]["used_bytes"] >= 8_000_000
        assert nodes[far.node_id]["store"]["used_bytes"] >= 8_000_000
        assert status["store"]["used_bytes"] == sum(
            n["store"]["used_bytes"] for n in nodes.values())
        assert nodes[head]["tasks"] >= 1 and nodes[far.node_id]["tasks"] >= 1
        assert status["tasks"] == nodes[head]["tasks"] + nodes[far.node_id]["tasks"]

        out = _cli("list", "objects", "--address", cluster.address, token=cluster.token)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("NODE_ID") and far.node_id in out.stdout
        assert "7.6 MiB" in out.stdout  # 8_000_000 bytes and a header, for people
        out = _cli("status", "--address", cluster.address, token=cluster.token)
        assert out.returncode == 0, out.stderr
        assert far.node_id in out.stdout and head in out.stdout and "MiB" in out.stdout
        for ref in running.values():
            ex.cancel(ref, force=True)


def test_status_and_list_report_a_dead_or_silent_node_as_such(cluster):
    from fedexec.backends.native import state

    victim = cluster.add_node(num_cpus=1, resources={"far": 1})
    with cluster.connect() as ex:
        kept = ex.options(resources={"far": 1}).submit(make_array, 1_000_000)
        ex.wait([kept], timeout=T)
        victim.kill()  # not yet declared dead: it just does not answer
        rows = state.list_state("objects", cluster.address, timeout=1.0)
        assert victim.node_id in rows.missing
        assert all(r["node_id"] == cluster.head.node_id for r in rows)
        cluster.remove_node(victim)
        assert poll_until(lambda: not _alive(ex, victim.node_id), timeout=15)
        status = state.cluster_status(cluster.address)
        entry = next(n for n in status["nodes"] if n["node_id"] == victim.node_id)
        assert entry["state"] == "dead" and "dead" in status["missing"][victim.node_id]
        out = _cli("list", "tasks", "--address", cluster.address, token=cluster.token)
        assert out.returncode == 0 and f"node {victim.node_id} is not listed" in out.stderr
