"""What a whole native cluster runs and holds, for ``fedexec status`` and
``fedexec list``: asked of one node, which asks every other node over the peer
links (a GATHER request) and answers with each node's view.

Every row carries the ``node_id`` it came from. A node that is dead, or that does
not answer within ``timeout`` seconds, is not silently left out: ``cluster_status``
marks it in its node entry and in ``"missing"``, and ``list_state`` names it in the
returned rows' ``missing`` mapping.

    >>> cluster_status("auto")["store"]["used_bytes"]          # all nodes together
    >>> [r["node_id"] for r in list_state("objects", "auto")]  # where each one is
"""

from __future__ import annotations

import time
from typing import Any

from ...exceptions import ClusterUnreachableError, FedexecError
from . import cluster
from .protocol import (
    Call,
    FrameReader,
    Op,
    client_handshake,
    decode_error,
    describe_error,
    pack_frame,
)

__all__ = ["KINDS", "StateRows", "cluster_status", "list_state", "report_autoscaler"]

#: What ``list_state`` lists.
KINDS = ("nodes", "tasks", "actors", "objects", "placement_groups", "metrics", "task_counts",
         "node_events")

_STORE_SUMS = ("used_bytes", "capacity", "num_objects", "num_spilled", "spilled_bytes")


class StateRows(list[dict[str, Any]]):
    """Rows (``dict``s) of ``list_state``, plus ``missing``: ``{node_id: reason}``
    for the nodes whose rows are not there (dead, or no answer in time)."""

    def __init__(self, rows: list[dict[str, Any]], missing: dict[str, str] | None = None):
        super().__init__(rows)
        self.missing: dict[str, str] = dict(missing or {})


class _Session:
    """One authenticated connection to a node manager, asked one request at a time."""

    def __init__(self, address: str, token: str | None, timeout: float):
        resolved = cluster.resolve(address, token)
        self._sock = cluster.connect(resolved["target"], timeout=timeout)
        try:
            client_handshake(self._sock, resolved["token"], timeout)
        except BaseException:
            self._sock.close()
            raise
        self._reader = FrameReader()
        self._next = 0

    def request(self, call: Call, *args: Any, timeout: float) -> Any:
        self._next += 1
        req = self._next
        self._sock.sendall(pack_frame([[Op.REQUEST, req, int(call), list(args)]]))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FedexecError(f"the node manager did not answer {call.name} within "
                                   f"{timeout:g} s")
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                raise ClusterUnreachableError("the node manager closed the connection "
                                              "(did the cluster stop?)")
            for frame in self._reader.feed(data):
                for msg in frame:
                    if msg[0] == Op.REPLY and msg[1] == req:
                        return _unwrap(msg[2], msg[3])

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unwrap(ok: bool, value: Any) -> Any:
    if ok:
        return value
    raise decode_error(value)


def _gather(session: _Session, call: Call, args: list[Any], timeout: float
            ) -> dict[str, list[Any]]:
    """``{node_id: [ok, value or reason]}`` from every node of the cluster."""
    return dict(session.request(Call.GATHER, int(call), args, timeout,
                                timeout=timeout + 30.0))


def cluster_status(address: str = "auto", token: str | None = None,
                   timeout: float = 5.0) -> dict[str, Any]:
    """The cluster's state, every node's included (each node answers within
    ``timeout`` seconds, or is reported unreachable).

    Returns ``nodes`` (one entry per node: ``node_id``, ``address``, ``alive``,
    ``is_head``, ``resources``, ``available``, ``state`` ("alive", "dead" or
    "unreachable"), and when it answered ``tasks``, ``queued_tasks``, ``actors``,
    ``objects``, ``workers``, ``store``, ``host``: the machine's ``cpu_percent``,
    ``memory_used`` and ``memory_total``, ``queued_shapes``: ``[[demand, count], ...]``
    of the work queued there for resources, ``pending_groups``: ``[[bundles,
    strategy, name], ...]`` of the placement groups it waits to place,
    ``pending_actors``: the actors waiting there for a node to host them, each
    ``{actor_id, class_name, name, shape, waits_for, reason, calls, since}``, see
    ``pending_actors.py``), ``autoscaler``: the last round an autoscaler monitor
    reported to it, if any: ``{cluster_name, decisions, age, stale}``), the totals
    over the nodes that answered
    (``tasks``, ``queued_tasks``, ``actors``, ``objects``, ``workers``, ``store``:
    ``used_bytes``, ``capacity``, ``num_objects``, ``num_spilled``,
    ``spilled_bytes``), ``total`` and ``available`` resources, and ``missing``
    (``{node_id: reason}`` for the nodes counted in no total). ``tasks`` counts
    each task once, on the node that runs or queues it; ``objects`` counts the
    objects each node tracks (one held on two nodes counts twice).
    """
    with _Session(address, token, timeout + 30.0) as session:
        nodes = list(session.request(Call.NODES, timeout=timeout + 30.0))
        total = dict(session.request(Call.CLUSTER_RESOURCES, timeout=timeout + 30.0))
        available = dict(session.request(Call.AVAILABLE_RESOURCES, timeout=timeout + 30.0))
        answers = _gather(session, Call.STATS, [], timeout)
    sums = {"tasks": 0, "queued_tasks": 0, "actors": 0, "objects": 0, "workers": 0}
    store: dict[str, int] = dict.fromkeys(_STORE_SUMS, 0)
    missing: dict[str, str] = {}
    entries = []
    for node in nodes:
        entry = dict(node)
        ok, value = answers.get(node["node_id"], [False, "it was not asked (it joined "
                                                         "meanwhile)"])
        if not ok:
            entry["state"] = "dead" if not node["alive"] else "unreachable"
            missing[node["node_id"]] = describe_error(value)
            entries.append(entry)
            continue
        entry["state"] = "alive"
        entry.update(tasks=value["tasks"] - value.get("forwarded", 0),
                     queued_tasks=value["queued"], actors=value.get("actors", 0),
                     objects=value["objects"], workers=len(value["workers"]),
                     store=dict(value["store"]), host=dict(value.get("host") or {}),
                     queued_shapes=[[dict(d), n] for d, n in value.get("queued_shapes", [])],
                     pending_groups=list(value.get("pending_groups", [])),
                     pending_actors=list(value.get("pending_actors", [])))
        if value.get("autoscaler") is not None:
            entry["autoscaler"] = dict(value["autoscaler"])
        for key in sums:
            sums[key] += entry[key]
        for key in _STORE_SUMS:
            store[key] += int(value["store"].get(key) or 0)
        entries.append(entry)
    return {"nodes": entries, "total": total, "available": available, **sums,
            "store": store, "missing": missing}


