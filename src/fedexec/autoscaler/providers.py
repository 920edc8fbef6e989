"""Node providers: where the autoscaler's worker nodes come from.

A provider is a small plugin (:class:`NodeProvider`): ``create_node``,
``terminate_node``, ``non_terminated_nodes``, ``node_tags`` and ``node_ip``. Tags are
string pairs the autoscaler sets on each node it creates (:data:`TAG_NODE_TYPE`, and
:data:`TAG_NODE_ID` once the node joined the head), so a restarted monitor, or
``fedexec down``, finds the nodes it started.

:class:`LocalProvider` (``provider: {type: local}``) runs each worker node as a real
``fedexec start --address HEAD`` node manager process on this machine, with its own
object store and workers; what it started is kept in a state file under the
cluster's directory (``$FEDEXEC_HOME``). The ``ssh`` provider is in
:mod:`.ssh_provider`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from .._pids import pid_alive
from ..exceptions import FedexecError

__all__ = ["TAG_NODE_ID", "TAG_NODE_TYPE", "TAG_STATUS", "LocalProvider", "NodeProvider",
           "StateFileProvider", "make_provider", "parse_started", "start_args"]

TAG_NODE_TYPE = "fedexec-node-type"  #: the node type's name
TAG_NODE_ID = "fedexec-node-id"  #: the fedexec node id, once the node manager runs
TAG_STATUS = "fedexec-status"  #: "launching", "running" or "failed: <why>"


class NodeProvider(Protocol):
    """What the autoscaler needs of a source of nodes. Provider node ids are the
    provider's own (a cloud instance id, a host); they are not fedexec node ids."""

    def create_node(self, node_type: str, resources: Mapping[str, float],
                    node_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """Start creating one node; return its provider id at once (the node may
        take a while to join the head: its ``TAG_STATUS`` tells)."""
        ...

    def terminate_node(self, provider_id: str) -> None:
        """Stop the node and forget it (no error if it is already gone)."""
        ...

    def non_terminated_nodes(self, tag_filters: Mapping[str, str] | None = None
                             ) -> list[str]:
        """Provider ids of the nodes created and not terminated whose tags match."""
        ...

    def node_tags(self, provider_id: str) -> dict[str, str]:
        """The node's tags."""
        ...

    def node_ip(self, provider_id: str) -> str | None:
        """The node's IP address (None while unknown)."""
        ...


class StateFileProvider:
    """The bookkeeping providers share: the nodes created (their tags and anything
    else the provider records) in a JSON state file ``<state_dir>/<kind>-nodes.json``
    (``state_dir`` default ``$FEDEXEC_HOME/autoscaler/<cluster_name>``), and the
    launch threads. Subclasses implement ``create_node`` and ``terminate_node``."""

    kind = "local"

    def __init__(self, cluster_name: str, head_address: str, token: str | None,
                 state_dir: str | None = None):
        from ..backends.native.cluster import cluster_dir

        self.head_address = head_address
        self._token = token
        self._dir = state_dir or os.path.join(cluster_dir(), "autoscaler", cluster_name)
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        self._path = os.path.join(self._dir, f"{self.kind}-nodes.json")
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # the state file: {provider_id: {"tags": {...}, "pid": int | None}}
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self._path, encoding="utf-8") as f:
                return dict(json.load(f))
        except (OSError, ValueError):
            return {}

    def _save(self, nodes: dict[str, dict[str, Any]]) -> None:
        tmp = f"{self._path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(nodes, f)
        os.replace(tmp, self._path)

    def _update(self, provider_id: str, **tags: str) -> None:
        with self._lock:
            nodes = self._load()
            if provider_id in nodes:
                nodes[provider_id]["tags"].update(tags)
                self._save(nodes)

    def _record(self, provider_id: str, node_type: str, tags: Mapping[str, str],
                **extra: Any) -> None:
        """Add a node, status ``launching``, to the state file."""
        with self._lock:
            nodes = self._load()
            nodes[provider_id] = {"tags": {**tags, TAG_NODE_TYPE: node_type,
                                           TAG_STATUS: "launching"}, **extra}
            self._save(nodes)

    def _launch_thread(self, provider_id: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=(provider_id, *args),
                                  name=f"fedexec-autoscaler-launch-{provider_id}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def non_terminated_nodes(self, tag_filters: Mapping[str, str] | None = None
                             ) -> list[str]:
        nodes = self._load()
        want = dict(tag_filters or {})
        return sorted(pid for pid, e in nodes.items()
                      if all(e["tags"].get(k) == v for k, v in want.items()))

    def node_tags(self, provider_id: str) -> dict[str, str]:
        entry = self._load().get(provider_id)
        return dict(entry["tags"]) if entry is not None else {}

    def wait_launches(self, timeout: float | None = None) -> None:
        """Wait for the node launches still running."""
        for thread in list(self._threads):
            thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]


