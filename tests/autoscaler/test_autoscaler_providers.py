"""Choosing a provider from the config's ``provider`` section: ``local``, a plugin
named ``module:Class``, or a clear error."""

from __future__ import annotations

import pytest

from fedexec.autoscaler import ClusterConfig, NodeTypeConfig
from fedexec.autoscaler.providers import LocalProvider, make_provider
from fedexec.autoscaler.ssh_provider import SSHProvider
from fedexec.exceptions import FedexecError


class PluginProvider:
    """A plugin as the README documents it (only its construction is checked)."""

    def __init__(self, cluster_name, head_address, token, config):
        self.args = (cluster_name, head_address, token, config)


def test_local_plugin_and_unknown_providers(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDEXEC_HOME", str(tmp_path))
    assert isinstance(make_provider({"type": "local"}, "c", "127.0.0.1:1", "t"),
                      LocalProvider)
    section = {"type": f"{__name__}:PluginProvider", "region": "x"}
    plugin = make_provider(section, "c", "127.0.0.1:1", None)
    assert isinstance(plugin, PluginProvider)
    assert plugin.args == ("c", "127.0.0.1:1", None, section)
    with pytest.raises(FedexecError, match="provider type 'gce' is not available"):
        make_provider({"type": "gce"}, "c", "127.0.0.1:1", None)
    with pytest.raises(FedexecError, match="ssh provider needs the cluster config"):
        make_provider({"type": "ssh"}, "c", "127.0.0.1:1", None)
    no_hosts = ClusterConfig(node_types={"h": NodeTypeConfig("h", {"CPU": 1}, 0, 0)},
                             head_node_type="h", provider={"type": "ssh"})
    with pytest.raises(FedexecError, match=r"needs provider\.worker_ips"):
        make_provider(no_hosts.provider, "c", "127.0.0.1:1", None, no_hosts)
    ssh = ClusterConfig(node_types=no_hosts.node_types, head_node_type="h",
                        provider={"type": "ssh", "worker_ips": ["10.0.0.2"]})
    assert isinstance(make_provider(ssh.provider, "c", "127.0.0.1:1", None, ssh),
                      SSHProvider)


def test_local_provider_keeps_its_nodes_in_a_state_file(tmp_path, monkeypatch):
    """A second provider object (a restarted monitor, ``fedexec down``) sees the
    nodes the first one recorded; terminating forgets them."""
    monkeypatch.setenv("FEDEXEC_HOME", str(tmp_path))
    first = LocalProvider("c", "127.0.0.1:1", "t")
    pid = first.create_node("cpu2", {"CPU": 2}, {}, {"owner": "me"})
    first.wait_launches(60)  # nothing listens on port 1: the start fails
    second = LocalProvider("c", "127.0.0.1:1", "t")
    assert second.non_terminated_nodes({"owner": "me"}) == [pid]
    assert second.node_tags(pid)["fedexec-status"].startswith("failed: ")
    assert not second.node_alive(pid)
    second.terminate_node(pid)
    assert first.non_terminated_nodes() == []
