"""``request_resources``: ask the autoscaler for capacity ahead of demand.

The request is kept by a small detached actor on the head (name
:data:`ACTOR_NAME` in namespace :data:`NAMESPACE`, 0 CPUs), so it lives as long
as the cluster and any driver can set it; the monitor reads it every round.

The same actor holds the resource shapes of the node types the running monitor
may launch, which the monitor reports every round (``report`` on the actor): a client
asks for them (:func:`.advert.autoscaler_node_types`) before refusing work that fits no
current node, and lets it wait instead when a node type fits (a task queues; an
actor waits on the node its creator asked, ``backends/native/pending_actors.py``,
and is reported as demand). A report older than its time-to-live (the monitor
stopped) counts as no autoscaler.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ACTOR_NAME", "NAMESPACE", "read_requests", "request_resources",
           "requests_actor"]

from .advert import ACTOR_NAME, NAMESPACE


class _Requests:
    """The actor holding the latest request (a list of resource bundles)."""

    def __init__(self) -> None:
        self.bundles: list[dict[str, float]] = []
        self.shapes: list[dict[str, float]] = []
        self.reported: float | None = None  # time.monotonic() of the monitor's report
        self.ttl = 0.0

    def set(self, bundles: list[dict[str, float]]) -> None:
        self.bundles = bundles

    def get(self) -> list[dict[str, float]]:
        return self.bundles

    def report(self, shapes: list[dict[str, float]], ttl: float) -> list[dict[str, float]]:
        """The monitor's round: the node types it may launch, valid ``ttl`` seconds;
        returns the requested bundles."""
        self.shapes, self.reported, self.ttl = shapes, time.monotonic(), ttl
        return self.bundles

    def node_types(self) -> list[dict[str, float]] | None:
        """The shapes last reported, or None when no monitor reported recently."""
        if self.reported is None or time.monotonic() - self.reported > self.ttl:
            return None
        return self.shapes


def _executor(executor: Any) -> Any:
    if executor is not None:
        return executor
    import fedexec

    if not fedexec.is_initialized():
        raise RuntimeError("request_resources() needs a cluster: pass executor=, or call "
                           "fedexec.init(address=...) first")
    return fedexec.init(ignore_reinit_error=True)  # the existing default executor


def request_resources(num_cpus: int | None = None,
                      bundles: Sequence[Mapping[str, float]] | None = None, *,
                      executor: Any = None) -> None:
    """Ask the autoscaler to size the cluster so that, at once, ``num_cpus``
    1-CPU bundles and every bundle of ``bundles`` would fit on its nodes (busy or
    not), within the config's limits. Each call replaces the previous request;
    ``request_resources()`` withdraws it. ``executor``: a fedexec ``Executor``
    connected to the cluster (default: the one ``fedexec.init`` made).
    ``ValueError`` for a negative amount."""
    if num_cpus is not None and num_cpus < 0:
        raise ValueError(f"num_cpus must be >= 0, got {num_cpus}")
    wanted = [{"CPU": 1.0}] * int(num_cpus or 0)
    for b in bundles or ():
        if any(v < 0 for v in b.values()):
            raise ValueError(f"bundle {dict(b)} has a negative amount")
        wanted.append({k: float(v) for k, v in b.items()})
    ex = _executor(executor)
    ex.get(requests_actor(ex).set.remote(wanted))


def requests_actor(ex: Any) -> Any:
    """The requests actor on the head (made if there is none yet)."""
    import fedexec

    head = next((n["node_id"] for n in ex.nodes() if n.get("is_head")), None)
    opts: dict[str, Any] = {"name": ACTOR_NAME, "namespace": NAMESPACE,
                            "lifetime": "detached", "get_if_exists": True, "num_cpus": 0}
    if head is not None:
        opts["scheduling_strategy"] = fedexec.NodeAffinity(head, soft=True)
    return ex.options(**opts).actor(_Requests)


def read_requests(executor: Any) -> list[dict[str, float]]:
    """The bundles last requested ([] if none)."""
    try:
        actor = executor.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return []
    return list(executor.get(actor.get.remote(), timeout=30))
