"""The ``local`` provider end to end: a monitor loop scaling a real cluster with
``fedexec start --address`` node processes (queued work -> nodes launched -> work
done -> idle nodes removed; a SIGKILLed node replaced while demand remains)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import fedexec
from _backend_support import poll_until
from fedexec.autoscaler import ClusterConfig, NodeTypeConfig, request_resources
from fedexec.autoscaler.monitor import Monitor
from fedexec.autoscaler.providers import TAG_NODE_ID, LocalProvider
from fedexec.testing import Cluster


def where(seconds: float) -> str:
    time.sleep(seconds)
    return fedexec.get_runtime_context().node_id


def config(idle_seconds: float) -> ClusterConfig:
    types = {"head": NodeTypeConfig("head", {"CPU": 1}, 0, 0),
             "cpu2": NodeTypeConfig("cpu2", {"CPU": 2}, 0, 2)}
    return ClusterConfig(node_types=types, head_node_type="head", max_workers=2,
                         idle_timeout_minutes=idle_seconds / 60, upscaling_speed=1.0)


def wait_for(predicate, timeout: float, what: str) -> None:
    assert poll_until(predicate, timeout, interval=0.2), \
        f"timed out after {timeout} s waiting for {what}"


class Running:
    """A monitor loop in a thread, with every node it started stopped at exit
    (``cfg``: the cluster config, default ``config(idle_seconds)``)."""

    def __init__(self, cluster: Cluster, tmp_path, idle_seconds: float,
                 cfg: ClusterConfig | None = None):
        self.provider = LocalProvider("e2e", cluster.address, cluster.token,
                                      state_dir=str(tmp_path / "state"))
        self.log = str(tmp_path / "monitor.log")
        self.monitor = Monitor(cfg or config(idle_seconds), self.provider, cluster.address,
                               cluster.token, log_path=self.log)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.monitor.run, args=(0.5, self.stop))

    def log_text(self) -> str:
        return open(self.log).read() if os.path.exists(self.log) else ""

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        self.provider.wait_launches(60)
        self.monitor.terminate_all()


@pytest.mark.timeout(240)
def test_local_nodes_launch_for_queued_work_and_go_when_idle(tmp_path):
    with Cluster(head_num_cpus=1) as cluster, Running(cluster, tmp_path, 3.0) as run, \
            cluster.connect() as ex:
        refs = [ex.submit(where, 1.5) for _ in range(8)]  # 8 CPU-seconds x 1.5 > 1 CPU
        ran_on = {r.result(timeout=180) for r in refs}
        assert "launching 2 x cpu2 for" in run.log_text()
        assert ran_on - {cluster.head.node_id}, "no task ran on a launched node"
        wait_for(lambda: not run.provider.non_terminated_nodes(), 90,
                 "the idle nodes to be terminated")
        assert "terminating node" in run.log_text()
        assert "idle_timeout_minutes is 0.05" in run.log_text()
        wait_for(lambda: {n["node_id"] for n in ex.nodes() if n["alive"]}
                 == {cluster.head.node_id}, 30, "the head to see the nodes gone")
        assert ex.submit(where, 0).result(timeout=60) == cluster.head.node_id


@pytest.mark.timeout(240)
def test_a_killed_node_is_replaced_while_demand_remains(tmp_path):
    with Cluster(head_num_cpus=1) as cluster, Running(cluster, tmp_path, 60.0) as run, \
            cluster.connect() as ex:
        refs = [ex.submit(where, 4.0) for _ in range(10)]
        wait_for(lambda: any(run.provider.node_tags(p).get(TAG_NODE_ID)
                             for p in run.provider.non_terminated_nodes()), 120,
                 "a node to start")
        victim = next(p for p in run.provider.non_terminated_nodes()
                      if run.provider.node_tags(p).get(TAG_NODE_ID))
        pid = run.provider._load()[victim]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: victim not in run.provider.non_terminated_nodes(), 60,
                 "the killed node to be forgotten")
        assert "its process is gone" in run.log_text()
        for r in refs:
            r.result(timeout=180)
        assert run.log_text().count("launching") >= 2  # the first nodes, then a new one


@pytest.mark.timeout(240)
def test_request_resources_scales_ahead_of_demand_until_withdrawn(tmp_path):
    with Cluster(head_num_cpus=1) as cluster, Running(cluster, tmp_path, 2.0) as run, \
            cluster.connect() as ex:
        request_resources(num_cpus=5, executor=ex)  # the head's 1 CPU + 2 x cpu2
        wait_for(lambda: sum(n["alive"] for n in ex.nodes()) == 3, 120, "two nodes")
        assert "launching 2 x cpu2 for 4 requested {CPU: 1} bundles" in run.log_text()
        time.sleep(4)  # idle past the timeout, but requested: kept
        assert len(run.provider.non_terminated_nodes()) == 2
        assert "request_resources needs it" in run.log_text()
        request_resources(executor=ex)
        wait_for(lambda: not run.provider.non_terminated_nodes(), 90,
                 "the nodes to go once the request is withdrawn")


@pytest.mark.timeout(240)
def test_a_pending_placement_group_gets_its_nodes(tmp_path):
    with Cluster(head_num_cpus=1) as cluster, Running(cluster, tmp_path, 60.0) as run, \
            cluster.connect() as ex:
        pg = ex.placement_group([{"CPU": 2}, {"CPU": 2}], strategy="STRICT_SPREAD")
        assert pg.ready(timeout=180)
        assert "launching 2 x cpu2 for placement group" in run.log_text()
        assert "(STRICT_SPREAD, 2 bundles)" in run.log_text()
        ex.remove_placement_group(pg)


@pytest.mark.timeout(240)
def test_a_task_bigger_than_every_node_waits_for_a_launched_node(tmp_path):
    """A 2-CPU task on a 1-CPU head is queued (not refused) while an autoscaler with a
    2-CPU node type runs: the node is launched, the task runs there, the node goes
    once idle. Without an autoscaler, or with no node type that fits, it is refused."""
    with Cluster(head_num_cpus=1) as cluster, cluster.connect() as ex:
        with pytest.raises(ValueError, match="no autoscaler runs"):
            ex.options(num_cpus=2).submit(where, 0)
        with Running(cluster, tmp_path, 3.0) as run:
            wait_for(lambda: run.monitor.last_plan is not None, 60,
                     "the monitor's first round")
            ref = ex.options(num_cpus=2).submit(where, 0.5)
            node = ref.result(timeout=180)
            assert node != cluster.head.node_id
            assert "launching 1 x cpu2 for 1 queued {CPU: 2} task" in run.log_text()
            with pytest.raises(ValueError, match="no running autoscaler may launch a node"):
                ex.options(num_cpus=8).submit(where, 0)
            wait_for(lambda: not run.provider.non_terminated_nodes(), 90,
                     "the idle node to be terminated")
            assert f"terminating node {node} (cpu2)" in run.log_text()


@pytest.mark.timeout(240)
def test_failing_launches_back_off_exponentially_with_the_reason_shown(tmp_path):
    """Nodes whose start fails (here: ``fedexec start`` given a head address where
    nothing listens) are retried after 1, then 2 s (the monitor's clock, stepped by
    hand); the reason is logged and in ``fedexec status``'s autoscaler lines."""
    from fedexec.autoscaler._cli import _state_dir, status_lines

    now = [0.0]
    with Cluster(head_num_cpus=1) as cluster, cluster.connect() as ex:
        log = os.path.join(_state_dir("backoff"), "monitor.log")
        provider = LocalProvider("backoff", "127.0.0.1:1", cluster.token,
                                 state_dir=str(tmp_path / "state"))
        monitor = Monitor(config(60.0), provider, cluster.address, cluster.token,
                          log_path=log, clock=lambda: now[0], backoff_base=1.0)
        try:
            request_resources(bundles=[{"CPU": 2}], executor=ex)

            def launched_at(t: float) -> bool:
                now[0] = t
                monitor.step()
                provider.wait_launches(60)  # the start fails: tagged failed
                return bool(provider.non_terminated_nodes())

            assert launched_at(0.0)
            assert not launched_at(0.0)  # failure 1 seen: wait 1 s
            assert not launched_at(0.9)
            assert launched_at(1.0)
            assert not launched_at(1.0)  # failure 2: wait 2 s
            assert not launched_at(2.9)
            lines = "\n".join(status_lines())
            assert "node type cpu2 is backing off after 2 failed launches in a row " \
                "(next try in 0 s): " in lines, lines
            assert launched_at(3.0)
            text = open(log).read()
            assert "launching a cpu2 node failed (1 failed launch in a row): " in text
            assert "; next try in 1 s" in text and "; next try in 2 s" in text
            why = text.split("(1 failed launch in a row): ")[1].split("; next try")[0]
            assert "127.0.0.1:1" in why, why  # the start command's own error
            assert "cpu2 is backing off after" in text  # the waiting bundle says why
        finally:
            monitor.close()
            provider.wait_launches(60)
            monitor.terminate_all()
