"""The dashboard under load: answer times of its API, pages and /metrics, and the
memory of the dashboard and head processes, with many tasks queued on a 2-node
cluster (issue 18, "Scale"; finished tasks are not kept by the nodes, so queued
ones are what a list has to carry).

    flock /tmp/fedexec-bench.lock .venv/bin/python benchmarks/dashboard.py --tasks 20000

Every request bypasses the dashboard's 1 s cache (``cache_ttl=0``): each one asks
the head, which asks every node (the worst case, not the usual one).
"""

from __future__ import annotations

import argparse
import json
import time

import psutil
import requests
from _http import request_times

from fedexec import dashboard
from fedexec.testing import Cluster


def _hold(seconds: float) -> int:
    time.sleep(seconds)
    return 1


def _noop() -> int:
    return 1



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--requests", type=int, default=20)
    args = ap.parse_args()
    with Cluster(head_num_cpus=1, resources={"gate": 1}) as cluster:
        cluster.add_node(num_cpus=1)
        board = dashboard.launch(head_address=cluster.address, token=cluster.token, port=0,
                                 head_pid=cluster.head.pid, cache_ttl=0.0)
        try:
            with cluster.connect() as ex:
                gate = ex.options(resources={"gate": 1}).submit(_hold, 600)
                time.sleep(2)
                t0 = time.perf_counter()
                queued = [ex.options(resources={"gate": 1}, name=f"queued_{i % 50}")
                          .submit(_noop) for i in range(args.tasks)]
                ex._backend.flush()
                submit_s = time.perf_counter() - t0
                time.sleep(3)
                cases = {
                    "/api/tasks?limit=100": "/api/tasks?limit=100",
                    "/api/tasks filtered": "/api/tasks?name=queued_7&state=QUEUED&limit=100",
                    "/api/nodes": "/api/nodes",
                    "/tasks page": "/tasks?limit=100",
                    "/ (cluster page)": "/",
                    "/metrics": "/metrics",
                }
                results = {name: request_times(board["url"] + path, cluster.token, args.requests)
                           for name, path in cases.items()}
                rss = {"dashboard_mib": psutil.Process(board["pid"]).memory_info().rss / 2**20,
                       "head_mib": psutil.Process(cluster.head.pid).memory_info().rss / 2**20}
                total = requests.get(board["url"] + "/api/tasks?limit=1", timeout=120, headers={
                    "Authorization": f"Bearer {cluster.token}"}).json()["total"]
                ex.cancel(gate, force=True)
                for f in queued:
                    ex.cancel(f)
        finally:
            dashboard.stop(board["pid"])
    print(json.dumps({"queued_tasks": args.tasks, "listed_total": total,
                      "submit_s": round(submit_s, 2), "rss": rss, "requests": results,
                      "load": psutil.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
