"""An in-process time series of a few cluster numbers, sampled by a background
thread of the dashboard, so a chart needs no Prometheus: the last ``keep``
samples, each ``(unix time, {series: value})``, and an inline-SVG line chart."""

from __future__ import annotations

import collections
import html
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["SERIES", "TimeSeries", "sample_status", "svg_chart"]

#: What is sampled: name → (label, unit).
SERIES = {
    "cpu_used": ("CPUs in use", ""),
    "tasks": ("unfinished tasks", ""),
    "actors": ("actors", ""),
    "store_used_bytes": ("object store used", "bytes"),
    "memory_used_bytes": ("memory used (all nodes' machines)", "bytes"),
}


def sample_status(status: dict[str, Any]) -> dict[str, float]:
    """One sample of :data:`SERIES` from ``state.cluster_status``."""
    total, avail = status.get("total", {}), status.get("available", {})
    memory = sum(float((n.get("host") or {}).get("memory_used", 0.0))
                 for n in status.get("nodes", []))
    return {"cpu_used": float(total.get("CPU", 0.0)) - float(avail.get("CPU", 0.0)),
            "tasks": float(status.get("tasks", 0)), "actors": float(status.get("actors", 0)),
            "store_used_bytes": float(status.get("store", {}).get("used_bytes", 0)),
            "memory_used_bytes": memory}


class TimeSeries:
    """Samples of ``read()`` every ``interval`` seconds (the last ``keep``)."""

    def __init__(self, read: Callable[[], dict[str, float]], interval: float = 5.0,
                 keep: int = 720) -> None:
        self.read, self.interval = read, interval
        self.samples: collections.deque[tuple[float, dict[str, float]]] = \
            collections.deque(maxlen=keep)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error = ""

    def sample(self) -> None:
        try:
            self.samples.append((time.time(), self.read()))
            self.last_error = ""
        except Exception as exc:  # the head is busy or restarting: try again later
            self.last_error = f"{type(exc).__name__}: {exc}"

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.sample()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="fedexec-dashboard-series",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def points(self, name: str) -> list[tuple[float, float]]:
        return [(t, v[name]) for t, v in list(self.samples) if name in v]


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        from ..cli import format_bytes

        return format_bytes(value)
    return f"{value:g}"


def svg_chart(points: list[tuple[float, float]], label: str, unit: str = "",
              width: int = 480, height: int = 120) -> str:
    """A small line chart of ``points`` (time, value) as inline SVG."""
    title = html.escape(label)
    if not points:
        return (f'<svg class="chart" width="{width}" height="{height}" role="img">'
                f'<text x="8" y="20">{title}: no samples yet</text></svg>')
    t0, t1 = points[0][0], points[-1][0]
    peak = max(v for _, v in points)
    top = max(peak, 1e-9)
    pad = 24
    span = max(t1 - t0, 1e-9)

    def xy(t: float, v: float) -> str:
        x = pad + (t - t0) / span * (width - 2 * pad)
        y = height - pad - v / top * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(t, v) for t, v in points)
    now = points[-1][1]
    return (f'<svg class="chart" width="{width}" height="{height}" role="img" '
            f'aria-label="{title}">'
            f'<text x="{pad}" y="14">{title}: {html.escape(_fmt(now, unit))} '
            f'(max {html.escape(_fmt(peak, unit))}, {len(points)} samples, '
            f'{span:.0f} s)</text>'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
            'stroke="#999"/>'
            f'<polyline fill="none" stroke="#2563eb" stroke-width="2" points="{line}"/>'
            "</svg>")
