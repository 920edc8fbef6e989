"""Test helpers: a real multi-node native cluster on one machine.

``Cluster`` starts a head and more nodes as separate node-manager processes, each
with its own shared-memory store, workers and resources, joined over
authenticated TCP on 127.0.0.1 — so object transfer, spillback and node loss run
for real::

    with fedexec.testing.Cluster(head_num_cpus=1) as cluster:
        worker = cluster.add_node(num_cpus=2, resources={"special": 1})
        with fedexec.Executor(address=cluster.address) as ex:   # or cluster.connect()
            ...
        cluster.remove_node(worker)        # SIGKILL: the head notices missed heartbeats

The cluster's token is handled for the caller: ``Executor(address=cluster.address)``
on this machine finds it while the cluster runs (see ``fedexec.cluster``).

Nodes die with the process that started them. Heartbeats default to every 0.2 s
with a node declared dead after 2 s of silence (the runtime's defaults are 0.5 s
and 5 s), so failure tests are quick.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from typing import Any

from . import cluster as _cluster
from .cluster import NodeHandle
from .exceptions import FedexecError

__all__ = ["Cluster", "ClusterNode", "Node"]

ClusterNode = NodeHandle  #: one node manager process of a :class:`Cluster`
Node = NodeHandle  #: the name API.md uses


class Cluster:
    """A multi-node native cluster of processes on this machine (see module docs).

    Args:
        head_num_cpus: CPUs of the head (default 0: tasks run on added nodes).
        head_options / head_node_args: more of the head's ``num_gpus``,
            ``resources``, ``object_store_memory``.
        heartbeat_interval: seconds between node heartbeats.
        heartbeat_timeout: seconds of silence before the head declares a node dead.
        initializer, initargs: run in every worker process of every node.
    """

    def __init__(self, head_num_cpus: float | None = None, *,
                 head_node_args: Mapping[str, Any] | None = None,
                 heartbeat_interval: float = 0.2, heartbeat_timeout: float = 2.0,
                 initializer: Any = None, initargs: tuple[Any, ...] = (),
                 **head_options: Any):
        self.token = os.urandom(32).hex()
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self._init = {"initializer": initializer, "initargs": initargs} if initializer \
            else {}
        self.nodes: list[ClusterNode] = []
        args = {**dict(head_node_args or {}), **head_options}
        if head_num_cpus is not None:
            args["num_cpus"] = head_num_cpus
        args.setdefault("num_cpus", 0)
        self.head: NodeHandle = self._launch(args, head=None)

    @property
    def address(self) -> str:
        """The head's ``host:port`` (pass it, with ``token``, to ``Executor``)."""
        return self.head.address

    def _launch(self, args: dict[str, Any], head: str | None) -> NodeHandle:
        args.setdefault("num_gpus", 0)
        common = dict(token=self.token, host="127.0.0.1", owner_pid=os.getpid(),
                      heartbeat_interval=self.heartbeat_interval,
                      heartbeat_timeout=self.heartbeat_timeout, **self._init, **args)
        node = _cluster.start_head(**common) if head is None else \
            _cluster.start_node(head, **common)
        self.nodes.append(node)
        return node

    def add_node(self, *, num_cpus: float = 1, num_gpus: float = 0,
                 resources: Mapping[str, float] | None = None,
                 object_store_memory: int | None = None, wait: bool = True) -> NodeHandle:
        """Start a node that joins the head; with ``wait``, return once every node
        of the cluster sees it."""
        node = self._launch({"num_cpus": num_cpus, "num_gpus": num_gpus,
                             "resources": dict(resources or {}),
                             "object_store_memory": object_store_memory}, head=self.address)
        if wait:
            self.wait_for_nodes()
        return node

    def remove_node(self, node: NodeHandle, graceful: bool = False) -> None:
        """Take a node away: SIGKILL (default) or a graceful stop."""
        if node is self.head:
            raise ValueError("remove_node() takes worker nodes; use shutdown() for the head")
        if graceful:
            node.stop()
        else:
            node.kill()
        self.nodes.remove(node)

    def _alive_ids(self) -> set[str]:
        with self.connect() as ex:
            return {n["node_id"] for n in ex.nodes() if n.get("alive")}

    def wait_for_nodes(self, timeout: float = 30.0) -> None:
        """Wait until the head lists exactly this cluster's live nodes, and each has
        heard of the others (one view broadcast)."""
        want = {n.node_id for n in self.nodes}
        deadline = time.monotonic() + timeout
        while True:
            alive = self._alive_ids()
            if alive == want:
                break
            if time.monotonic() > deadline:
                raise FedexecError(f"the cluster did not settle within {timeout} s: the head "
                                   f"lists {sorted(alive)}, expected {sorted(want)}")
            time.sleep(self.heartbeat_interval / 2)
        time.sleep(2 * self.heartbeat_interval)  # every node got the head's view

    def connect(self, **kwargs: Any) -> Any:
        """A new ``Executor`` connected to the head (shut it down when done)."""
        from .executor import Executor

        return Executor(address=self.address, token=self.token, **kwargs)

    def shutdown(self) -> None:
        """Stop every node (workers first, then the head)."""
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.stop()
        self.nodes.clear()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

