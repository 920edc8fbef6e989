"""``/metrics``: the cluster's state and the users' ``fedexec.metrics`` as
Prometheus text, from a registry of the dashboard's own (not the process-global
one), read from the head at scrape time.

Built in (``fedexec_`` prefix): ``tasks{state}`` (unfinished tasks),
``actors{state}``, per node ``node_alive``, ``node_resource_total{resource}``,
``node_resource_available{resource}``, ``node_cpu_percent``,
``node_memory_used_bytes``, ``node_memory_total_bytes``,
``object_store_used_bytes``, ``object_store_capacity_bytes``,
``object_store_objects``, ``object_store_spilled_objects``,
``object_store_spilled_bytes``, and ``state_unreadable{node_id}`` for a node that
did not answer; and from each node's own table: ``fedexec_tasks_run_total{outcome}``
(tasks that ran to an end on a worker: FINISHED or FAILED),
``fedexec_scheduling_latency_seconds`` and ``fedexec_task_duration_seconds``
(histograms). User metrics keep their names (a counter gets ``_total``) and tags
as labels.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ._source import HeadSource

__all__ = ["ClusterCollector", "make_registry", "render"]

_STORE = (("used_bytes", "object_store_used_bytes", "bytes in the object store"),
          ("capacity", "object_store_capacity_bytes", "the object store's capacity"),
          ("num_objects", "object_store_objects", "objects in the object store"),
          ("num_spilled", "object_store_spilled_objects", "objects spilled to disk"),
          ("spilled_bytes", "object_store_spilled_bytes", "bytes spilled to disk"))
_HOST = (("cpu_percent", "node_cpu_percent", "the node's machine: CPU use (%)"),
         ("memory_used", "node_memory_used_bytes", "the node's machine: memory used"),
         ("memory_total", "node_memory_total_bytes", "the node's machine: memory"))


def _by_state(name: str, doc: str, rows: list[dict[str, Any]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["state"])
    for st, n in sorted(Tally(str(r.get("state", "")) for r in rows).items()):
        family.add_metric([st], n)
    return family


class ClusterCollector:
    """A prometheus-client collector reading ``source`` on every scrape."""

    def __init__(self, source: HeadSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        missing: dict[str, str] = {}
        status = self.source.status()
        missing.update(status.get("missing", {}))
        yield from self._nodes(status)
        for kind, doc in (("tasks", "unfinished tasks by state"),
                          ("actors", "actors by state")):
            rows, gone = self.source.rows(kind)
            missing.update(gone)
            if kind == "tasks":  # not the ended ones the head keeps (see state.list_state)
                rows = [r for r in rows if "end_time" not in r]
            yield _by_state(f"fedexec_{kind}", doc, rows)
        user, gone = self.source.user_metrics()
        missing.update(gone)
        yield from user_families(user)
        unreadable = GaugeMetricFamily("fedexec_state_unreadable",
                                       "1 for a node whose state is missing from this "
                                       "scrape (dead or no answer)", labels=["node_id"])
        for node_id in sorted(missing):
            unreadable.add_metric([node_id], 1)
        yield unreadable

    @staticmethod
    def _nodes(status: dict[str, Any]) -> Iterator[Metric]:
        alive = GaugeMetricFamily("fedexec_node_alive", "1 if the node is alive",
                                  labels=["node_id"])
        total = GaugeMetricFamily("fedexec_node_resource_total", "resources of the node",
                                  labels=["node_id", "resource"])
        avail = GaugeMetricFamily("fedexec_node_resource_available",
                                  "resources of the node not in use",
                                  labels=["node_id", "resource"])
        store = {key: GaugeMetricFamily(f"fedexec_{name}", doc, labels=["node_id"])
                 for key, name, doc in _STORE}
        host = {key: GaugeMetricFamily(f"fedexec_{name}", doc, labels=["node_id"])
                for key, name, doc in _HOST}
        for node in status["nodes"]:
            nid = node["node_id"]
            alive.add_metric([nid], 1 if node.get("state") == "alive" else 0)
            for res, value in sorted((node.get("resources") or {}).items()):
                total.add_metric([nid, res], float(value))
            for res, value in sorted((node.get("available") or {}).items()):
                avail.add_metric([nid, res], float(value))
            for key, family in store.items():
                if "store" in node:
                    family.add_metric([nid], float(node["store"].get(key) or 0))
            for key, family in host.items():
                if key in (node.get("host") or {}):
                    family.add_metric([nid], float(node["host"][key]))
        yield alive
        yield total
        yield avail
        yield from store.values()
        yield from host.values()


def user_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    """``fedexec.metrics`` rows (merged) as metric families, one per name."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    for name, series in sorted(by_name.items()):
        kind, doc = series[0]["kind"], series[0]["description"] or name
        labels = sorted({k for r in series for k in r["tags"]})
        family: Metric
        if kind == "counter":
            family = CounterMetricFamily(name, doc, labels=labels)
        elif kind == "gauge":
            family = GaugeMetricFamily(name, doc, labels=labels)
        else:
            family = HistogramMetricFamily(name, doc, labels=labels)
        for r in series:
            if r["kind"] != kind:
                continue  # one name, two kinds: the first one seen is exported
            values = [r["tags"].get(k, "") for k in labels]
            if kind == "histogram":
                running, buckets = 0, []
                for bound, count in zip([*r["boundaries"], float("inf")], r["buckets"],
                                        strict=True):
                    running += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound),
                                    running))
                assert isinstance(family, HistogramMetricFamily)
                family.add_metric(values, buckets, r["sum"])
            else:
                assert isinstance(family, (CounterMetricFamily, GaugeMetricFamily))
                family.add_metric(values, r["value"])
        yield family


def make_registry(source: HeadSource) -> CollectorRegistry:
    """A registry of its own holding a :class:`ClusterCollector` of ``source``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(source))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry as Prometheus text."""
    return generate_latest(registry)
