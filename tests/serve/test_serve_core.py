"""Deployments, handles, the controller and the HTTP proxy, end to end on loopback."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import requests
from starlette.responses import JSONResponse, PlainTextResponse

import fedexec
from fedexec import serve

T = 30


@serve.deployment(num_replicas=2)
class Echo:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    async def __call__(self, request):
        body = await request.body()
        return {"greeting": self.greeting, "query": dict(request.query_params),
                "header": request.headers.get("x-test"), "method": request.method,
                "body": body.decode(), "path": request.url.path, "pid": os.getpid()}

    def hello(self, name: str) -> str:
        return f"{self.greeting} {name}"

    def pid(self) -> int:
        return os.getpid()


@serve.deployment
def text(request):
    kind = request.query_params.get("kind", "text")
    if kind == "bytes":
        return b"\x00\x01"
    if kind == "status":
        return JSONResponse({"created": True}, status_code=201)
    if kind == "plain":
        return PlainTextResponse("teapot", status_code=418)
    if kind == "raise":
        raise ValueError("bad kind, pass kind=text")
    return "hello"


@pytest.mark.requires("actor_processes")  # replicas in processes of their own
def test_http_end_to_end_with_distinct_replica_processes(serve_url):
    serve.run(Echo.bind("hi"), name="echo", route_prefix="/echo")
    r = requests.post(f"{serve_url}/echo/sub?x=1&y=two", data=b"payload",
                      headers={"x-test": "yes"}, timeout=T)
    assert r.status_code == 200
    got = r.json()
    assert got["greeting"] == "hi" and got["query"] == {"x": "1", "y": "two"}
    assert got["header"] == "yes" and got["method"] == "POST" and got["body"] == "payload"
    assert got["path"] == "/echo/sub"
    pids = {requests.get(f"{serve_url}/echo", timeout=T).json()["pid"] for _ in range(40)}
    assert len(pids) == 2 and os.getpid() not in pids
    assert pids == set(serve.api._replica_pids("Echo", "echo"))
    serve.delete("echo")


def test_response_kinds_and_user_errors(serve_url):
    serve.run(text.bind(), name="text", route_prefix="/text")
    r = requests.get(f"{serve_url}/text", timeout=T)
    assert (r.status_code, r.text) == (200, "hello")
    assert r.headers["content-type"].startswith("text/plain")
    r = requests.get(f"{serve_url}/text?kind=bytes", timeout=T)
    assert r.content == b"\x00\x01"
    r = requests.get(f"{serve_url}/text?kind=status", timeout=T)
    assert (r.status_code, r.json()) == (201, {"created": True})
    assert requests.get(f"{serve_url}/text?kind=plain", timeout=T).status_code == 418
    r = requests.get(f"{serve_url}/text?kind=raise", timeout=T)
    assert r.status_code == 500 and "bad kind, pass kind=text" in r.text
    assert "ValueError" in r.text
    assert requests.get(f"{serve_url}/text", timeout=T).text == "hello"  # still serving
    serve.delete("text")


def test_longest_prefix_routing_and_builtin_endpoints(serve_url):
    serve.run(Echo.options(num_replicas=1).bind("outer"), name="outer", route_prefix="/a")
    serve.run(Echo.options(num_replicas=1).bind("inner"), name="inner", route_prefix="/a/b")
    assert requests.get(f"{serve_url}/a/b/c", timeout=T).json()["greeting"] == "inner"
    assert requests.get(f"{serve_url}/a/bc", timeout=T).json()["greeting"] == "outer"
    assert requests.get(f"{serve_url}/a", timeout=T).json()["greeting"] == "outer"
    r = requests.get(f"{serve_url}/zzz", timeout=T)
    assert r.status_code == 404 and "/a/b" in r.text
    assert requests.get(f"{serve_url}/-/healthz", timeout=T).text == "success"
    assert requests.get(f"{serve_url}/-/routes", timeout=T).json() == {"/a": "outer",
                                                                        "/a/b": "inner"}
    metrics = requests.get(f"{serve_url}/-/metrics", timeout=T).text
    assert 'fedexec_serve_requests_total{code="200",route="/a/b"}' in metrics
    assert "fedexec_serve_request_latency_seconds_bucket" in metrics
    assert 'fedexec_serve_replicas{deployment="inner#Echo"} 1.0' in metrics
    serve.delete("outer")
    serve.delete("inner")


@serve.deployment
class Adder:
    def __init__(self, n: int) -> None:
        self.n = n

    def add(self, x: int) -> int:
        return x + self.n

    async def __call__(self, x: int) -> int:
        await asyncio.sleep(0)
        return x * 10


@serve.deployment
class Composer:
    def __init__(self, adder) -> None:
        self.adder = adder

    async def __call__(self, request):
        x = int(request.query_params["x"])
        first = self.adder.add.remote(x)
        return {"value": await self.adder.remote(first)}  # chained: no await in between

    def via_handle(self, x: int):
        return self.adder.add.remote(x).result(timeout_s=T)


def test_composition_handles_and_chaining(serve_url):
    handle = serve.run(Composer.bind(Adder.bind(5)), name="comp", route_prefix="/comp")
    assert requests.get(f"{serve_url}/comp?x=1", timeout=T).json() == {"value": 60}
    assert handle.via_handle.remote(2).result(timeout_s=T) == 7
    adder = serve.get_deployment_handle("Adder", app_name="comp")
    assert adder.remote(adder.add.remote(1)).result(timeout_s=T) == 60

    async def from_async():
        return await adder.add.remote(3)

    assert asyncio.run(from_async()) == 8
    assert serve.get_app_handle("comp").via_handle.remote(0).result(timeout_s=T) == 5
    st = serve.status().applications["comp"]
    assert st.status == "RUNNING"
    assert st.deployments["Adder"].status == "HEALTHY"
    assert st.deployments["Adder"].replica_states == {"RUNNING": 1}
    serve.delete("comp")


@serve.deployment(user_config={"factor": 2})
class Scaled:
    def __init__(self) -> None:
        self.factor = 0

    def reconfigure(self, config) -> None:
        self.factor = config["factor"]

    def __call__(self, x: int):
        return {"value": x * self.factor, "pid": os.getpid()}


def test_user_config_reconfigures_in_place(serve_url):
    h = serve.run(Scaled.bind(), name="cfg", route_prefix=None)
    first = h.remote(3).result(timeout_s=T)
    assert first["value"] == 6
    h = serve.run(Scaled.options(user_config={"factor": 5}).bind(), name="cfg",
                  route_prefix=None)
    second = h.remote(3).result(timeout_s=T)
    assert second == {"value": 15, "pid": first["pid"]}  # same replica, new config
    serve.delete("cfg")


@serve.deployment(max_ongoing_requests=1)
class Slow:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    async def __call__(self, request):
        seconds = float(request.query_params.get("s", "0.2"))
        marker = os.path.join(self.directory, f"{os.getpid()}-{time.monotonic_ns()}")
        open(marker, "w").close()
        running = len(os.listdir(self.directory))
        await asyncio.sleep(seconds)
        os.remove(marker)
        return {"running": running, "pid": os.getpid()}


def test_max_ongoing_requests_queues_and_503_on_timeout(serve_url, tmp_path):
    serve.run(Slow.bind(str(tmp_path)), name="slow", route_prefix="/slow")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: requests.get(f"{serve_url}/slow", timeout=T).json(),
                                range(4)))
    assert all(a["running"] == 1 for a in answers)  # never two at once on the replica
    with ThreadPoolExecutor(2) as pool:
        long = pool.submit(requests.get, f"{serve_url}/slow?s=6", timeout=T)
        time.sleep(0.5)
        blocked = requests.get(f"{serve_url}/slow", timeout=T)
        assert blocked.status_code == 503
        assert "could take the request within 3" in blocked.text
        assert long.result().status_code == 200
    serve.delete("slow")


def test_bad_input_errors(serve_url):
    with pytest.raises(TypeError, match=r"call \.bind\(\)"):
        serve.run(Echo)
    with pytest.raises(TypeError, match="unknown deployment option 'num_replica'"):
        serve.deployment(num_replica=2)
    with pytest.raises(ValueError, match="route_prefix must"):
        Echo.options(route_prefix="nope")
    with pytest.raises(serve.DeploymentNotFoundError, match="no application 'missing'"):
        serve.get_app_handle("missing")
    with pytest.raises(TypeError, match="cannot be called directly"):
        Echo("x")

    @serve.deployment
    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("model file missing")

    with pytest.raises(serve.DeploymentFailedError, match="model file missing"):
        serve.run(Broken.bind(), name="broken", route_prefix="/broken")
    serve.delete("broken")
    with pytest.raises(ValueError, match="already used by application"):
        serve.run(text.bind(), name="t1", route_prefix="/dup")
        serve.run(text.bind(), name="t2", route_prefix="/dup")
    serve.delete("t1")


def test_handle_errors_are_the_users_exception(serve_url):
    h = serve.run(Echo.options(num_replicas=1).bind("x"), name="errs", route_prefix=None)
    with pytest.raises(TypeError):
        h.hello.remote().result(timeout_s=T)  # missing argument
    with pytest.raises(fedexec.TaskError):
        h.nope.remote().result(timeout_s=T)
    serve.delete("errs")


def _call_from_task(x: int) -> int:
    return serve.get_deployment_handle("Adder", app_name="anywhere").add.remote(x).result(
        timeout_s=T)


class _Caller:
    def call(self, x: int) -> int:
        return _call_from_task(x)


def test_handles_work_from_tasks_and_actors(serve_url):
    from fedexec.serve import _context

    serve.run(Adder.bind(100), name="anywhere", route_prefix=None)
    ex = _context.executor()
    assert ex.submit(_call_from_task, 1).result(T) == 101
    actor = ex.actor(_Caller)
    assert actor.call.remote(2).result(T) == 102
    handle = serve.get_deployment_handle("Adder", app_name="anywhere")
    assert ex.submit(lambda h: h.add.remote(3).result(timeout_s=T), handle).result(T) == 103
    ex.kill(actor)
    serve.delete("anywhere")


@serve.deployment
class Context:
    def sync_node(self) -> str:
        return fedexec.get_runtime_context().get_node_id()

    async def async_node(self) -> str:
        return fedexec.get_runtime_context().get_node_id()

    def sync_task(self) -> int:  # a task submitted from a sync handler
        return fedexec.get(fedexec.remote(lambda: 41 + 1).remote(), timeout=T)


def test_sync_handlers_run_in_the_replicas_runtime(serve_url):
    from fedexec.serve import _context

    h = serve.run(Context.bind(), name="ctx", route_prefix=None)
    nodes = {n["node_id"] for n in _context.executor().nodes()}
    assert h.async_node.remote().result(timeout_s=T) in nodes
    assert h.sync_node.remote().result(timeout_s=T) in nodes
    assert h.sync_task.remote().result(timeout_s=T) == 42
    serve.delete("ctx")


@serve.deployment
class Producer:
    async def make(self, n: int) -> bytes:
        await asyncio.sleep(0.3)  # still running when the response is passed on
        return b"x" * n

    async def slow(self, n: int) -> bytes:
        await asyncio.sleep(5)
        return b"x" * n

    async def broken(self, n: int) -> bytes:
        await asyncio.sleep(0.3)
        raise ValueError(f"no {n} bytes today")


@serve.deployment
class Consumer:
    def size(self, blob: bytes) -> int:
        return len(blob)


@pytest.mark.requires("worker_processes")  # counts the bytes this process reads
def test_chained_response_skips_the_caller(serve_url, monkeypatch):
    """A response passed to another call reaches the downstream replica without
    its bytes passing through the caller; an upstream error fails the chain."""
    from fedexec.serve import _wire

    serve.run(Producer.bind(), name="producer", route_prefix=None)
    serve.run(Consumer.bind(), name="consumer", route_prefix=None)
    producer = serve.get_deployment_handle("Producer", app_name="producer")
    consumer = serve.get_deployment_handle("Consumer", app_name="consumer")
    assert consumer.size.remote(b"warm").result(timeout_s=T) == 4
    received = []
    feed = _wire.FrameReader.feed

    def counting(self, data):  # every byte this process reads from replicas
        received.append(len(data))
        return feed(self, data)

    monkeypatch.setattr(_wire.FrameReader, "feed", counting)
    n = 8 << 20
    upstream = producer.make.remote(n)
    assert consumer.size.remote(upstream).result(timeout_s=T) == n
    assert sum(received) < n // 8, sum(received)
    assert upstream.result(timeout_s=T) == b"x" * n  # the caller may still ask for it
    with pytest.raises(Exception, match="no 5 bytes today"):
        consumer.size.remote(producer.broken.remote(5)).result(timeout_s=T)
    serve.delete("producer")
    serve.delete("consumer")


@pytest.mark.requires("actor_processes")  # kills a replica
@pytest.mark.timeout(90)
def test_chained_call_fails_when_the_upstream_replica_dies(serve_url):
    import signal

    serve.run(Producer.bind(), name="producer2", route_prefix=None)
    serve.run(Consumer.bind(), name="consumer2", route_prefix=None)
    producer = serve.get_deployment_handle("Producer", app_name="producer2")
    consumer = serve.get_deployment_handle("Consumer", app_name="consumer2")
    assert consumer.size.remote(producer.make.remote(3)).result(timeout_s=T) == 3
    victim = serve.api._replica_pids("Producer", "producer2")[0]
    chained = consumer.size.remote(producer.slow.remote(10))
    time.sleep(1.0)  # the value is held for the consumer, which waits for it
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(Exception, match=r"replica \S+ of producer2#Producer (died|is gone)"):
        chained.result(timeout_s=T)
    serve.delete("producer2")
    serve.delete("consumer2")
