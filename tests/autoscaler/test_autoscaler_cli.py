"""``fedexec up/down/monitor`` with the local provider, as a user runs them: a real
head, a detached monitor process, worker nodes launched for queued work."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("yaml")
pytest.importorskip("jsonschema")

import fedexec

CONFIG = """
cluster_name: clitest
max_workers: 2
idle_timeout_minutes: 0.05
provider: {type: local, head_port: 0, job_port: 0}
head_node_type: head
available_node_types:
  head: {resources: {CPU: 1}}
  cpu2: {resources: {CPU: 2}, max_workers: 2}
"""


def where(seconds: float) -> str:
    time.sleep(seconds)
    return fedexec.get_runtime_context().node_id


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("FEDEXEC_HOME", str(path))
    monkeypatch.delenv("FEDEXEC_TOKEN", raising=False)
    return path


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedexec", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())


def node_files(home) -> list[str]:
    nodes = home / "nodes"
    return sorted(p.name for p in nodes.glob("*.json")) if nodes.exists() else []


@pytest.mark.timeout(300)
def test_up_scales_with_work_and_down_removes_everything(home, tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(CONFIG)
    assert "cancelled" in cli("up", str(config)).stderr  # no --yes, no answer
    try:
        out = cli("up", str(config), "--yes", "--interval", "0.5")
        assert out.returncode == 0, out.stderr
        assert "head started at" in out.stdout
        with fedexec.Executor(address="auto") as ex:
            head_id = {n["node_id"] for n in ex.nodes()}
            ran_on = {r.result(timeout=180) for r in [ex.submit(where, 1.5)
                                                      for _ in range(8)]}
        assert ran_on - head_id, "no task ran on a launched node"
        log = cli("monitor", str(config), "--no-follow").stdout
        assert "launching 2 x cpu2 for" in log
        status = cli("status").stdout
        assert "autoscaler 'clitest' (last round" in status, status
        again = cli("up", str(config), "--yes", "--interval", "0.5")
        assert again.returncode == 0, again.stderr
        assert "using the head already running" in again.stdout
        assert "replaced the running autoscaler monitor" in again.stdout
        deadline = time.monotonic() + 90
        while node_files(home) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert node_files(home) == [], "idle nodes were not terminated"
        assert "terminating node" in cli("monitor", str(config), "--no-follow").stdout
    finally:
        down = cli("down", str(config), "--yes")
    assert down.returncode == 0, down.stderr
    assert "head stopped" in down.stdout and "monitor stopped" in down.stdout
    assert not (home / "cluster.json").exists()
    assert node_files(home) == []


def test_up_reports_a_bad_key_and_starts_nothing(home, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(CONFIG.replace("max_workers: 2\n", "max_worker: 2\n", 1))
    out = cli("up", str(config), "--yes")
    assert out.returncode == 1
    assert "unknown key 'max_worker' (did you mean 'max_workers'?)" in out.stderr
    assert not (home / "cluster.json").exists()



@pytest.mark.timeout(180)
def test_up_with_the_fake_provider_joins_simulated_nodes_to_the_head(home, tmp_path):
    config = tmp_path / "fake.yaml"
    config.write_text(CONFIG.replace("type: local", "type: fake").replace(
        "cpu2: {resources: {CPU: 2}, max_workers: 2}",
        "sim: {resources: {CPU: 2, sim: 1}, min_workers: 2, max_workers: 2}"))
    try:
        out = cli("up", str(config), "--yes", "--interval", "0.5")
        assert out.returncode == 0, out.stderr
        with fedexec.Executor(address="auto") as ex:
            deadline = time.monotonic() + 90
            while sum(n["alive"] for n in ex.nodes()) < 3 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert ex.cluster_resources().get("sim") == 2, ex.nodes()
        assert "launching 2 x sim: min_workers is 2" in \
            cli("monitor", str(config), "--no-follow").stdout
    finally:
        down = cli("down", str(config), "--yes")
    assert down.returncode == 0, down.stderr
    assert "monitor stopped" in down.stdout and "head stopped" in down.stdout


@pytest.mark.timeout(180)
def test_monitor_shows_the_rounds_a_monitor_elsewhere_reported_to_the_head(home, tmp_path):
    """No monitor log on this machine (its monitor runs elsewhere, e.g. on the head
    with ``provider.monitor_on_head``): ``fedexec monitor --no-follow`` prints the
    decisions that monitor reported to the head, with their reasons."""
    from fedexec.autoscaler import load_config
    from fedexec.autoscaler.monitor import Monitor
    from fedexec.autoscaler.providers import LocalProvider
    from fedexec.backends.native import cluster

    config = tmp_path / "cluster.yaml"
    config.write_text(CONFIG.replace("cpu2: {resources: {CPU: 2}, max_workers: 2}",
                                     "cpu2: {resources: {CPU: 2}, min_workers: 1, "
                                     "max_workers: 2}"))
    started = cli("start", "--head", "--port", "0", "--job-port", "0", "--num-cpus", "1",
                  "--no-dashboard")
    assert started.returncode == 0, started.stderr
    try:
        head = cluster.read_local_cluster()
        assert head is not None
        # Its nodes never join (a head address where nothing listens).
        provider = LocalProvider("clitest", "127.0.0.1:1", None,
                                 state_dir=str(tmp_path / "state"))
        monitor = Monitor(load_config(str(config)), provider, head["address"], None,
                          log_path=None, backoff_base=600.0)
        try:
            monitor.step()
        finally:
            monitor.close()
            provider.wait_launches(60)
            monitor.terminate_all()
        out = cli("monitor", str(config), "--no-follow")
        assert out.returncode == 0, out.stderr
        assert "autoscaler 'clitest' (last round" in out.stdout, out.stdout
        assert "launching 1 x cpu2: min_workers is 1" in out.stdout, out.stdout
    finally:
        cli("stop")