def report_autoscaler(report: dict[str, Any], address: str = "auto",
                      token: str | None = None, timeout: float = 5.0) -> dict[str, str]:
    """Give every node an autoscaler monitor's round (``AUTOSCALER_REPORT``: the
    node types it may launch, for how long, and its decisions with their reasons;
    see ``pending_actors.py``). Returns ``{node_id: why}`` for the nodes that did
    not take it."""
    with _Session(address, token, timeout + 30.0) as session:
        answers = _gather(session, Call.AUTOSCALER_REPORT, [report], timeout)
    return {node_id: describe_error(value) for node_id, (ok, value) in answers.items()
            if not ok}


def _one_row_per_task(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A task forwarded to another node is listed there (where it runs), not also
    as FORWARDED on its origin (unless the other node does not list it yet); one
    that runs again (a retry) is not also listed as ended by the head."""
    live = {r["task_id"] for r in rows if "end_time" not in r and r.get("state") != "FORWARDED"}
    rows = [r for r in rows if "end_time" not in r or r["task_id"] not in live]
    elsewhere = {r["task_id"] for r in rows if r.get("state") != "FORWARDED"}
    return [r for r in rows if r.get("state") != "FORWARDED" or r["task_id"] not in elsewhere]


def _one_row_each(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """An actor or placement group its node lists is not also listed from the head's
    event log (rows with a ``time``: it keeps those whose node is gone, and the dead
    or removed ones)."""
    live = {r[key] for r in rows if "time" not in r}
    return [r for r in rows if "time" not in r or r[key] not in live]


def list_state(kind: str, address: str = "auto", token: str | None = None,
               timeout: float = 5.0) -> StateRows:
    """Every node's ``kind`` rows ("nodes", "tasks", "actors", "objects",
    "placement_groups" or "metrics": user-metric rows, see ``fedexec.metrics``), each
    with the ``node_id`` it is on, as a :class:`StateRows`. Tasks include those that
    ended (state FINISHED or FAILED, with ``end_time``: the head keeps the last
    ``max_finished_tasks``), actors those whose node is gone; "task_counts" are the
    head's counts of every ended task by name and state (evicted ones included),
    "node_events" its last node transitions. ``.missing`` names the nodes that are
    dead or did not answer within ``timeout`` seconds.
    ``ValueError`` for another ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"cannot list {kind!r}; choose one of {', '.join(KINDS)}")
    with _Session(address, token, timeout + 30.0) as session:
        if kind == "nodes":
            return StateRows(list(session.request(Call.NODES, timeout=timeout + 30.0)))
        answers = _gather(session, Call.LIST, [kind], timeout)
    rows: list[dict[str, Any]] = []
    missing: dict[str, str] = {}
    for node_id, (ok, value) in sorted(answers.items()):
        if not ok:
            missing[node_id] = describe_error(value)
            continue
        rows.extend({"node_id": node_id, **row} for row in value)
    if kind == "tasks":
        rows = _one_row_per_task(rows)
    elif kind == "actors":
        rows = _one_row_each(rows, "actor_id")
    elif kind == "placement_groups":
        rows = _one_row_each(rows, "placement_group_id")
    return StateRows(rows, missing)
