"""The classic API: serve.start(), Deployment.deploy(), get_handle() with fedexec.get."""

from __future__ import annotations

import requests

import fedexec
from fedexec import serve

T = 30


@serve.deployment
def model(request):
    return {"answer": request.query_params["query"].upper()}


@serve.deployment(route_prefix="/counter", num_replicas=1)
class Counter:
    def __init__(self, start: int) -> None:
        self.count = start

    def __call__(self, request):
        self.count += 1
        return {"count": self.count}

    def incr(self, n: int) -> int:
        self.count += n
        return self.count


def test_function_deployment_under_its_name(serve_url):
    serve.start()  # already running: a no-op
    model.deploy()
    r = requests.get(f"{serve_url}/model", params={"query": "hello"}, timeout=T)
    assert r.json() == {"answer": "HELLO"}
    assert "model" in serve.list_deployments()
    model.delete()
    assert "model" not in serve.list_deployments()


def test_class_deployment_handle_works_with_fedexec_get(serve_url):
    Counter.deploy(10)
    handle = Counter.get_handle()
    ref = handle.incr.remote(5)
    assert isinstance(ref, fedexec.ObjectRef)
    assert fedexec.get(ref) == 15
    assert fedexec.get([handle.incr.remote(1), handle.incr.remote(1)]) in ([16, 17], [17, 16])
    assert requests.get(f"{serve_url}/counter", timeout=T).json() == {"count": 18}
    found = serve.get_deployment("Counter")
    assert found.name == "Counter" and found.num_replicas == 1
    assert found.route_prefix == "/counter"
    Counter.delete()
