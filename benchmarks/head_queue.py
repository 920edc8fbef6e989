"""The head's cost of queueing tasks that no node can run (a shape the autoscaler
may launch a node for), on a cluster of many simulated nodes.

Usage::

    python benchmarks/head_queue.py [--nodes 500] [--tasks 5000]

A real head (1 CPU) and ``--nodes`` fake nodes (``fedexec.autoscaler.fake_provider``,
{CPU: 4, sim: 1} each) joined over the node protocol; then ``--tasks`` tasks asking
8 CPUs (no node fits) are submitted, and ``nodes()`` is timed right after (it
answers once the head has placed every task) and five times more. Before the
"fits nowhere" cache in ``federation._best_remote`` each such task cost a pass over
every node.
"""

from __future__ import annotations

import argparse
import time

from fedexec.autoscaler.fake_provider import FakeProvider
from fedexec.autoscaler.providers import TAG_NODE_TYPE
from fedexec.testing import Cluster


def _noop() -> None:
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--tasks", type=int, default=5000)
    args = ap.parse_args()
    n, t = args.nodes, args.tasks
    with Cluster(head_num_cpus=1, heartbeat_interval=0.5, heartbeat_timeout=30.0) as cluster, \
            cluster.connect() as ex:
        provider = FakeProvider("head-queue", cluster.address, cluster.token)
        try:
            for start in range(0, n, 100):
                for _ in range(min(100, n - start)):
                    provider.create_node("sim4", {"CPU": 4, "sim": 1}, {},
                                         {TAG_NODE_TYPE: "sim4"})
                if not provider.wait_joined(120):
                    raise RuntimeError("fake nodes did not join within 120 s")
            while sum(x["alive"] for x in ex.nodes()) < n + 1:
                time.sleep(0.05)
            t0 = time.perf_counter()
            refs = [ex.options(num_cpus=8).submit(_noop) for _ in range(t)]
            submitted = time.perf_counter() - t0
            t0 = time.perf_counter()
            ex.nodes()
            first = time.perf_counter() - t0
            later = []
            for _ in range(5):
                t0 = time.perf_counter()
                ex.nodes()
                later.append(time.perf_counter() - t0)
            alive = sum(x["alive"] for x in ex.nodes())
            for ref in refs:
                ref.cancel()
        finally:
            provider.close()
    print("| nodes | queued tasks (fit no node) | submit s | first nodes() after, s "
          "| later nodes() max ms | nodes alive |")
    print("|---|---|---|---|---|---|")
    print(f"| {n} | {t} | {submitted:.2f} | {first:.2f} | {max(later) * 1000:.0f} | {alive} |")


if __name__ == "__main__":
    main()
