"""Timing of authenticated GETs against the dashboard (benchmarks/dashboard.py and
head_scale.py)."""

from __future__ import annotations

import statistics
import time

import requests


def request_times(url: str, token: str, n: int) -> dict[str, float]:
    """GET ``url`` ``n`` times with the cluster token: p50 and p95 in ms (0.1 ms
    steps) and the size of the last answer; raises on an HTTP error."""
    auth = {"Authorization": f"Bearer {token}"}
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = requests.get(url, headers=auth, timeout=120)
        out.append(time.perf_counter() - t)
        r.raise_for_status()
    out.sort()
    return {"p50_ms": round(1000 * statistics.median(out), 1),
            "p95_ms": round(1000 * out[max(0, int(0.95 * len(out)) - 1)], 1),
            "bytes": len(r.content)}
