"""``fedexec status``: the pending demand by resource shape, and the autoscaler's
decisions wherever its monitor runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fedexec.autoscaler import ClusterConfig, NodeTypeConfig
from fedexec.autoscaler.monitor import Monitor
from fedexec.autoscaler.providers import LocalProvider
from fedexec.testing import Cluster


def test_status_lists_the_pending_demand_by_shape():
    from fedexec.cli import format_status

    node = {"node_id": "n1", "address": "a", "state": "alive", "tasks": 9, "queued_tasks": 8,
            "actors": 0, "objects": 0, "workers": 1,
            "store": {"used_bytes": 0, "capacity": 1}, "is_head": True,
            "queued_shapes": [[{"CPU": 2.0}, 7], [{"CPU": 1.0, "GPU": 1.0}, 1]]}
    status = {"nodes": [node, {**node, "node_id": "n2", "is_head": False,
                               "queued_shapes": [[{"CPU": 2.0}, 3]]}],
              "total": {"CPU": 1.0}, "available": {"CPU": 0.0}, "tasks": 9,
              "queued_tasks": 8, "actors": 0, "workers": 1, "objects": 0,
              "store": {"used_bytes": 0, "capacity": 1, "num_objects": 0, "num_spilled": 0,
                        "spilled_bytes": 0}}
    assert "pending demand: 1 x {CPU: 1, GPU: 1}, 10 x {CPU: 2}" in format_status(status)


@pytest.mark.timeout(120)
def test_status_shows_the_decisions_of_a_monitor_running_elsewhere(tmp_path):
    """A monitor that writes nothing on this machine (as one on the head, with
    ``provider.monitor_on_head``, does not): ``fedexec status`` here still shows its
    decisions with their reasons, as reported to the head; ``--format json`` too."""
    types = {"head": NodeTypeConfig("head", {"CPU": 1}, 0, 0),
             "custom": NodeTypeConfig("custom", {"CPU": 1, "custom": 1}, 1, 1)}
    cfg = ClusterConfig(node_types=types, head_node_type="head", max_workers=1,
                        idle_timeout_minutes=5.0, upscaling_speed=1.0,
                        cluster_name="elsewhere")
    with Cluster(head_num_cpus=1) as cluster:
        # Its nodes never join (a head address where nothing listens).
        provider = LocalProvider("elsewhere", "127.0.0.1:1", cluster.token,
                                 state_dir=str(tmp_path / "state"))
        monitor = Monitor(cfg, provider, cluster.address, cluster.token, log_path=None,
                          backoff_base=600.0)
        try:
            monitor.step()
            env = {**os.environ, "FEDEXEC_TOKEN": cluster.token,
                   "FEDEXEC_HOME": str(tmp_path / "home")}  # no monitor's files here
            out = subprocess.run([sys.executable, "-m", "fedexec", "status", "--address",
                                  cluster.address], capture_output=True, text=True,
                                 timeout=60, env=env)
            assert out.returncode == 0, out.stderr
            assert "autoscaler 'elsewhere' (last round" in out.stdout, out.stdout
            assert "launching 1 x custom: min_workers is 1" in out.stdout, out.stdout
            raw = subprocess.run([sys.executable, "-m", "fedexec", "status", "--address",
                                  cluster.address, "--format", "json"],
                                 capture_output=True, text=True, timeout=60, env=env)
            assert any("launching 1 x custom" in line
                       for line in json.loads(raw.stdout)["autoscaler"]), raw.stdout
        finally:
            monitor.close()
            provider.wait_launches(60)
            monitor.terminate_all()
