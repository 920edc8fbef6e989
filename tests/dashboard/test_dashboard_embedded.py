"""An embedded runtime serves a dashboard only when asked (``dashboard=True``)."""

from __future__ import annotations

import time

import psutil
import pytest
import requests

import fedexec

pytestmark = pytest.mark.timeout(120)


def _double(x: int) -> int:
    return 2 * x


def test_embedded_dashboard_only_when_asked_and_gone_with_the_executor(capfd):
    with fedexec.Executor(num_cpus=1) as ex:
        assert "dashboard_url" not in ex._backend._runtime.info
    with fedexec.Executor(num_cpus=1, dashboard=True, dashboard_port=0) as ex:
        info = ex._backend._runtime.info
        url, pid, token = info["dashboard_url"], info["dashboard_pid"], info["token"].hex()
        assert f"dashboard at {url}" in capfd.readouterr().err
        assert ex.submit(_double, 21).result(60) == 42
        auth = {"Authorization": f"Bearer {token}"}
        nodes = requests.get(f"{url}/api/nodes", headers=auth, timeout=30).json()
        assert nodes["total"] == 1 and nodes["items"][0]["node_id"] == ex._backend.node_id
        assert requests.get(f"{url}/api/nodes", timeout=30).status_code == 401
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the dashboard outlived its runtime"
        time.sleep(0.1)


def test_the_dashboard_exits_when_its_head_is_killed():
    import os
    import signal

    from fedexec import dashboard
    from fedexec.testing import Cluster

    with Cluster(head_num_cpus=0) as cluster:
        info = dashboard.launch(head_address=cluster.address, token=cluster.token, port=0,
                                head_pid=cluster.head.pid)
        proc = psutil.Process(info["pid"])
        auth = {"Authorization": f"Bearer {cluster.token}"}
        assert requests.get(info["url"] + "/api/nodes", headers=auth, timeout=30).ok
        os.kill(cluster.head.pid, signal.SIGKILL)
        try:
            proc.wait(30)
        except psutil.TimeoutExpired:
            proc.kill()
            pytest.fail("the dashboard outlived its head by 30 s")
