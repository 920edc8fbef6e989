"""The monitor loop: read the head's pending demand and nodes, run the policy, apply
its plan through the provider, and log every decision with its reason.

    monitor = Monitor(config, provider, address, token)
    monitor.run(interval=5.0, stop=threading.Event())   # or monitor.step() per round

A round (:meth:`Monitor.step`) asks the head for ``cluster_status`` (queued
resource shapes, pending placement groups and actors waiting for a node, per node;
each node's resources)
and for the ``request_resources`` bundles, matches the cluster's nodes to
the provider's (by the ``TAG_NODE_ID`` tag), forgets nodes whose process died (so
they are replaced while demand remains), and applies :func:`~.policy.plan`.
Decisions go to the ``fedexec.autoscaler`` logger and to ``log_path`` (what
``fedexec monitor`` tails).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from .config import ClusterConfig
from .policy import Demand, NodeState, PlacementGroupDemand, Plan, plan
from .providers import TAG_NODE_ID, TAG_NODE_TYPE, TAG_STATUS, NodeProvider

__all__ = ["Monitor"]

log = logging.getLogger("fedexec.autoscaler")


def _steady(reason: str) -> str:
    """``reason`` without the idle time and backoff countdown, which change every round."""
    return re.sub(r", idle for [0-9.]+ (s|min)| \(next try in [0-9.]+ s\)", "", reason)


def _count(failures: int) -> str:
    return f"{failures} failed launch" + ("" if failures == 1 else "es")


class Monitor:
    """Scales the cluster at ``address`` with ``provider`` following ``config``.
    ``clock`` gives the time idle periods are measured in (``time.monotonic``).

    A node type whose launch fails (the provider tags the node ``failed: <why>``)
    is not launched again for ``backoff_base`` seconds, doubling with each failure
    in a row up to ``backoff_max``; a node of that type joining resets it. The
    failure and the wait are logged and shown in ``fedexec status``."""

    def __init__(self, config: ClusterConfig, provider: NodeProvider, address: str,
                 token: str | None, log_path: str | None = None,
                 clock: Callable[[], float] = time.monotonic, backoff_base: float = 5.0,
                 backoff_max: float = 300.0):
        self.config = config
        self.provider = provider
        self.address = address
        self.token = token
        self.log_path = log_path
        self.clock = clock
        self.idle_since: dict[str, float] = {}  # fedexec node id -> since when idle
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        #: node type -> [failed launches in a row, no launch before (clock), last why]
        self.failures: dict[str, list[Any]] = {}
        self.last_plan: Plan | None = None
        #: seconds the last round spent observing the head, planning, and applying
        self.timings: dict[str, float] = {}
        self._executor: Any = None  # to read request_resources (made when first needed)
        self._actor: Any = None  # the requests actor (see .requests)
        #: seconds a round's report of the node types stays valid for clients
        self.report_ttl = 60.0

    def _requested(self) -> list[dict[str, float]]:
        """Report the node types this monitor may launch (so clients queue work that
        fits one of them: see :mod:`.requests`) and return the bundles of the latest
        ``request_resources`` call."""
        from ..executor import Executor
        from .requests import requests_actor

        if self._executor is None or self._executor.is_shutdown:
            self._executor = Executor(address=self.address, token=self.token)
            self._actor = None
        if self._actor is None:
            self._actor = requests_actor(self._executor)
        try:
            return list(self._executor.get(
                self._actor.report.remote(self._shapes(), self.report_ttl), timeout=30))
        except Exception:
            self._actor = None  # made again next round (the head may have restarted)
            raise

    def _shapes(self) -> list[dict[str, float]]:
        """The resource shapes of the node types this monitor may launch."""
        return [dict(t.resources) for t in self.config.node_types.values()
                if t.max_workers > 0]

    def close(self) -> None:
        """Disconnect from the cluster (the monitor's own driver connection)."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
            self._actor = None

    def _log(self, line: str) -> None:
        log.info("%s", line)
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def _observe(self, now: float) -> tuple[Demand, list[NodeState], dict[str, str]]:
        """The demand, the nodes as the policy sees them, and fedexec node id ->
        provider id for the provider's running nodes."""
        from ..backends.native import state

        status = state.cluster_status(self.address, self.token)
        tasks: list[Mapping[str, float]] = []
        actors: list[Mapping[str, float]] = []
        groups: list[PlacementGroupDemand] = []
        alive: dict[str, dict[str, Any]] = {}
        for entry in status["nodes"]:
            if entry.get("state") != "alive":
                continue
            alive[entry["node_id"]] = entry
            for shape, count in entry.get("queued_shapes", []):
                tasks.extend([shape] * int(count))
            groups += [PlacementGroupDemand(bundles, strategy, name)
                       for bundles, strategy, name in entry.get("pending_groups", [])]
            # (an actor waiting for its placement group: the group is the demand)
            actors += [row["shape"] for row in entry.get("pending_actors", [])
                       if row.get("waits_for") == "node"]
        by_node: dict[str, str] = {}
        nodes: list[NodeState] = []
        for pid in self.provider.non_terminated_nodes():
            tags = self.provider.node_tags(pid)
            node_type = tags.get(TAG_NODE_TYPE, "")
            node_type_cfg = self.config.node_types.get(node_type)
            died = not getattr(self.provider, "node_alive", lambda _: True)(pid)
            launch = tags.get(TAG_STATUS, "")
            if node_type_cfg is None or died or launch.startswith("failed"):
                why = launch if launch.startswith("failed") else "its process is gone"
                self._log(f"forgetting node {tags.get(TAG_NODE_ID, pid)} ({node_type}): {why}")
                self.provider.terminate_node(pid)
                if launch.startswith("failed") and TAG_NODE_ID not in tags:
                    self._launch_failed(node_type, launch.partition(": ")[2], now)
                continue
            node_id = tags.get(TAG_NODE_ID)
            if node_id is None or node_id not in alive:  # not joined yet
                nodes.append(NodeState(pid, node_type, node_type_cfg.resources,
                                       launching=True))
                continue
            if self.failures.pop(node_type, None) is not None:
                self._log(f"node type {node_type} launches again: node {node_id} joined")
            by_node[node_id] = pid
        for node_id, entry in alive.items():
            total, free = dict(entry["resources"]), dict(entry["available"])
            busy = entry.get("tasks", 0) or entry.get("actors", 0) or any(
                free.get(k, 0.0) + 1e-9 < v for k, v in total.items())
            if busy:
                self.idle_since.pop(node_id, None)
            else:
                self.idle_since.setdefault(node_id, now)
            if entry.get("is_head"):
                nodes.append(NodeState(node_id, self.config.head_node_type, total, free,
                                       is_head=True))
            elif node_id in by_node:
                tags = self.provider.node_tags(by_node[node_id])
                nodes.append(NodeState(node_id, tags[TAG_NODE_TYPE], total, free,
                                       idle_since=self.idle_since.get(node_id)))
            # nodes not started by this autoscaler are left alone
        for gone in set(self.idle_since) - set(alive):
            del self.idle_since[gone]
        timeout = self.config.idle_timeout_minutes * 60.0
        if any(n.idle_since is not None and now - n.idle_since >= timeout for n in nodes):
            needed = self._needed_objects()
            nodes = [replace(n, needed_objects=needed.get(n.node_id, 0)) for n in nodes]
        demand = Demand(tasks=tasks, actors=actors, placement_groups=groups,
                        requested=self._requested())
        return demand, nodes, by_node

    def _launch_failed(self, node_type: str, why: str, now: float) -> None:
        """Count a failed launch of ``node_type`` and hold its launches back."""
        entry = self.failures.setdefault(node_type, [0, now, ""])
        entry[0] += 1
        wait = min(self.backoff_max, self.backoff_base * 2 ** (entry[0] - 1))
        entry[1], entry[2] = now + wait, why
        self._log(f"launching a {node_type} node failed ({_count(entry[0])} in a row): "
                  f"{why}; next try in {wait:g} s")

    def backoff(self, now: float) -> dict[str, str]:
        """``{node_type: why it launches nothing now}`` for the types backing off."""
        return {t: f"is backing off after {_count(n)} in a row (next try in "
                   f"{until - now:.0f} s): {why}"
                for t, (n, until, why) in sorted(self.failures.items()) if now < until}

    def _needed_objects(self) -> dict[str, int]:
        """Per node: objects in its store that queued or running tasks pin (asked only
        when some node is idle past the timeout)."""
        from ..backends.native import state

        counts: dict[str, int] = {}
        for row in state.list_state("objects", self.address, self.token):
            if row.get("where") == "shared memory" and row.get("pins", 0) > 0:
                counts[row["node_id"]] = counts.get(row["node_id"], 0) + 1
        return counts

    def step(self) -> Plan:
        """One round: observe, plan, apply; the plan."""
        now = self.clock()
        t0 = time.perf_counter()
        demand, nodes, by_node = self._observe(now)
        t1 = time.perf_counter()
        backoff = self.backoff(now)
        decided = plan(demand, nodes, self.config, now, backoff)
        t2 = time.perf_counter()
        for launch in decided.launches:
            self._log(launch.reason)
            t = self.config.node_types[launch.node_type]
            for _ in range(launch.count):
                self.provider.create_node(t.name, t.resources, t.node_config,
                                          {TAG_NODE_TYPE: t.name})
        for term in decided.terminations:
            self._log(term.reason)
            self.provider.terminate_node(by_node[term.node_id])
            self.idle_since.pop(term.node_id, None)
        before = {_steady(r) for r in self.last_plan.reasons()} if self.last_plan else set()
        for line in decided.kept + tuple(u.reason for u in decided.infeasible + decided.waiting):
            if _steady(line) not in before:  # log what changed, not every round
                self._log(line)
        self.last_plan = decided
        self.timings = {"observe": t1 - t0, "plan": t2 - t1, "apply": time.perf_counter() - t2}
        decisions = decided.reasons() + [f"node type {t} {why}" for t, why in backoff.items()]
        self._report(decisions)
        if self.log_path is not None:  # what `fedexec status` shows on this machine
            path = os.path.join(os.path.dirname(self.log_path), "status.json")
            with open(f"{path}.tmp", "w", encoding="utf-8") as f:
                json.dump({"time": time.time(), "cluster_name": self.config.cluster_name,
                           "decisions": decisions}, f)
            os.replace(f"{path}.tmp", path)
        return decided

    def _report(self, decisions: list[str]) -> None:
        """Give every node this round: the node types this monitor may launch (a node
        whose actor's node died lets it wait for one, see
        ``backends/native/pending_actors.py``) and the decisions, which ``fedexec
        status`` shows from the head wherever the monitor runs."""
        from ..backends.native import state

        state.report_autoscaler({"cluster_name": self.config.cluster_name,
                                 "shapes": self._shapes(),
                                 "ttl": self.report_ttl, "decisions": decisions,
                                 "time": time.time()}, self.address, self.token)

    def run(self, interval: float, stop: threading.Event) -> None:
        """Run :meth:`step` every ``interval`` seconds until ``stop`` is set; a round
        that fails is logged and the loop goes on."""
        self.report_ttl = max(60.0, 10 * interval)
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # the cluster may be restarting: try again
                self._log(f"round failed: {type(exc).__name__}: {exc}")
                if self._executor is not None:  # reconnect next round
                    with contextlib.suppress(Exception):
                        self.close()
            stop.wait(interval)
        self.close()

    def terminate_all(self) -> int:
        """Terminate every node the provider started; how many."""
        ids = self.provider.non_terminated_nodes()
        for pid in ids:
            self.provider.terminate_node(pid)
        return len(ids)
