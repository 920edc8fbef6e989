"""The ssh provider and the launcher commands against a real sshd on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml
from _sshd import Sshd, start_sshd

import fedexec
from _backend_support import exited, poll_until
from fedexec.autoscaler import ClusterConfig, NodeTypeConfig
from fedexec.autoscaler.providers import TAG_NODE_ID, TAG_STATUS
from fedexec.autoscaler.ssh import (
    HostUnreachableError,
    RemoteCommandError,
    SSHAuthError,
    runner_for,
)
from fedexec.autoscaler.ssh_provider import SSHProvider
from fedexec.testing import Cluster


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(str(tmp_path_factory.mktemp("sshd")))
    yield server
    server.stop()


def config(sshd: Sshd, tmp_path, **extra) -> ClusterConfig:
    """An ssh cluster config; the "remote" node keeps its files in its own home (so
    ``fedexec stop`` there touches nothing of the test's head)."""
    remote_home = tmp_path / "remote-home"
    remote_home.mkdir(exist_ok=True)
    fedexec_cmd = f"env FEDEXEC_HOME={remote_home} {sys.executable} -m fedexec"
    types = {"head": NodeTypeConfig("head", {"CPU": 1}, 0, 0),
             "ssh1": NodeTypeConfig("ssh1", {"CPU": 1, "sshnode": 1}, 0, 1)}
    provider = {"type": "ssh", "head_ip": "127.0.0.1", "worker_ips": ["127.0.0.1"],
                "ssh_port": sshd.port, "fedexec": fedexec_cmd, "connect_timeout": 5}
    provider.update(extra.pop("provider", {}))
    return ClusterConfig(node_types=types, head_node_type="head", max_workers=1,
                         provider=provider,
                         auth={"ssh_user": sshd.user, "ssh_private_key": sshd.key}, **extra)


def read_mounted(path: str) -> tuple[str, str]:
    with open(path) as f:
        return fedexec.get_runtime_context().node_id, f.read()


def wait_for(predicate, timeout: float, what: str) -> None:
    assert poll_until(predicate, timeout, interval=0.2), \
        f"timed out after {timeout} s waiting for {what}"


@pytest.mark.timeout(240)
def test_an_ssh_node_joins_runs_a_task_and_terminate_removes_it(sshd, tmp_path):
    local = tmp_path / "data"
    local.mkdir()
    (local / "hello.txt").write_text("synced by rsync")
    mounted = tmp_path / "on-node" / "data"
    marker = tmp_path / "setup-ran"
    cfg = config(sshd, tmp_path, file_mounts={str(mounted): str(local)},
                 setup_commands=(f"echo ran > {marker}",))
    with Cluster(head_num_cpus=1) as cluster, cluster.connect() as ex:
        provider = SSHProvider("sshtest", cluster.address, cluster.token,
                               state_dir=str(tmp_path / "state"), config=cfg)
        pid = provider.create_node("ssh1", {"CPU": 1, "sshnode": 1}, {}, {})
        provider.wait_launches(180)
        tags = provider.node_tags(pid)
        assert tags[TAG_STATUS] == "running", tags
        assert marker.read_text() == "ran\n"
        assert provider.node_ip(pid) == "127.0.0.1"
        node_id = tags[TAG_NODE_ID]
        wait_for(lambda: node_id in {n["node_id"] for n in ex.nodes() if n["alive"]}, 30,
                 "the head to list the ssh node")
        ran_on, text = ex.options(resources={"sshnode": 1}).submit(
            read_mounted, str(mounted / "hello.txt")).result(timeout=120)
        assert (ran_on, text) == (node_id, "synced by rsync")
        node_pid = provider._load()[pid]["pid"]
        with open(f"/proc/{node_pid}/cmdline", "rb") as f:  # the token went on stdin
            assert cluster.token.encode() not in f.read()
        provider.terminate_node(pid)
        assert provider.non_terminated_nodes() == []
        wait_for(lambda: exited(node_pid), 30, "the node process to exit")
        wait_for(lambda: node_id not in {n["node_id"] for n in ex.nodes() if n["alive"]},
                 60, "the head to see the node gone")


@pytest.mark.timeout(120)
def test_a_failing_setup_command_fails_the_launch_with_its_output(sshd, tmp_path):
    cfg = config(sshd, tmp_path, setup_commands=("echo preparing",
                                                 "echo 'no such package: foo' >&2; exit 7"))
    provider = SSHProvider("sshtest", "127.0.0.1:1", "00" * 32,
                           state_dir=str(tmp_path / "state"), config=cfg)
    with pytest.raises(RemoteCommandError) as info:
        provider.launch("127.0.0.1", {"CPU": 1})
    assert info.value.returncode == 7
    assert "no such package: foo" in info.value.output
    assert "setup command failed on 127.0.0.1 (exit 7)" in str(info.value)
    pid = provider.create_node("ssh1", {"CPU": 1}, {}, {})  # the monitor's path
    provider.wait_launches(60)
    status = provider.node_tags(pid)[TAG_STATUS]
    assert status.startswith("failed: RemoteCommandError: setup command failed")
    assert "no such package: foo" in status
    assert not provider.node_alive(pid)


@pytest.mark.timeout(60)
def test_an_unreachable_host_names_host_and_port(sshd, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    cfg = config(sshd, tmp_path, provider={"ssh_port": port})
    runner = runner_for("127.0.0.1", cfg.provider, cfg.auth, str(tmp_path / "state"))
    with pytest.raises(HostUnreachableError, match=f"127.0.0.1:{port}.*sshd listens"):
        runner.run("true")


@pytest.mark.timeout(60)
def test_a_key_the_host_refuses_or_a_missing_key_is_an_auth_error(sshd, tmp_path):
    other = str(tmp_path / "other_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    base = config(sshd, tmp_path)
    for key, match in ((other, "refused with key.*authorized_keys"),
                       (str(tmp_path / "missing"), "cannot read the SSH private key")):
        runner = runner_for("127.0.0.1", base.provider,
                            {"ssh_user": sshd.user, "ssh_private_key": key},
                            str(tmp_path / "state"))
        with pytest.raises(SSHAuthError, match=match):
            runner.run("true")


def fedexec_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedexec", *args], capture_output=True,
                          text=True, timeout=timeout)


def write_yaml(sshd: Sshd, tmp_path, **extra) -> str:
    cfg = config(sshd, tmp_path)
    raw = {"cluster_name": "sshcli", "provider": dict(cfg.provider),
           "auth": dict(cfg.auth),
           "available_node_types": {"head": {"resources": {"CPU": 1}, "max_workers": 0}},
           "head_node_type": "head", **extra}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.timeout(120)
def test_exec_rsync_up_and_down_round_trip(sshd, tmp_path):
    path = write_yaml(sshd, tmp_path)
    src = tmp_path / "up.txt"
    src.write_text("round trip\n")
    remote = tmp_path / "remote" / "copied.txt"
    out = fedexec_cli("exec", path, f"mkdir -p {remote.parent} && whoami")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == sshd.user
    out = fedexec_cli("rsync-up", path, str(src), str(remote))
    assert out.returncode == 0, out.stderr
    out = fedexec_cli("exec", path, f"tr a-z A-Z < {remote} > {remote}.up")
    assert out.returncode == 0, out.stderr
    back = tmp_path / "back.txt"
    out = fedexec_cli("rsync-down", path, f"{remote}.up", str(back), "--yes")
    assert out.returncode == 0, out.stderr
    assert back.read_text() == "ROUND TRIP\n"
    out = fedexec_cli("exec", path, "echo about to fail; exit 4")
    assert out.returncode == 1
    assert "failed on 127.0.0.1 (exit 4)" in out.stderr and "about to fail" in out.stderr
    out = fedexec_cli("get-head-ip", path)
    assert (out.returncode, out.stdout) == (0, "127.0.0.1\n")


@pytest.mark.timeout(180)
def test_submit_runs_the_script_on_the_head_against_the_cluster(sshd, tmp_path):
    with Cluster(head_num_cpus=1) as cluster:
        port = cluster.address.rsplit(":", 1)[1]
        # The script's Python gets the token the way a head machine's token file would.
        token_file = tmp_path / "token"
        token_file.write_text(cluster.token)
        python = f"env FEDEXEC_TOKEN=$(cat {token_file}) {sys.executable}"
        path = write_yaml(sshd, tmp_path, provider={
            **config(sshd, tmp_path).provider, "head_port": int(port), "python": python})
        script = tmp_path / "job.py"
        script.write_text("import os, sys, fedexec\n"
                          "def square(x):\n    return x * x\n"
                          "with fedexec.Executor(address=os.environ['FEDEXEC_ADDRESS']) as ex:\n"
                          "    print(os.environ['FEDEXEC_ADDRESS'], sys.argv[1:],\n"
                          "          sum(ex.map(square, range(10))))\n")
        out = fedexec_cli("submit", path, str(script), "a", "b", timeout=150)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"127.0.0.1:{port} ['a', 'b'] 285"
        remote_copy = os.path.expanduser("~/fedexec-submit/job.py")
        assert open(remote_copy).read() == script.read_text()
        os.unlink(remote_copy)
        with contextlib.suppress(OSError):  # the directory, if this test made it
            os.rmdir(os.path.dirname(remote_copy))


@pytest.mark.timeout(60)
def test_attach_builds_an_interactive_ssh_command(sshd, tmp_path):
    path = write_yaml(sshd, tmp_path)
    out = fedexec_cli("attach", path, "--print")
    assert out.returncode == 0, out.stderr
    argv = out.stdout.split()
    assert argv[0] == "ssh" and argv[-1] == f"{sshd.user}@127.0.0.1"
    for want in ("BatchMode=yes", "StrictHostKeyChecking=accept-new", "-tt", sshd.key,
                 str(sshd.port)):
        assert want in argv
    known = argv[argv.index("-o", argv.index("StrictHostKeyChecking=accept-new")) + 1]
    assert known.startswith("UserKnownHostsFile=") and "autoscaler/sshcli" in known
    # and the command it prints does open a session there (a command instead of a tty)
    cmd = [a for a in argv if a != "-tt"] + ["echo attached"]
    assert subprocess.run(cmd, capture_output=True, text=True,
                          timeout=30).stdout == "attached\n"


def node_and_home() -> tuple[str, str]:
    return fedexec.get_runtime_context().node_id, os.environ.get("FEDEXEC_HOME", "")


@pytest.mark.timeout(300)
def test_up_launches_ssh_workers_and_down_stops_them(sshd, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FEDEXEC_HOME", str(home))
    monkeypatch.delenv("FEDEXEC_TOKEN", raising=False)
    cfg = config(sshd, tmp_path)
    path = write_yaml(sshd, tmp_path, provider={**cfg.provider, "head_port": 0,
                                                "job_port": 0},
                      available_node_types={
                          "head": {"resources": {"CPU": 1}, "max_workers": 0},
                          "ssh1": {"resources": {"CPU": 1, "sshnode": 1},
                                   "min_workers": 1, "max_workers": 1}})
    remote_nodes = tmp_path / "remote-home" / "nodes"
    try:
        out = fedexec_cli("up", path, "--yes", "--interval", "0.5")
        assert out.returncode == 0, out.stderr
        wait_for(lambda: remote_nodes.exists() and list(remote_nodes.glob("*.json")), 120,
                 "min_workers to start a node over SSH")
        with fedexec.Executor(address="auto") as ex:
            ran_on = ex.options(resources={"sshnode": 1}).submit(
                node_and_home).result(timeout=120)
        remote_ids = [p.stem for p in remote_nodes.glob("*.json")]
        assert ran_on == (remote_ids[0], str(tmp_path / "remote-home"))
    finally:
        down = fedexec_cli("down", path, "--yes")
    assert down.returncode == 0, down.stderr
    assert "terminated 1 worker node(s)" in down.stdout and "head stopped" in down.stdout
    assert list(remote_nodes.glob("*.json")) == []  # 'fedexec stop' ran there


@pytest.mark.timeout(60)
def test_up_with_an_unreachable_head_host_names_it_and_starts_nothing(sshd, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("FEDEXEC_HOME", str(tmp_path))
    path = write_yaml(sshd, tmp_path, provider={**config(sshd, tmp_path).provider,
                                                "head_ip": "192.0.2.1", "connect_timeout": 2})
    out = fedexec_cli("up", path, "--yes")
    assert out.returncode == 1
    assert "could not start the head on 192.0.2.1 over SSH" in out.stderr
    assert f"cannot reach the SSH server at 192.0.2.1:{sshd.port}" in out.stderr
    assert not (tmp_path / "cluster.json").exists()
    assert not (tmp_path / "autoscaler" / "sshcli" / "monitor.pid").exists()


@pytest.mark.timeout(300)
def test_up_starts_a_remote_head_over_ssh_and_down_stops_it(sshd, tmp_path, monkeypatch):
    """The head on the ssh host (here 127.0.0.1 through the test's sshd, forced with
    head_over_ssh, in its own FEDEXEC_HOME): started by ``up`` with
    head_start_commands, joined by the monitor and an ssh worker, kept by a second
    ``up``, stopped by ``down``."""
    home, head_home = tmp_path / "home", tmp_path / "head-home"
    home.mkdir()
    head_home.mkdir()
    monkeypatch.setenv("FEDEXEC_HOME", str(home))
    monkeypatch.delenv("FEDEXEC_TOKEN", raising=False)
    cfg = config(sshd, tmp_path)
    head_fedexec = f"env FEDEXEC_HOME={head_home} {sys.executable} -m fedexec"
    marker = tmp_path / "head-setup"
    path = write_yaml(
        sshd, tmp_path, setup_commands=[f"echo ran >> {marker}"],
        head_start_commands=["echo starting the head on $FEDEXEC_HEAD_IP",
                             f"{head_fedexec} start $FEDEXEC_START_ARGS"],
        provider={**cfg.provider, "head_over_ssh": True, "head_fedexec": head_fedexec,
                  "head_port": 0, "job_port": 0},
        available_node_types={"head": {"resources": {"CPU": 1, "headres": 1}, "max_workers": 0},
                              "ssh1": {"resources": {"CPU": 1, "sshnode": 1},
                                       "min_workers": 1, "max_workers": 1}})
    try:
        out = fedexec_cli("up", path, "--yes", "--interval", "0.5", timeout=120)
        assert out.returncode == 0, out.stderr
        assert "head started over SSH at 127.0.0.1:" in out.stdout, out.stdout
        assert not (home / "cluster.json").exists()  # not here: in the head's home
        assert (head_home / "cluster.json").exists()
        info = json.loads((home / "autoscaler" / "sshcli" / "remote-head.json").read_text())
        assert info["token"] == (head_home / "token").read_text().strip()
        with fedexec.Executor(address=info["address"], token=info["token"]) as ex:
            assert ex.cluster_resources().get("headres") == 1
            wait_for(lambda: ex.cluster_resources().get("sshnode") == 1, 120,
                     "the monitor to start the ssh worker against the remote head")
            ran_on = ex.options(resources={"sshnode": 1}).submit(
                node_and_home).result(timeout=120)
        assert ran_on[1] == str(tmp_path / "remote-home")
        again = fedexec_cli("up", path, "--yes", "--interval", "0.5", timeout=120)
        assert again.returncode == 0, again.stderr
        assert f"using the head already running at {info['address']}" in again.stdout
        assert marker.read_text() == "ran\n" * 2  # head and worker once: the head was kept
    finally:
        down = fedexec_cli("down", path, "--yes", timeout=120)
    assert down.returncode == 0, down.stderr
    assert "terminated 1 worker node(s)" in down.stdout
    assert "head stopped (over SSH)" in down.stdout
    assert not (head_home / "cluster.json").exists()


@pytest.mark.timeout(300)
def test_monitor_on_head_runs_the_monitor_on_the_head_and_down_stops_it(sshd, tmp_path,
                                                                        monkeypatch):
    """``provider.monitor_on_head``: ``up`` starts the monitor on the head host (in
    the head's FEDEXEC_HOME, not here), which starts the ssh worker; ``fedexec
    monitor`` prints the head's log over SSH; ``down`` stops that monitor and its
    worker on the head, then the head."""
    home, head_home = tmp_path / "home", tmp_path / "head-home"
    home.mkdir()
    head_home.mkdir()
    monkeypatch.setenv("FEDEXEC_HOME", str(home))
    monkeypatch.delenv("FEDEXEC_TOKEN", raising=False)
    cfg = config(sshd, tmp_path)
    head_fedexec = f"env FEDEXEC_HOME={head_home} {sys.executable} -m fedexec"
    path = write_yaml(
        sshd, tmp_path,
        provider={**cfg.provider, "head_over_ssh": True, "monitor_on_head": True,
                  "head_fedexec": head_fedexec, "head_port": 0, "job_port": 0},
        available_node_types={"head": {"resources": {"CPU": 1}, "max_workers": 0},
                              "ssh1": {"resources": {"CPU": 1, "sshnode": 1},
                                       "min_workers": 1, "max_workers": 1}})
    head_state = head_home / "autoscaler" / "sshcli"
    try:
        out = fedexec_cli("up", path, "--yes", "--interval", "0.5", timeout=180)
        assert out.returncode == 0, out.stderr
        assert "autoscaler monitor running on the head" in out.stdout, out.stdout
        assert (head_state / "monitor.pid").exists()  # there,
        assert not (home / "autoscaler" / "sshcli" / "monitor.pid").exists()  # not here
        pid = int((head_state / "monitor.pid").read_text())
        info = json.loads((home / "autoscaler" / "sshcli" / "remote-head.json").read_text())
        with fedexec.Executor(address=info["address"], token=info["token"]) as ex:
            wait_for(lambda: ex.cluster_resources().get("sshnode") == 1, 120,
                     "the head's monitor to start the ssh worker")
        log = fedexec_cli("monitor", path, "--no-follow", timeout=60)
        assert "launching 1 x ssh1" in log.stdout, (log.stdout, log.stderr)
        # `fedexec status` here shows the decisions of the monitor on the head.
        monkeypatch.setenv("FEDEXEC_TOKEN", info["token"])
        status = fedexec_cli("status", "--address", info["address"], timeout=60)
        assert "autoscaler 'sshcli' (last round" in status.stdout, (
            status.stdout, status.stderr, (head_state / "monitor.log").read_text())
        block = status.stdout.split("autoscaler 'sshcli' (last round", 1)[1]
        # its latest round: the worker it launched is up (min_workers met)
        assert "nothing to do" in block or "launching 1 x ssh1" in block, block
    finally:
        monkeypatch.delenv("FEDEXEC_TOKEN", raising=False)
        down = fedexec_cli("down", path, "--yes", timeout=180)
    assert down.returncode == 0, down.stderr
    assert "on the head: fedexec down: autoscaler monitor stopped" in down.stdout, down.stdout
    assert "on the head: fedexec down: terminated 1 worker node(s)" in down.stdout
    assert "head stopped (over SSH)" in down.stdout
    assert exited(pid)
    assert not (head_home / "cluster.json").exists()


@pytest.mark.timeout(60)
def test_launcher_commands_with_the_local_provider_run_on_this_machine(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("FEDEXEC_HOME", str(tmp_path))
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump({"cluster_name": "here", "provider": {"type": "local"},
                                    "available_node_types": {"head": {"resources": {"CPU": 1}}},
                                    "head_node_type": "head"}))
    src, dst = tmp_path / "a.txt", tmp_path / "sub" / "b.txt"
    src.write_text("local copy\n")
    out = fedexec_cli("exec", str(path), f"mkdir -p {dst.parent} && echo $$")
    assert out.returncode == 0 and int(out.stdout) != os.getpid(), out.stderr
    assert fedexec_cli("rsync-up", str(path), str(src), str(dst)).returncode == 0
    assert dst.read_text() == "local copy\n"
    assert fedexec_cli("get-head-ip", str(path)).stdout == "127.0.0.1\n"
    failed = fedexec_cli("exec", str(path), "exit 9")
    assert failed.returncode == 1 and "failed on this machine (exit 9)" in failed.stderr


@pytest.mark.timeout(240)
def test_worker_start_commands_start_the_node_or_fail_with_their_output(sshd, tmp_path):
    marker = tmp_path / "start-env"
    fedexec_cmd = config(sshd, tmp_path).provider["fedexec"]
    cfg = config(sshd, tmp_path, worker_start_commands=(
        f"echo $FEDEXEC_NODE_IP $FEDEXEC_HEAD_ADDRESS > {marker}",
        f"{fedexec_cmd} start $FEDEXEC_START_ARGS"))
    with Cluster(head_num_cpus=1) as cluster, cluster.connect() as ex:
        provider = SSHProvider("sshtest", cluster.address, cluster.token,
                               state_dir=str(tmp_path / "state"), config=cfg)
        node_id, node_pid = provider.launch("127.0.0.1", {"CPU": 1, "sshnode": 1})
        try:
            assert marker.read_text() == f"127.0.0.1 {cluster.address}\n"
            wait_for(lambda: node_id in {n["node_id"] for n in ex.nodes() if n["alive"]},
                     30, "the head to list the node the start commands started")
            assert ex.options(resources={"sshnode": 1}).submit(
                read_mounted, str(marker)).result(timeout=120)[0] == node_id
        finally:
            provider._stop("127.0.0.1")
        wait_for(lambda: exited(node_pid), 30, "the node process to exit")
    failing = config(sshd, tmp_path, worker_start_commands=(
        "echo 'docker: image not found' >&2", "exit 3", "echo never"))
    provider = SSHProvider("sshtest", "127.0.0.1:1", "00" * 32,
                           state_dir=str(tmp_path / "state2"), config=failing)
    with pytest.raises(RemoteCommandError) as info:
        provider.launch("127.0.0.1", {"CPU": 1})
    assert info.value.returncode == 3
    assert "docker: image not found" in info.value.output
    assert "never" not in info.value.output
    assert "worker start command failed on 127.0.0.1 (exit 3)" in str(info.value)
