"""A cluster started from the command line, joined by drivers, and its security:
every connection is authenticated before anything it sends is decoded."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

import fedexec
from _backend_support import check_a_raw_pickle_is_dropped_unread

T = 60


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fedexec", *args], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.fixture
def head(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("FEDEXEC_HOME", str(home))
    monkeypatch.delenv("FEDEXEC_TOKEN", raising=False)
    out = cli("start", "--head", "--port", "0", "--num-cpus", "2", "--resources",
              '{"disk": 3}', env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    info = json.loads((home / "cluster.json").read_text())
    info["token"] = (home / "token").read_text().strip()
    info["home"] = home
    env = os.environ.copy()  # tests may point FEDEXEC_HOME elsewhere meanwhile
    yield info
    cli("stop", env=env)


def test_start_status_stop_as_a_user_types_them(head):
    out = cli("status", env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    assert re.search(r"^  CPU +0 / 2$", out.stdout, re.M), out.stdout
    assert re.search(r"^  disk +0 / 3$", out.stdout, re.M), out.stdout
    js = json.loads(cli("status", "--format", "json", env=os.environ.copy()).stdout)
    assert js["total"]["CPU"] == 2 and len(js["nodes"]) == 1
    out = cli("stop", env=os.environ.copy())
    assert out.returncode == 0 and "stopped" in out.stdout
    assert "no fedexec head" in cli("stop", env=os.environ.copy()).stdout
    assert cli("status", env=os.environ.copy()).returncode == 1


def test_a_second_head_is_refused(head):
    out = cli("start", "--head", "--port", "0", env=os.environ.copy())
    assert out.returncode == 1 and "already running" in out.stderr


def test_files_are_private_and_the_default_bind_is_loopback(head):
    for name in ("token", "cluster.json"):
        assert stat.S_IMODE(os.stat(head["home"] / name).st_mode) == 0o600
    assert head["address"].startswith("127.0.0.1:")


def square(x):
    return x * x


def test_address_auto_joins_the_local_cluster(head):
    with fedexec.Executor(address="auto") as ex:
        assert ex.get([ex.submit(square, i) for i in range(5)], timeout=T) == [0, 1, 4, 9, 16]
        assert ex.cluster_resources()["disk"] == 3


def test_host_port_with_the_token_joins_over_tcp(head, monkeypatch):
    monkeypatch.setenv("FEDEXEC_HOME", "/nonexistent-fedexec-home")
    with fedexec.Executor(address=head["address"], token=head["token"]) as ex:
        assert ex.get(ex.submit(square, 7), timeout=T) == 49
    monkeypatch.setenv("FEDEXEC_TOKEN", head["token"])
    with fedexec.Executor(address=head["address"]) as ex:
        assert ex.get(ex.submit(square, 8), timeout=T) == 64


def test_two_drivers_share_the_cluster(head):
    with fedexec.Executor(address="auto") as a, fedexec.Executor(address="auto") as b:
        ra, rb = a.submit(square, 2), b.submit(square, 3)
        assert a.get(ra, timeout=T) == 4 and b.get(rb, timeout=T) == 9


def test_a_wrong_token_is_refused_at_construction(head):
    with pytest.raises(fedexec.AuthenticationError, match="token"):
        fedexec.Executor(address=head["address"], token="ab" * 32)


def test_no_token_at_all_is_an_authentication_error(head, monkeypatch):
    monkeypatch.setenv("FEDEXEC_HOME", "/nonexistent-fedexec-home")
    with pytest.raises(fedexec.AuthenticationError, match="no cluster token"):
        fedexec.Executor(address=head["address"])


def test_a_wrong_address_is_a_clear_error():
    with pytest.raises(fedexec.ClusterUnreachableError, match="cannot reach"):
        fedexec.Executor(address="127.0.0.1:1", token="ab" * 32)
    with pytest.raises(ValueError, match="host:port"):
        fedexec.Executor(address="not-an-address", token="ab" * 32)


def test_a_raw_tcp_peer_sending_a_pickle_is_dropped_unread(head, tmp_path):
    check_a_raw_pickle_is_dropped_unread(head["address"], tmp_path)
    with fedexec.Executor(address="auto") as ex:  # and it keeps serving
        assert ex.get(ex.submit(square, 9), timeout=T) == 81


class Named:
    def ping(self):
        return "pong"


def test_list_shows_nodes_actors_tasks_and_objects(head):
    with fedexec.Executor(address="auto") as ex:
        actor = ex.options(name="lister", lifetime="detached").actor(Named)
        assert ex.get(actor.ping.remote(), timeout=T) == "pong"
        kept = ex.put(b"x" * 200_000)
        actors = json.loads(cli("list", "actors", "--format", "json",
                                env=os.environ.copy()).stdout)
        assert any(a["name"] == "lister" and a["state"] == "ALIVE" for a in actors)
        objects = json.loads(cli("list", "objects", "--format", "json",
                                 env=os.environ.copy()).stdout)
        assert any(o["object_id"] == kept.id and o["where"] == "shared memory"
                   for o in objects)
        table = cli("list", "nodes", env=os.environ.copy())
        assert table.returncode == 0 and "NODE_ID" in table.stdout
        assert cli("list", "tasks", env=os.environ.copy()).returncode == 0
