"""fedexec.cluster: starting a head and nodes from Python (what testing.Cluster and
the Spark integration use), and finding a head's token on this machine."""

from __future__ import annotations

import json
import os
import stat

import pytest

import fedexec
from fedexec import cluster

T = 60


def _where() -> str:
    return fedexec.get_runtime_context().node_id


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDEXEC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEDEXEC_TOKEN", raising=False)
    return tmp_path / "home"


@pytest.mark.timeout(120)
def test_start_head_and_node_then_connect_without_a_token(home):
    head = cluster.start_head(num_cpus=0, owner_pid=os.getpid(), heartbeat_interval=0.2)
    try:
        node = cluster.start_node(head.address, token=head.token, num_cpus=2,
                                  resources={"special": 1}, owner_pid=os.getpid())
        try:
            assert head.alive() and node.alive() and head.is_head and not node.is_head
            with fedexec.Executor(address=head.address) as ex:  # token found here
                ids = {n["node_id"] for n in ex.nodes() if n["alive"]}
                assert ids == {head.node_id, node.node_id}
                ran_on = ex.options(resources={"special": 1}).submit(_where).result(T)
                assert ran_on == node.node_id
        finally:
            node.stop()
        assert not node.alive()
        # The recorded token is private to this user.
        (recorded,) = (home / "heads").iterdir()
        assert stat.S_IMODE(recorded.stat().st_mode) == 0o600
        assert json.loads(recorded.read_text())["token"] == head.token
    finally:
        head.stop()
    assert not list((home / "heads").iterdir())  # forgotten with the head
    with pytest.raises(fedexec.AuthenticationError):
        fedexec.Executor(address=head.address)  # no token any more (and no head)


@pytest.mark.timeout(120)
def test_a_killed_heads_record_is_not_used(home):
    head = cluster.start_head(num_cpus=1, owner_pid=os.getpid())
    address = head.address
    os.kill(head.pid, 9)
    head.wait(10)
    assert not head.alive()
    # Its record is still on disk (nobody removed it), but its process is gone.
    assert list((home / "heads").iterdir())
    with pytest.raises(fedexec.AuthenticationError, match="no cluster token"):
        fedexec.Executor(address=address)
    head.stop()


@pytest.mark.timeout(120)
def test_a_node_with_the_wrong_token_does_not_join(home):
    head = cluster.start_head(num_cpus=1, owner_pid=os.getpid())
    try:
        with pytest.raises(fedexec.FedexecError):
            cluster.start_node(head.address, token="00" * 32, num_cpus=1,
                               owner_pid=os.getpid(), timeout=15)
    finally:
        head.stop()


def test_an_unknown_runtime_option_is_refused_before_anything_starts(home):
    with pytest.raises(ValueError, match="heartbeat_intervall"):
        cluster.start_head(num_cpus=1, heartbeat_intervall=0.2)
