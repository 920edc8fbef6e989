"""The ``ssh`` provider: worker nodes on a fixed list of hosts, started over SSH.

Config::

    provider: {type: ssh, head_ip: 10.0.0.1, worker_ips: [10.0.0.2, 10.0.0.3],
               ssh_port: 22, fedexec: fedexec}
    auth: {ssh_user: me, ssh_private_key: ~/.ssh/id_ed25519}

Each host in ``worker_ips`` holds at most one node. Creating a node on a free host
syncs ``file_mounts`` with rsync, runs ``setup_commands`` in order, then starts the
node: with the config's ``worker_start_commands`` when there are any, else with
``<fedexec> start --address HEAD --host HOST ...`` (``provider.fedexec``: how to run
``fedexec`` there, default ``fedexec``). The start commands run in one shell
(``set -e``) with ``FEDEXEC_TOKEN`` (the cluster token, sent on standard input,
never on a command line), ``FEDEXEC_HEAD_ADDRESS``, ``FEDEXEC_NODE_IP`` (the host)
and ``FEDEXEC_START_ARGS`` (``--address HEAD --num-cpus N ... --host HOST``, without
spaces inside an argument) exported, so a custom one reads e.g.
``fedexec start $FEDEXEC_START_ARGS``; their output must include that ``fedexec
start``'s "joined" line (the node id is read from it). A failing setup or start
command fails the launch with :class:`~.ssh.RemoteCommandError` carrying its output. Terminating runs ``<fedexec> stop`` on
the host (which stops every fedexec node there: the provider owns its hosts). A
launch that fails leaves the node tagged ``failed: <error>`` (the monitor logs it and
forgets the node); :meth:`SSHProvider.launch` does the same steps and raises.
"""

from __future__ import annotations

import os
import shlex
import sys
import uuid
from collections.abc import Mapping
from typing import Any

from ..exceptions import FedexecError
from .providers import (
    TAG_NODE_ID,
    TAG_STATUS,
    StateFileProvider,
    parse_started,
    start_args,
)
from .ssh import RemoteCommandError, SSHRunner, runner_for

__all__ = ["SSHProvider"]


class SSHProvider(StateFileProvider):
    """Nodes on ``provider.worker_ips`` started over SSH (see the module docstring).
    ``config`` is the :class:`~fedexec.autoscaler.ClusterConfig`."""

    kind = "ssh"

    def __init__(self, cluster_name: str, head_address: str, token: str | None,
                 state_dir: str | None = None, *, config: Any):
        super().__init__(cluster_name, head_address, token, state_dir)
        self.config = config
        self.hosts = [str(h) for h in config.provider.get("worker_ips", [])]
        if not self.hosts:
            raise FedexecError("the ssh provider needs provider.worker_ips: a list of "
                               "hosts to start worker nodes on")
        self.fedexec = str(config.provider.get("fedexec", "fedexec"))

    def runner(self, host: str) -> SSHRunner:
        """The SSH runner for ``host`` (known hosts kept in the state directory)."""
        return runner_for(host, self.config.provider, self.config.auth, self._dir)

    def _token_value(self) -> str:
        from ..backends.native import cluster

        token = self._token or os.environ.get("FEDEXEC_TOKEN") or cluster._local_token()
        if not token:
            raise FedexecError("no cluster token to give the ssh nodes: pass the token, "
                               "set FEDEXEC_TOKEN, or run where the head's token file is")
        return token

    def create_node(self, node_type: str, resources: Mapping[str, float],
                    node_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        provider_id = f"ssh-{uuid.uuid4().hex[:12]}"
        with self._lock:
            nodes = self._load()
            used = {e.get("host") for e in nodes.values()}
            host = next((h for h in self.hosts if h not in used), None)
        if host is None:
            self._record(provider_id, node_type, tags)
            self._update(provider_id, **{TAG_STATUS: "failed: every host in "
                                         f"provider.worker_ips {self.hosts} has a node"})
            return provider_id
        self._record(provider_id, node_type, tags, host=host)
        self._launch_thread(provider_id, self._start, host, dict(resources))
        return provider_id

    def launch(self, host: str, resources: Mapping[str, float]) -> tuple[str, int]:
        """Sync files, run the setup commands and start a node on ``host``; return its
        fedexec node id and pid there. Raises the :mod:`.ssh` errors."""
        runner = self.runner(host)
        runner.sync_mounts(self.config.file_mounts)
        runner.run_all(self.config.setup_commands, what="setup command")
        args = [*start_args(self.head_address, resources), "--host", host]
        commands = self.config.worker_start_commands or [
            f"{self.fedexec} {shlex.join(args)}"]
        script = "\n".join([
            "set -e", "read -r FEDEXEC_TOKEN", "export FEDEXEC_TOKEN",
            f"export FEDEXEC_HEAD_ADDRESS={shlex.quote(self.head_address)}",
            f"export FEDEXEC_NODE_IP={shlex.quote(host)}",
            f"export FEDEXEC_START_ARGS={shlex.quote(' '.join(args[1:]))}", *commands])
        what = "worker start command" if self.config.worker_start_commands else \
            "start command"
        out = runner.run(script, stdin=self._token_value() + "\n", what=what, timeout=180)
        try:
            return parse_started(out)
        except (ValueError, IndexError) as exc:
            raise RemoteCommandError(f"the start command on {host} printed no node id: "
                                     f"{out.strip()[-500:]}", output=out) from exc

    def _start(self, provider_id: str, host: str, resources: dict[str, float]) -> None:
        try:
            node_id, pid = self.launch(host, resources)
        except FedexecError as exc:
            self._update(provider_id, **{TAG_STATUS: f"failed: {type(exc).__name__}: "
                                                     f"{exc}"})
            return
        with self._lock:
            nodes = self._load()
            entry = nodes.get(provider_id)
            if entry is not None:
                entry["pid"] = pid
                entry["tags"].update({TAG_NODE_ID: node_id, TAG_STATUS: "running"})
                self._save(nodes)
        if entry is None:  # terminated while it started: stop it now
            self._stop(host)

    def _stop(self, host: str) -> None:
        try:
            self.runner(host).run(f"{self.fedexec} stop", what="stop command", timeout=60)
        except FedexecError as exc:
            print(f"fedexec: warning: could not stop the node on {host}: {exc}",
                  file=sys.stderr)

    def terminate_node(self, provider_id: str) -> None:
        with self._lock:
            nodes = self._load()
            entry = nodes.pop(provider_id, None)
            self._save(nodes)
        if entry is not None and TAG_NODE_ID in entry["tags"] and entry.get("host"):
            self._stop(entry["host"])

    def node_ip(self, provider_id: str) -> str | None:
        entry = self._load().get(provider_id)
        return None if entry is None else entry.get("host")

    def node_alive(self, provider_id: str) -> bool:
        """False once the node's launch failed (the head tells when a node dies)."""
        entry = self._load().get(provider_id)
        return entry is not None and not entry["tags"].get(TAG_STATUS, "").startswith("failed")
