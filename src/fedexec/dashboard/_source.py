"""What the dashboard shows, read from the head: the cluster-wide state queries of
``backends.native.state`` (the head asks every node over its peer links) and the
job agent's table, each cached for ``ttl`` seconds so a busy page or a scrape
storm costs the head at most one query per kind per ``ttl``."""

from __future__ import annotations

import threading
import time
from typing import Any

from .._metric_table import MetricTable
from ..backends.native import state
from ..exceptions import FedexecError

__all__ = ["KINDS", "HeadSource"]

#: What ``/api/<kind>`` lists.
KINDS = ("nodes", "tasks", "actors", "objects", "jobs", "placement_groups")


class HeadSource:
    """The head at ``address`` (``host:port``) with the cluster ``token``; its job
    agent at ``job_address`` (None: the cluster has no jobs)."""

    def __init__(self, address: str, token: str, job_address: str | None = None,
                 ttl: float = 1.0, timeout: float = 5.0) -> None:
        self.address, self.token, self.job_address = address, token, job_address
        self.ttl, self.timeout = ttl, timeout
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}

    def _cached(self, key: str, fetch: Any) -> Any:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
        value = fetch()
        with self._lock:
            self._cache[key] = (time.monotonic(), value)
        return value

    def rows(self, kind: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """``kind``'s rows over the whole cluster and ``{node_id or "jobs": why}``
        for what could not be read. ``ValueError`` for an unknown ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"no such list {kind!r}; choose one of {', '.join(KINDS)}")
        if kind == "jobs":
            return self._cached("jobs", self._jobs)
        return self._cached(kind, lambda: self._state(kind))

    def _state(self, kind: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
        rows = state.list_state(kind, self.address, self.token, timeout=self.timeout)
        return list(rows), dict(rows.missing)

    def _jobs(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        if not self.job_address:
            return [], {}
        from ..backends.native.jobs import JobClient

        try:
            with JobClient(self.job_address, self.token, timeout=self.timeout) as client:
                return [{k: v for k, v in job.items() if k != "working_dir"}
                        for job in client.list_jobs()], {}
        except (FedexecError, OSError) as exc:
            return [], {"jobs": f"the job agent at {self.job_address}: {exc}"}

    def status(self) -> dict[str, Any]:
        """``state.cluster_status`` of the cluster (cached)."""
        return self._cached("status", lambda: state.cluster_status(
            self.address, self.token, timeout=self.timeout))

    def user_metrics(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """``fedexec.metrics`` series, every node's table merged (cached)."""
        def fetch() -> tuple[list[dict[str, Any]], dict[str, str]]:
            rows = state.list_state("metrics", self.address, self.token, timeout=self.timeout)
            table = MetricTable(max_series=10**9)
            table.merge({k: v for k, v in r.items() if k != "node_id"} for r in rows)
            return table.rows(), dict(rows.missing)

        return self._cached("metrics", fetch)