def start_args(head_address: str, resources: Mapping[str, float]) -> list[str]:
    """The ``fedexec start`` arguments that join ``head_address`` with ``resources``."""
    rest = dict(resources)
    cmd = ["start", "--address", head_address,
           "--num-cpus", f"{rest.pop('CPU', 0.0):g}", "--num-gpus", f"{rest.pop('GPU', 0.0):g}"]
    store = rest.pop("object_store_memory", None)
    if store is not None:
        cmd += ["--object-store-memory", str(int(store))]
    if rest:  # compact: the arguments hold no spaces (see FEDEXEC_START_ARGS)
        cmd += ["--resources", json.dumps(rest, separators=(",", ":"))]
    return cmd


def parse_started(stdout: str) -> tuple[str, int]:
    """The node id and pid from ``fedexec start --address``'s output ("fedexec node
    <id> joined the head at <addr> (pid <pid>, listening on ...)")."""
    words = stdout.split()
    return words[words.index("node") + 1], int(words[words.index("(pid") + 1].rstrip(","))


class LocalProvider(StateFileProvider):
    """Worker nodes as ``fedexec start --address`` processes on this machine (see the
    module docstring). ``head_address`` and ``token`` name the cluster to join
    (``token`` None: ``FEDEXEC_TOKEN`` or this machine's token file)."""

    def create_node(self, node_type: str, resources: Mapping[str, float],
                    node_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        provider_id = f"local-{uuid.uuid4().hex[:12]}"
        self._record(provider_id, node_type, tags)
        self._launch_thread(provider_id, self._start, dict(resources))
        return provider_id

    def _command(self, resources: dict[str, float]) -> list[str]:
        return [sys.executable, "-m", "fedexec", *start_args(self.head_address, resources)]

    def _start(self, provider_id: str, resources: dict[str, float]) -> None:
        """Run ``fedexec start --address`` (it returns once the node joined)."""
        env = {**os.environ, **({"FEDEXEC_TOKEN": self._token} if self._token else {})}
        try:
            out = subprocess.run(self._command(resources), env=env, capture_output=True,
                                 text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            self._update(provider_id, **{TAG_STATUS: f"failed: {exc}"})
            return
        if out.returncode != 0:
            why = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
            self._update(provider_id, **{TAG_STATUS: f"failed: {why[0]}"})
            return
        node_id, pid = parse_started(out.stdout)
        with self._lock:
            nodes = self._load()
            entry = nodes.get(provider_id)
            if entry is None:  # terminated while it started: stop it now
                self._stop(node_id)
                return
            entry["pid"] = pid
            entry["tags"].update({TAG_NODE_ID: node_id, TAG_STATUS: "running"})
            self._save(nodes)

    @staticmethod
    def _stop(node_id: str) -> None:
        from ..backends.native.cluster import stop_node

        stop_node(node_id, timeout=10.0)

    def terminate_node(self, provider_id: str) -> None:
        with self._lock:
            nodes = self._load()
            entry = nodes.pop(provider_id, None)
            self._save(nodes)
        if entry is not None and TAG_NODE_ID in entry["tags"]:
            self._stop(entry["tags"][TAG_NODE_ID])

    def node_ip(self, provider_id: str) -> str | None:
        return "127.0.0.1" if provider_id in self._load() else None

    def node_alive(self, provider_id: str) -> bool:
        """False once a started node's process is gone (killed, crashed)."""
        entry = self._load().get(provider_id)
        if entry is None:
            return False
        pid = entry.get("pid")
        if pid is None:
            return not entry["tags"].get(TAG_STATUS, "").startswith("failed")
        return pid_alive(pid)


def make_provider(provider: Mapping[str, Any], cluster_name: str, head_address: str,
                  token: str | None, config: Any = None) -> NodeProvider:
    """The provider a config's ``provider`` section names: ``local``, ``fake``
    (simulated nodes, :mod:`.fake_provider`), ``ssh`` (needs
    the whole ``config``: auth, file_mounts, setup_commands), or ``module:Class`` of
    a plugin (called with the same arguments as :class:`LocalProvider` plus the
    section as ``config``)."""
    kind = str(provider.get("type", "local"))
    if kind == "local":
        return LocalProvider(cluster_name, head_address, token)
    if kind == "fake":
        from .fake_provider import FakeProvider

        return FakeProvider(cluster_name, head_address, token, config=dict(provider))
    if kind == "ssh":
        from .ssh_provider import SSHProvider

        if config is None:
            raise FedexecError("the ssh provider needs the cluster config: pass config=")
        return SSHProvider(cluster_name, head_address, token, config=config)
    if ":" in kind:
        import importlib

        module, _, attr = kind.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        return cls(cluster_name, head_address, token, config=dict(provider))
    raise FedexecError(f"provider type {kind!r} is not available in this build; use "
                       "'local', 'ssh', 'fake', or 'module:Class' of a provider plugin")
