"""The proxy's Prometheus metrics (one registry per proxy process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class ProxyMetrics:
    """Requests, latency, errors; replicas and queue depth read at scrape time."""

    def __init__(self, gauges: Callable[[], dict[str, tuple[int, int]]]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.core import GaugeMetricFamily

        self.registry = CollectorRegistry()
        self.requests = Counter("fedexec_serve_requests", "HTTP requests answered",
                                ["route", "code"], registry=self.registry)
        self.errors = Counter("fedexec_serve_errors", "HTTP requests answered with 5xx",
                              ["route"], registry=self.registry)
        self.latency = Histogram(
            "fedexec_serve_request_latency_seconds", "HTTP request latency at the proxy",
            ["route"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                     5, 10))

        class _Live:
            def collect(self) -> Iterator[Any]:
                replicas = GaugeMetricFamily("fedexec_serve_replicas",
                                             "running replicas per deployment",
                                             labels=["deployment"])
                queued = GaugeMetricFamily("fedexec_serve_queue_depth",
                                           "requests in flight or queued at this proxy",
                                           labels=["deployment"])
                for key, (n, load) in gauges().items():
                    replicas.add_metric([key], n)
                    queued.add_metric([key], load)
                yield replicas
                yield queued

        self.registry.register(_Live())
        self._children: dict[tuple[str, int], Any] = {}

    def observe(self, route: str, code: int, seconds: float) -> None:
        child = self._children.get((route, code))
        if child is None:
            child = (self.requests.labels(route, str(code)), self.latency.labels(route),
                     self.errors.labels(route))
            self._children[(route, code)] = child
        child[0].inc()
        child[1].observe(seconds)
        if code >= 500:
            child[2].inc()

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
