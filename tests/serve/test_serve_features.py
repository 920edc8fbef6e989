"""Batching, streaming, autoscaling, and the replica's handshake."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from _backend_support import poll_until
from fedexec import serve

T = 60


@serve.deployment(max_ongoing_requests=50)
class Batched:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.2)
    async def double(self, xs: list[int]) -> list[int]:
        self.sizes.append(len(xs))
        return [2 * x for x in xs]

    async def __call__(self, request):
        return {"value": await self.double(int(request.query_params["x"]))}

    def batch_sizes(self) -> list[int]:
        return self.sizes


def test_batching_under_concurrency(serve_url):
    h = serve.run(Batched.bind(), name="batch", route_prefix="/batch")
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(
            lambda x: requests.get(f"{serve_url}/batch?x={x}", timeout=T).json()["value"],
            range(32)))
    assert got == [2 * x for x in range(32)]
    responses = [h.double.remote(x) for x in range(16)]  # handle calls batch too
    assert [r.result(timeout_s=T) for r in responses] == [2 * x for x in range(16)]
    sizes = h.batch_sizes.remote().result(timeout_s=T)
    assert sum(sizes) == 48 and max(sizes) <= 8
    assert max(sizes) > 1, sizes  # calls that arrived together went as one batch
    serve.delete("batch")


def test_batch_rejects_bad_use():
    with pytest.raises(TypeError, match="async"):
        serve.batch(lambda xs: xs)
    with pytest.raises(ValueError, match="max_batch_size"):
        serve.batch(max_batch_size=0)


@serve.deployment
class Streamer:
    def __call__(self, request):
        n = int(request.query_params.get("n", "3"))
        if request.query_params.get("kind") == "response":
            from starlette.responses import StreamingResponse

            async def parts():
                for i in range(n):
                    yield f"part{i},"

            return StreamingResponse(parts(), media_type="text/csv", status_code=206)
        return (f"chunk{i}\n" for i in range(n))

    async def numbers(self, n: int):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    def not_a_stream(self) -> int:
        return 1


def test_streaming_over_http_and_handles(serve_url):
    h = serve.run(Streamer.bind(), name="stream", route_prefix="/stream")
    with requests.get(f"{serve_url}/stream?n=4", stream=True, timeout=T) as r:
        assert r.headers.get("transfer-encoding") == "chunked"
        assert r.text == "chunk0\nchunk1\nchunk2\nchunk3\n"
    r = requests.get(f"{serve_url}/stream?n=3&kind=response", timeout=T)
    assert (r.status_code, r.text) == (206, "part0,part1,part2,")
    assert r.headers["content-type"].startswith("text/csv")
    assert list(h.options(stream=True).numbers.remote(5)) == [0, 1, 2, 3, 4]

    async def consume():
        return [i async for i in h.options(stream=True).numbers.remote(3)]

    assert asyncio.run(consume()) == [0, 1, 2]
    with pytest.raises(TypeError, match="not a generator"):
        list(h.options(stream=True).not_a_stream.remote())
    serve.delete("stream")


@serve.deployment(max_ongoing_requests=10, autoscaling_config={
    "min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2,
    "upscale_delay_s": 0.5, "downscale_delay_s": 1.0})
class Elastic:
    async def __call__(self, request):
        await asyncio.sleep(0.3)
        return f"{os.getpid()}:{id(self)}"  # this replica


def _replicas(app: str) -> int:
    return serve.status().applications[app].deployments["Elastic"].replica_states.get(
        "RUNNING", 0)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_autoscaling_up_under_load_and_down_after(serve_url):
    serve.run(Elastic.bind(), name="elastic", route_prefix="/elastic")
    assert _replicas("elastic") == 1
    stop = time.monotonic() + 30
    seen: list[int] = []

    def load() -> None:
        with requests.Session() as s:
            while time.monotonic() < stop and len(set(seen)) < 3:
                seen.append(s.get(f"{serve_url}/elastic", timeout=T).text)

    with ThreadPoolExecutor(8) as pool:  # 8 in flight / target 2 -> wants 4, capped at 3
        for _ in range(8):
            pool.submit(load)
        assert poll_until(lambda: _replicas("elastic") == 3, timeout=25)
    assert len(set(seen)) == 3
    assert poll_until(lambda: _replicas("elastic") == 1, timeout=30)
    serve.delete("elastic")


def test_autoscaling_policy_is_steady_under_steady_load():
    from fedexec.serve.autoscaling import AutoscalingConfig, AutoscalingPolicy

    p = AutoscalingPolicy(AutoscalingConfig(min_replicas=1, max_replicas=10,
                                            target_ongoing_requests=2, upscale_delay_s=1,
                                            downscale_delay_s=5))
    n, counts = 1, []
    for step in range(100):  # 10 s of a steady 7 requests in flight, 0.1 s apart
        n = p.decide(n, 7, step * 0.1)
        counts.append(n)
    assert counts[5] == 1 and counts[-1] == 4  # waited upscale_delay_s, then ceil(7/2)
    assert counts[counts.index(4):] == [4] * (100 - counts.index(4))  # no oscillation
    assert p.decide(4, 0, 10.0) == 4 and p.decide(4, 0, 14.9) == 4  # downscale delay
    assert p.decide(4, 0, 15.1) == 1
    with pytest.raises(ValueError, match="min_replicas <= max_replicas"):
        AutoscalingConfig(min_replicas=3, max_replicas=2)


@serve.deployment(health_check_period_s=0.3, health_check_timeout_s=5)
class Fragile:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def check_health(self) -> None:
        if os.path.exists(self.marker):
            os.remove(self.marker)
            raise RuntimeError("lost the model")

    def __call__(self, request):
        return f"{os.getpid()}:{id(self)}"  # this replica


@pytest.mark.timeout(60)
def test_replica_failing_its_health_check_is_replaced(serve_url, tmp_path):
    marker = str(tmp_path / "sick")
    serve.run(Fragile.bind(marker), name="fragile", route_prefix="/fragile")
    first = requests.get(f"{serve_url}/fragile", timeout=T).text
    open(marker, "w").close()
    assert poll_until(lambda: requests.get(f"{serve_url}/fragile", timeout=T).text
                      not in (first, None), timeout=30)
    assert "failed its health check: " in \
        serve.status().applications["fragile"].deployments["Fragile"].message
    serve.delete("fragile")


def test_replica_refuses_a_peer_without_the_secret(serve_url):
    serve.run(Streamer.bind(), name="auth", route_prefix="/auth")
    client = serve.api.get_client()

    def replicas():  # the client's snapshot follows the controller a moment later
        return client.snapshot.get("deployments", {}).get("auth#Streamer", {}).get("replicas")

    assert poll_until(replicas, timeout=T)
    info = replicas()[0]
    with socket.create_connection((info["host"], info["port"]), timeout=T) as s:
        greeting = s.recv(64)
        assert greeting.startswith(b"FXSV1")
        s.sendall(b"\x00" * 48 + b"garbage that must never be parsed")
        s.settimeout(T)
        assert s.recv(64) == b""  # closed without an answer
    assert requests.get(f"{serve_url}/auth?n=1", timeout=T).text == "chunk0\n"
    serve.delete("auth")
