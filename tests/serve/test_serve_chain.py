"""Composition: chained values are released as soon as nobody can ask for them,
and streamed responses pass through a composed deployment as they come."""

from __future__ import annotations

import asyncio
import gc
import os

import pytest
import requests

from _backend_support import poll_until
from fedexec import serve
from fedexec.serve import _wire

T = 60


@serve.deployment
class Source:
    async def make(self, n: int) -> bytes:
        await asyncio.sleep(0.3)  # still running when the response is passed on
        return b"x" * n

    async def numbers(self, n: int, fail_at: int = -1):
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"no number {i} today")
            await asyncio.sleep(0.01)
            yield i

    async def blobs(self, n: int, size: int):
        await asyncio.sleep(0.3)  # passed on before the first one comes
        for _ in range(n):
            yield b"x" * size

    async def count(self, n: int, gate: str):
        """Yield 0, then wait for ``gate`` (a file the test makes on reading 0)."""
        for i in range(n):
            yield i
            while i == 0 and not os.path.exists(gate):
                await asyncio.sleep(0.01)


@serve.deployment
class Sink:
    def size(self, blob: bytes) -> int:
        return len(blob)

    async def sizes(self, blobs) -> int:
        return sum([len(b) async for b in blobs])

    def total(self, numbers) -> int:
        return sum(numbers)  # a sync method iterating a chained stream

    async def scaled(self, numbers):
        async for i in numbers:
            yield i * 10


@serve.deployment
class Relay:
    """An ingress streaming what the upstream deployment streams."""

    def __init__(self, source) -> None:
        self.source = source

    async def __call__(self, request):
        n, gate = int(request.query_params["n"]), request.query_params["gate"]
        async for i in self.source.options(stream=True).count.remote(n, gate):
            yield f"{i}\n"

    async def relay(self, n: int, gate: str):
        async for i in self.source.options(stream=True).count.remote(n, gate):
            yield i * 10


def _held(app: str, name: str) -> int:
    """Values the replicas of deployment ``name`` still hold for chained calls."""
    from fedexec.serve import _client

    snap = _client.controller_handle().listen.remote(-1, 0).result(T)
    return sum(r["actor"].stats.remote().result(T)["held"]
               for r in snap["deployments"][f"{app}#{name}"]["replicas"])


def test_chained_values_are_released_once_used(serve_url):
    serve.run(Source.bind(), name="source", route_prefix=None)
    serve.run(Sink.bind(), name="sink", route_prefix=None)
    source = serve.get_deployment_handle("Source", app_name="source")
    sink = serve.get_deployment_handle("Sink", app_name="sink")
    n = 1 << 20
    # the caller drops the upstream response: nothing is left held once the chain ran
    assert sink.size.remote(source.make.remote(n)).result(timeout_s=T) == n
    gc.collect()
    assert poll_until(lambda: _held("source", "Source") == 0, timeout=10), \
        _held("source", "Source")
    # the caller keeps it: held for it until it asks or drops the response
    upstream = source.make.remote(n)
    assert sink.size.remote(upstream).result(timeout_s=T) == n
    assert _held("source", "Source") == 1
    del upstream
    gc.collect()
    assert poll_until(lambda: _held("source", "Source") == 0, timeout=10)
    kept = source.make.remote(n)
    assert sink.size.remote(kept).result(timeout_s=T) == n
    assert kept.result(timeout_s=T) == b"x" * n  # fetched: no longer held
    assert _held("source", "Source") == 0
    serve.delete("source")
    serve.delete("sink")


@pytest.mark.timeout(90)
def test_streaming_through_a_composed_deployment(serve_url, tmp_path):
    relay = serve.run(Relay.bind(Source.bind()), name="relay", route_prefix="/relay")
    gate = tmp_path / "http"
    with requests.get(f"{serve_url}/relay", params={"n": 4, "gate": str(gate)},
                      stream=True, timeout=T) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines) == b"0"  # before the upstream made the others
        gate.touch()
        assert list(lines) == [b"1", b"2", b"3"]
    gate = tmp_path / "handle"
    items = iter(relay.options(stream=True).relay.remote(3, str(gate)))
    assert next(items) == 0
    gate.touch()
    assert list(items) == [10, 20]
    serve.delete("relay")


def test_a_streamed_response_passed_on_streams_to_the_downstream_call(serve_url):
    serve.run(Source.bind(), name="source2", route_prefix=None)
    serve.run(Sink.bind(), name="sink2", route_prefix=None)
    source = serve.get_deployment_handle("Source", app_name="source2").options(stream=True)
    sink = serve.get_deployment_handle("Sink", app_name="sink2")
    assert sink.total.remote(source.numbers.remote(5)).result(timeout_s=T) == 10
    scaled = sink.options(stream=True).scaled.remote(source.numbers.remote(3))
    assert list(scaled) == [0, 10, 20]
    started = source.numbers.remote(5)
    assert next(iter(started)) == 0  # the caller read one: the rest goes on
    assert sink.total.remote(started).result(timeout_s=T) == 1 + 2 + 3 + 4
    with pytest.raises(serve.ServeError, match="passed on already"):
        sink.total.remote(started).result(timeout_s=T)
    with pytest.raises(Exception, match="no number 2 today"):
        sink.total.remote(source.numbers.remote(5, 2)).result(timeout_s=T)
    gc.collect()
    assert poll_until(lambda: _held("source2", "Source") == 0, timeout=10)
    serve.delete("source2")
    serve.delete("sink2")


@pytest.mark.requires("worker_processes")  # counts the bytes this process reads
def test_a_streamed_response_passed_on_skips_the_caller(serve_url, monkeypatch):
    serve.run(Source.bind(), name="source3", route_prefix=None)
    serve.run(Sink.bind(), name="sink3", route_prefix=None)
    source = serve.get_deployment_handle("Source", app_name="source3").options(stream=True)
    sink = serve.get_deployment_handle("Sink", app_name="sink3")
    received = []
    feed = _wire.FrameReader.feed

    def counting(self, data):  # every byte this process reads from replicas
        received.append(len(data))
        return feed(self, data)

    monkeypatch.setattr(_wire.FrameReader, "feed", counting)
    size = 2 << 20
    assert sink.sizes.remote(source.blobs.remote(4, size)).result(timeout_s=T) == 4 * size
    assert sum(received) < size // 4, sum(received)  # the items did not come here
    serve.delete("source3")
    serve.delete("sink3")
