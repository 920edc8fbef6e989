"""Aggregated user metrics (``fedexec.metrics``) as plain rows, merged the same way
in a recording process, on a node manager and on the head's dashboard.

A *row* is one series, a msgpack-able ``dict``::

    {"name": "jobs_done", "kind": "counter" | "gauge" | "histogram",
     "description": "...", "tags": {"k": "v"}, "updated": <unix seconds>,
     "value": float,                       # counter: a total (or a delta); gauge
     "boundaries": [..], "buckets": [..],  # histogram: counts per bucket (len + 1)
     "sum": float, "count": int}           # histogram

Merging a row adds a counter's value and a histogram's buckets/sum/count, and
keeps the newer of two gauge values. A process sends the rows it recorded since
its last flush (deltas); its node adds them into its table; the dashboard merges
every node's table into a fresh one. A table holds at most ``max_series`` series:
a new series past that is dropped and counted in ``dropped``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

__all__ = ["KINDS", "FixedHistogram", "MetricTable", "series_key"]

KINDS = ("counter", "gauge", "histogram")


def series_key(row: dict[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """What identifies a series: its name and its tags."""
    return str(row["name"]), tuple(sorted((str(k), str(v)) for k, v in row["tags"].items()))


class MetricTable:
    """Series by (name, tags); ``merge`` rows in, ``rows()`` out (copies)."""

    def __init__(self, max_series: int = 10_000) -> None:
        self.max_series = max_series
        self.dropped = 0
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._series)

    def merge(self, rows: Iterable[dict[str, Any]]) -> None:
        """Add ``rows`` in; a row whose kind or boundaries disagree with its series'
        (the same name registered twice differently) or that is malformed is dropped."""
        for row in rows:
            try:
                self._merge_one(row)
            except (KeyError, TypeError, ValueError):
                self.dropped += 1

    def _merge_one(self, row: dict[str, Any]) -> None:
        if row["kind"] not in KINDS:
            raise ValueError(row["kind"])
        key = series_key(row)
        have = self._series.get(key)
        if have is None:
            if len(self._series) >= self.max_series:
                raise ValueError("too many series")
            self._series[key] = _copy(row)
            return
        if have["kind"] != row["kind"]:
            raise ValueError("kind differs")
        updated = float(row.get("updated") or 0.0)
        if row["kind"] == "counter":
            have["value"] += float(row["value"])
        elif row["kind"] == "gauge":
            if updated >= have["updated"]:
                have["value"] = float(row["value"])
        else:
            if list(row["boundaries"]) != have["boundaries"]:
                raise ValueError("boundaries differ")
            counts = [int(c) for c in row["buckets"]]
            if len(counts) != len(have["buckets"]):
                raise ValueError("bucket count differs")
            have["buckets"] = [a + b for a, b in zip(have["buckets"], counts, strict=True)]
            have["sum"] += float(row["sum"])
            have["count"] += int(row["count"])
        have["updated"] = max(have["updated"], updated)

    def rows(self) -> list[dict[str, Any]]:
        """Every series, as rows (copies)."""
        return [_copy(r) for r in self._series.values()]

    def take(self) -> list[dict[str, Any]]:
        """Every series, and empty the table (a recorder's flush)."""
        rows = list(self._series.values())
        self._series = {}
        return rows


def _copy(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": str(row["name"]), "kind": row["kind"],
                           "description": str(row.get("description") or ""),
                           "tags": {str(k): str(v) for k, v in row["tags"].items()},
                           "updated": float(row.get("updated") or 0.0)}
    if row["kind"] == "histogram":
        out.update(boundaries=[float(b) for b in row["boundaries"]],
                   buckets=[int(c) for c in row["buckets"]], sum=float(row["sum"]),
                   count=int(row["count"]))
        if len(out["buckets"]) != len(out["boundaries"]) + 1:
            raise ValueError("a histogram has one bucket more than boundaries")
    else:
        out["value"] = float(row["value"])
    return out


class FixedHistogram:
    """A histogram counted in place (a node's own latencies: cheap enough for the
    scheduling path), read as one row."""

    __slots__ = ("boundaries", "buckets", "count", "description", "name", "sum")

    def __init__(self, name: str, description: str, boundaries: Iterable[float]) -> None:
        self.name, self.description = name, description
        self.boundaries = [float(b) for b in boundaries]
        self.buckets = [0] * (len(self.boundaries) + 1)
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(self.boundaries, value)] += 1
        self.sum += value
        self.count += 1

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "histogram", "description": self.description,
                "tags": {}, "updated": 0.0, "boundaries": list(self.boundaries),
                "buckets": list(self.buckets), "sum": self.sum, "count": self.count}
