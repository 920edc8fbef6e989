"""Serve on a ``fedexec.testing.Cluster`` of several node managers: replicas on
different nodes, all reached by the proxy."""

from __future__ import annotations

import os
import socket

import pytest
import requests

import fedexec
from fedexec import serve
from fedexec.testing import Cluster

T = 60


@serve.deployment(num_replicas=2, actor_options={"num_cpus": 0.5, "scheduling_strategy": "SPREAD"})
class WhereAmI:
    def __call__(self, request):
        return {"node": fedexec.get_runtime_context().get_node_id(), "pid": os.getpid()}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_replicas_on_two_nodes_serve_through_one_proxy():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Cluster(head_num_cpus=0) as cluster:
        nodes = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]
        with fedexec.Executor(address=cluster.address) as ex:
            serve.start(http_options={"port": port}, executor=ex)
            try:
                serve.run(WhereAmI.bind(), name="where", route_prefix="/where")
                seen = [requests.get(f"http://127.0.0.1:{port}/where", timeout=T).json()
                        for _ in range(30)]
                assert {s["node"] for s in seen} == {n.node_id for n in nodes}
                assert len({s["pid"] for s in seen}) == 2
            finally:
                serve.shutdown()
