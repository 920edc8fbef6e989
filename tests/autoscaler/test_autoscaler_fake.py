"""The ``fake`` provider against a real head: simulated nodes join it as nodes with
resources, the monitor scales them up for demand and down once idle, and work the
head sends to one fails with a clear error instead of hanging."""

from __future__ import annotations

import threading

import pytest

from _backend_support import poll_until
from fedexec.autoscaler import ClusterConfig, NodeTypeConfig, request_resources
from fedexec.autoscaler.fake_provider import FakeProvider
from fedexec.autoscaler.monitor import Monitor
from fedexec.autoscaler.providers import TAG_NODE_ID, make_provider
from fedexec.exceptions import FedexecError
from fedexec.testing import Cluster


def config(idle_seconds: float, max_workers: int = 20) -> ClusterConfig:
    types = {"head": NodeTypeConfig("head", {"CPU": 1}, 0, 0),
             "sim4": NodeTypeConfig("sim4", {"CPU": 4, "sim": 1}, 0, max_workers)}
    return ClusterConfig(node_types=types, head_node_type="head", max_workers=max_workers,
                         idle_timeout_minutes=idle_seconds / 60, upscaling_speed=1.0,
                         provider={"type": "fake"})


def alive_ids(ex) -> set[str]:
    return {n["node_id"] for n in ex.nodes() if n["alive"]}


@pytest.mark.timeout(120)
def test_fake_nodes_join_the_head_with_their_resources(tmp_path):
    with Cluster(head_num_cpus=1, heartbeat_interval=0.5, heartbeat_timeout=5.0) as cluster, \
            cluster.connect() as ex:
        provider = make_provider({"type": "fake"}, "c", cluster.address, cluster.token)
        assert isinstance(provider, FakeProvider)
        try:
            ids = [provider.create_node("sim4", {"CPU": 4, "sim": 1}, {}, {"k": "v"})
                   for _ in range(3)]
            assert provider.wait_joined(60)
            assert provider.non_terminated_nodes({"k": "v"}) == sorted(ids)
            assert all(provider.node_tags(i)[TAG_NODE_ID] == i for i in ids)
            assert poll_until(lambda: set(ids) <= alive_ids(ex), 30)
            total = ex.cluster_resources()
            assert total["CPU"] == 13 and total["sim"] == 3
            # status questions are answered for every node (none unreachable)
            from fedexec.backends.native import state

            status = state.cluster_status(cluster.address, cluster.token)
            assert not status["missing"]
            # and so is a monitor's round (every node takes it)
            report = {"cluster_name": "sim", "shapes": [], "ttl": 60.0, "decisions": []}
            assert state.report_autoscaler(report, cluster.address, cluster.token) == {}
            # work the head sends there fails at once, naming the simulated node
            ref = ex.options(resources={"sim": 1}).submit(pow, 2, 3)
            with pytest.raises(FedexecError, match="simulated node"):
                ref.result(timeout=60)
            provider.busy(ids[0], {"CPU": 4})
            assert poll_until(lambda: ex.available_resources().get("CPU", 0) <= 9.0, 30)
            provider.terminate_node(ids[0])
            assert poll_until(lambda: ids[0] not in alive_ids(ex), 60), \
                "the head did not see a terminated simulated node go"
        finally:
            provider.close()


@pytest.mark.timeout(180)
def test_monitor_scales_a_fake_cluster_up_for_demand_and_down_when_idle(tmp_path):
    with Cluster(head_num_cpus=1, heartbeat_interval=0.5, heartbeat_timeout=5.0) as cluster, \
            cluster.connect() as ex:
        provider = FakeProvider("c", cluster.address, cluster.token)
        log = tmp_path / "monitor.log"
        monitor = Monitor(config(2.0), provider, cluster.address, cluster.token,
                          log_path=str(log))
        stop = threading.Event()
        thread = threading.Thread(target=monitor.run, args=(0.3, stop))
        thread.start()
        try:
            request_resources(bundles=[{"CPU": 4, "sim": 1}] * 12, executor=ex)
            assert poll_until(lambda: len(alive_ids(ex)) == 13, 90), \
                f"12 fake nodes did not join: {log.read_text()}"
            text = log.read_text()
            assert "launching 5 x sim4 for 5 requested {CPU: 4, sim: 1} bundles" in text
            assert ex.cluster_resources()["sim"] == 12
            request_resources(executor=ex)  # withdrawn: the nodes go idle
            assert poll_until(lambda: not provider.non_terminated_nodes(), 90), \
                f"idle fake nodes were not terminated: {log.read_text()}"
            assert "idle_timeout_minutes is 0.0333333" in log.read_text()
            assert poll_until(lambda: alive_ids(ex) == {cluster.head.node_id}, 30)
        finally:
            stop.set()
            thread.join(30)
            provider.close()
