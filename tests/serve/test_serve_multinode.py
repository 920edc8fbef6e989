"""Serve on a ``fedexec.testing.Cluster`` of several node managers: replicas on
different nodes, one HTTP proxy per node, each reaching every replica."""

from __future__ import annotations

import os

import pytest
import requests

import fedexec
from _backend_support import free_port, poll_until
from fedexec import serve
from fedexec.testing import Cluster

T = 60


@serve.deployment(num_replicas=2, actor_options={"num_cpus": 0.5, "scheduling_strategy": "SPREAD"})
class WhereAmI:
    def __call__(self, request):
        return {"node": fedexec.get_runtime_context().get_node_id(), "pid": os.getpid()}


def _healthy(proxies: dict) -> set[str]:
    return {node for node, p in proxies.items() if p.status == "HEALTHY"}


def _proxy_node(url: str) -> str:
    """The node the proxy at ``url`` runs on (its metrics name it)."""
    r = requests.get(f"{url}/-/healthz", timeout=T)
    assert r.status_code == 200 and r.text == "success"
    return r.headers["x-fedexec-node"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_proxy_on_every_node_reaches_replicas_on_every_node():
    port = free_port()
    with Cluster(head_num_cpus=0) as cluster:
        nodes = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]
        with fedexec.Executor(address=cluster.address) as ex:
            serve.start(http_options={"port": port}, executor=ex)
            try:
                serve.run(WhereAmI.bind(), name="where", route_prefix="/where")
                every = {n["node_id"] for n in ex.nodes() if n["alive"]}
                assert len(every) == 3
                assert poll_until(lambda: _healthy(serve.status().proxies) == every,
                                  timeout=T), serve.status().proxies
                proxies = serve.status().proxies
                head = next(n["node_id"] for n in ex.nodes() if n.get("is_head"))
                assert proxies[head].port == port  # the head's proxy on the port asked for
                ports = {p.port for p in proxies.values()}
                assert len(ports) == 3  # the others on one host: ports of their own
                for node_id, proxy in proxies.items():
                    assert proxy.status == "HEALTHY"
                    url = f"http://{proxy.host}:{proxy.port}"
                    assert _proxy_node(url) == node_id  # each proxy runs on its node
                    seen = [requests.get(f"{url}/where", timeout=T).json()
                            for _ in range(20)]
                    assert {s["node"] for s in seen} == {n.node_id for n in nodes}
                    assert len({s["pid"] for s in seen}) == 2
            finally:
                serve.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_head_only_and_a_port_for_the_other_nodes():
    port, node_port = free_port(), free_port()
    with Cluster(head_num_cpus=0) as cluster:
        cluster.add_node(num_cpus=1)
        with fedexec.Executor(address=cluster.address) as ex:
            serve.start(http_options={"port": port, "location": "HeadOnly"}, executor=ex)
            try:
                serve.run(WhereAmI.bind(), name="where", route_prefix="/where")
                proxies = serve.status().proxies
                assert [p.port for p in proxies.values()] == [port]
                assert requests.get(f"http://127.0.0.1:{port}/where", timeout=T).ok
            finally:
                serve.shutdown()
            serve.start(http_options={"port": port, "node_port": node_port}, executor=ex)
            try:
                assert poll_until(lambda: len(_healthy(serve.status().proxies)) == 2, timeout=T)
                assert {p.port for p in serve.status().proxies.values()} == {port, node_port}
            finally:
                serve.shutdown()


def test_unknown_proxy_location_is_refused():
    with pytest.raises(ValueError, match="EveryNode"):
        serve.api._http_options({"location": "Nowhere"})


@serve.deployment(num_replicas=1, actor_options={"num_cpus": 0})
class Doubler:
    def __call__(self, x):
        return 2 * x


def call_through_serve(name, x):
    """In a task: find the application by name, call it through its handle."""
    return fedexec.get_runtime_context().get_node_id(), \
        serve.get_app_handle(name).remote(x).result(T)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_task_on_another_node_finds_the_app_and_calls_it_through_a_handle():
    """The controller is a named actor on the head; a task on a worker node finds it
    through the head's actor directory (named actors used to be visible only on the
    node that made them)."""
    with Cluster(head_num_cpus=1) as cluster:
        node = cluster.add_node(num_cpus=1)
        with fedexec.Executor(address=cluster.address) as ex:
            serve.start(http_options={"port": free_port()}, executor=ex)
            try:
                serve.run(Doubler.bind(), name="double", route_prefix="/double")
                where, value = ex.options(
                    scheduling_strategy=fedexec.NodeAffinity(node.node_id)).submit(
                        call_through_serve, "double", 21).result(T)
                assert (where, value) == (node.node_id, 42)
            finally:
                serve.shutdown()
