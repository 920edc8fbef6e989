"""The head and its dashboard with 100,000 finished tasks and 2,000 actors recorded
(issue 18, "Scale"): the head's resident memory, and the p95 answer time of every
``/api`` list, page and ``/metrics``.

    flock /tmp/fedexec-bench.lock .venv/bin/python benchmarks/head_scale.py

A 2-node ``fedexec.testing.Cluster`` runs ``--tasks`` real tasks (50 names); their
end events reach the head in batches (the head keeps the last
``max_finished_tasks`` in detail, counts all). 2,000 actor processes do not fit a
2-core machine, so the actors are recorded by a *simulated node*: a process that
joins the head over the real protocol (handshake, HELLO, heartbeats, answers to
the head's LIST/STATS requests) and sends the actor events a node would send, in
EVENTS batches of 1,000. Every request bypasses the dashboard's 1 s cache
(``cache_ttl=0``): each one asks the head, which asks every node (the worst case).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import time
from typing import Any

import psutil
import requests
from _http import request_times

from fedexec import dashboard
from fedexec.backends.native import state
from fedexec.backends.native.protocol import (
    Call,
    FrameReader,
    Op,
    client_handshake,
    pack_frame,
)
from fedexec.testing import Cluster

_STORE = {"used_bytes": 0, "capacity": 0, "num_objects": 0, "num_spilled": 0,
          "spilled_bytes": 0}
_STATS = {"objects": 0, "tasks": 0, "forwarded": 0, "actors": 0, "workers": {},
          "store": _STORE, "queued": 0, "queued_shapes": [], "pending_groups": [],
          "transfers": {}, "lineage": 0,
          "host": {"cpu_percent": 0.0, "memory_used": 0.0, "memory_total": 1.0}}


def _noop() -> int:
    return 1


def _simulated_node(address: str, token: str, actors: int, stop: Any) -> None:
    """Join the head as a node with no resources; record ``actors`` ALIVE actors."""
    host, _, port = address.rpartition(":")
    node_id = os.urandom(14).hex()
    sock = socket.create_connection((host, int(port)))
    client_handshake(sock, bytes.fromhex(token))
    sock.sendall(pack_frame([[Op.HELLO, "node", os.getpid(), node_id,
                              {"address": "", "total": {"CPU": 0.0}}]]))
    now = time.time()
    events = [["A", f"{node_id}{i:06x}", "Sim", f"sim_{i}" if i % 10 == 0 else "",
               "default", "ALIVE", "simjob", 10_000 + i, 0, now] for i in range(actors)]
    for start in range(0, actors, 1000):
        sock.sendall(pack_frame([[Op.EVENTS, events[start:start + 1000]]]))
    reader = FrameReader()
    sock.settimeout(0.2)
    while not stop.is_set():
        sock.sendall(pack_frame([[Op.HEARTBEAT, {"CPU": 0.0}, 0, {"CPU": 0.0}]]))
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not data:
            return
        out = []
        for frame in reader.feed(data):
            for msg in frame:
                if msg[0] == Op.REQUEST:
                    _, req, call, _args = msg
                    value: Any = {**_STATS, "node_id": node_id} if call == Call.STATS else []
                    out.append([Op.REPLY, req, True, value])
        if out:
            sock.sendall(pack_frame(out))



def _recorded(cluster: Cluster) -> int:
    rows = state.list_state("task_counts", cluster.address, cluster.token)
    return sum(r["count"] for r in rows if r["name"].startswith("done_"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--actors", type=int, default=2_000)
    ap.add_argument("--requests", type=int, default=20)
    args = ap.parse_args()
    with Cluster(head_num_cpus=1) as cluster:
        cluster.add_node(num_cpus=1)
        head = psutil.Process(cluster.head.pid)
        rss0 = head.memory_info().rss / 2**20
        board = dashboard.launch(head_address=cluster.address, token=cluster.token, port=0,
                                 head_pid=cluster.head.pid, cache_ttl=0.0)
        stop = multiprocessing.Event()
        sim = multiprocessing.Process(target=_simulated_node,
                                      args=(cluster.address, cluster.token, args.actors, stop))
        sim.start()
        try:
            with cluster.connect() as ex:
                t0 = time.perf_counter()
                for start in range(0, args.tasks, 5000):
                    refs = [ex.options(name=f"done_{i % 50}").submit(_noop)
                            for i in range(start, min(args.tasks, start + 5000))]
                    ex.wait(refs, timeout=600)
                    del refs
                run_s = time.perf_counter() - t0
                while _recorded(cluster) < args.tasks:
                    time.sleep(0.5)
                rss = head.memory_info().rss / 2**20
                cases = {
                    "/api/tasks?limit=100": "/api/tasks?limit=100",
                    "/api/tasks?limit=100&offset=9000": "/api/tasks?limit=100&offset=9000",
                    "/api/tasks?name=done_7&state=FINISHED": "/api/tasks?name=done_7&state="
                                                             "FINISHED&limit=100",
                    "/api/actors?limit=100": "/api/actors?limit=100",
                    "/api/actors?state=ALIVE&name=Sim": "/api/actors?state=ALIVE&name=Sim"
                                                        "&limit=100",
                    "/api/nodes": "/api/nodes",
                    "/api/objects": "/api/objects",
                    "/api/placement_groups": "/api/placement_groups",
                    "/api/jobs": "/api/jobs",
                    "/api/status": "/api/status",
                    "/tasks page": "/tasks?limit=100",
                    "/actors page": "/actors?limit=100",
                    "/ (cluster page)": "/",
                    "/metrics": "/metrics",
                }
                results = {name: request_times(board["url"] + path, cluster.token, args.requests)
                           for name, path in cases.items()}
                auth = {"Authorization": f"Bearer {cluster.token}"}
                listed = {k: requests.get(f"{board['url']}/api/{k}?limit=1", headers=auth,
                                          timeout=120).json()["total"]
                          for k in ("tasks", "actors")}
                t = time.perf_counter()
                counts = state.list_state("task_counts", cluster.address, cluster.token)
                summary_ms = 1000 * (time.perf_counter() - t)
                rss_end = head.memory_info().rss / 2**20
        finally:
            stop.set()
            sim.join(10)
            dashboard.stop(board["pid"])
    print(json.dumps({
        "tasks_run": args.tasks, "run_s": round(run_s, 1), "actors_recorded": args.actors,
        "listed_totals": listed,
        "finished_counted": sum(r["count"] for r in counts if r["name"].startswith("done_")),
        "task_counts_ms": round(summary_ms, 1),
        "head_rss_mib": {"start": round(rss0), "after_tasks": round(rss),
                         "end": round(rss_end)},
        "requests": results, "load": psutil.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
