"""Decision time of the autoscaler's scaling policy (issue #19, item 5).

Usage::

    python benchmarks/autoscaler.py [--nodes 1000] [--tasks 10000] [--rounds 20]
                                    [--seed 0] [--json out.json]

Times one round of ``fedexec.autoscaler.plan`` (pure: no processes) on simulated
clusters of ``--nodes`` worker nodes of four types and ``--tasks`` queued tasks of
mixed shapes (24 distinct shapes: CPU 0.5-8, some with GPU, memory or a custom
resource), plus 20 pending actors, 10 placement groups of each strategy and 50
``request_resources`` bundles. Scenarios:

- ``half-idle``: half the nodes are idle: demand fills them first, then launches
  new nodes (as many as ``upscaling_speed`` 1.0 allows at once: ~1,000); the rest
  is reported waiting.
- ``busy``: every node is busy; the demand launches new nodes (up to the same cap).
- ``capped``: every node is busy and the cluster is at ``max_workers``: nothing
  can launch, all demand is reported waiting.
- ``shrink``: no demand; half the nodes idle past the timeout (terminations).

Prints min / median / p95 milliseconds per round (target: <= 100 ms).

``--local N`` also measures, N times on a fresh ``fedexec.testing.Cluster`` (a 1-CPU
head) with a monitor (``local`` provider, 0.2 s rounds), the time from queueing 4
one-CPU tasks to the first launched node being alive at the head, and to the first
task finishing on it.

``--fake N`` measures full monitor rounds (``Monitor.step``: ask the head for its
status and every node's, report to the requests actor, plan, apply) against a real
head (a ``fedexec.testing.Cluster``, 1-CPU head, heartbeats every 0.5 s, declared dead
after 10 s of silence) with N simulated nodes of the
``fake`` provider joined to it (type ``sim4``: {CPU: 4, sim: 1}; the cluster is at
its ``max_workers`` N), ``--tasks`` tasks queued on the head that need a type of
node not launched yet (12 shapes needing ``big`` or GPU; they wait: the cluster
is at max_workers) and 50 ``request_resources`` bundles. Prints the time N nodes
took to join (in batches of 100) and per round: total, observe, plan, apply.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from fedexec.autoscaler import (
    ClusterConfig,
    Demand,
    NodeState,
    NodeTypeConfig,
    PlacementGroupDemand,
    plan,
)

TYPES = {
    "head": {"CPU": 4},
    "cpu4": {"CPU": 4, "memory": 16e9},
    "cpu16": {"CPU": 16, "memory": 64e9},
    "gpu1": {"CPU": 8, "GPU": 1, "memory": 32e9},
    "special": {"CPU": 4, "special": 2},
}
SHAPES = [{"CPU": c} for c in (0.5, 1, 2, 3, 4, 8)] + \
    [{"CPU": c, "memory": m} for c in (1, 2, 4) for m in (1e9, 4e9, 8e9)] + \
    [{"CPU": c, "GPU": g} for c in (1, 2, 4) for g in (0.5, 1)] + \
    [{"CPU": c, "special": 1} for c in (0.5, 1, 2)]


def config(max_workers: int) -> ClusterConfig:
    types = {n: NodeTypeConfig(n, r, 0, 0 if n == "head" else max_workers)
             for n, r in TYPES.items()}
    return ClusterConfig(node_types=types, head_node_type="head", max_workers=max_workers,
                         idle_timeout_minutes=5.0, upscaling_speed=1.0)


def cluster(rng: random.Random, n: int, idle_share: float) -> list[NodeState]:
    nodes = [NodeState("head", "head", TYPES["head"], {"CPU": 0}, is_head=True)]
    names = [t for t in TYPES if t != "head"]
    for i in range(n):
        t = names[i % len(names)]
        total = TYPES[t]
        idle = rng.random() < idle_share
        free = dict(total) if idle else {k: 0.0 for k in total}
        nodes.append(NodeState(f"n{i:04d}", t, total, free,
                               idle_since=0.0 if idle else None,
                               needed_objects=rng.choice([0, 0, 0, 1])))
    return nodes


def demand(rng: random.Random, tasks: int) -> Demand:
    pgs = [PlacementGroupDemand([rng.choice(SHAPES[:6]) for _ in range(rng.randint(1, 4))],
                                strategy, f"{strategy.lower()}{i}")
           for strategy in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
           for i in range(10)]
    return Demand(tasks=[rng.choice(SHAPES) for _ in range(tasks)],
                  actors=[rng.choice(SHAPES[:6]) for _ in range(20)],
                  placement_groups=pgs, requested=[{"CPU": 1}] * 50)


def scenarios(rng: random.Random, nodes: int, tasks: int):
    yield "half-idle", demand(rng, tasks), cluster(rng, nodes, 0.5), config(10 * nodes), 0.0
    yield "busy", demand(rng, tasks), cluster(rng, nodes, 0.0), config(10 * nodes), 0.0
    yield "capped", demand(rng, tasks), cluster(rng, nodes, 0.0), config(nodes), 0.0
    yield "shrink", Demand(), cluster(rng, nodes, 0.5), config(nodes), 3600.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--local", type=int, default=0, metavar="N",
                    help="also time demand -> ready local node, N times")
    ap.add_argument("--fake", type=int, default=0, metavar="N",
                    help="also time monitor rounds against a real head with N fake nodes")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    print(f"policy decision time per round: {args.nodes} nodes, {args.tasks} queued tasks\n")
    print("| scenario | launches | terminations | waiting items | infeasible items "
          "| min ms | median ms | p95 ms | median CPU ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, d, nodes, cfg, now in scenarios(rng, args.nodes, args.tasks):
        times, cpu = [], []
        for _ in range(args.rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            p = plan(d, nodes, cfg, now)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        times.sort()
        row = {"scenario": name, "launches": sum(p.launch_counts().values()),
               "terminations": len(p.terminations),
               "waiting": sum(u.count for u in p.waiting),
               "infeasible": sum(u.count for u in p.infeasible),
               "min_ms": times[0], "median_ms": statistics.median(times),
               "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
               "cpu_median_ms": statistics.median(cpu)}
        rows.append(row)
        print(f"| {name} | {row['launches']} | {row['terminations']} | {row['waiting']} "
              f"| {row['infeasible']} | {row['min_ms']:.1f} | {row['median_ms']:.1f} "
              f"| {row['p95_ms']:.1f} | {row['cpu_median_ms']:.1f} |")
    local = [time_to_node() for _ in range(args.local)]
    if local:
        print("\ndemand -> ready local node (s): | run | node alive | first task done there |")
        print("|---|---|---|")
        for i, (alive, done) in enumerate(local):
            print(f"| {i} | {alive:.2f} | {done:.2f} |")
    fake = fake_rounds(args.fake, args.tasks, args.rounds, rng) if args.fake else None
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows,
                                               "local": local, "fake": fake}, indent=2))
    return 0


def _where(seconds: float) -> str:
    time.sleep(seconds)
    import fedexec

    return str(fedexec.get_runtime_context().node_id)


def time_to_node() -> tuple[float, float]:
    """Seconds from queueing work to (a launched node alive, a task done on it)."""
    import tempfile
    import threading

    from fedexec.autoscaler.monitor import Monitor
    from fedexec.autoscaler.providers import LocalProvider
    from fedexec.testing import Cluster

    cfg = ClusterConfig(node_types={"head": NodeTypeConfig("head", {"CPU": 1}, 0, 0),
                                    "cpu2": NodeTypeConfig("cpu2", {"CPU": 2}, 0, 2)},
                        head_node_type="head", max_workers=2, idle_timeout_minutes=5.0)
    with tempfile.TemporaryDirectory() as state, Cluster(head_num_cpus=1) as cluster, \
            cluster.connect() as ex:
        provider = LocalProvider("bench", cluster.address, cluster.token, state_dir=state)
        monitor = Monitor(cfg, provider, cluster.address, cluster.token)
        stop = threading.Event()
        thread = threading.Thread(target=monitor.run, args=(0.2, stop))
        thread.start()
        try:
            t0 = time.perf_counter()
            refs = [ex.submit(_where, 0.5) for _ in range(6)]
            while sum(n["alive"] for n in ex.nodes()) < 2:
                time.sleep(0.02)
            alive = time.perf_counter() - t0
            done = None
            for ref in refs:
                if ref.result(timeout=120) != cluster.head.node_id and done is None:
                    done = time.perf_counter() - t0
            return alive, done if done is not None else float("nan")
        finally:
            stop.set()
            thread.join()
            provider.wait_launches(60)
            monitor.terminate_all()


FAKE_SHAPES = [{"CPU": c, "big": 1} for c in (1, 2, 4, 8)] + \
    [{"CPU": c, "GPU": g} for c in (1, 2, 4) for g in (0.5, 1)] + \
    [{"CPU": 2, "big": 1, "GPU": 1}, {"big": 2}]


def _noop() -> None:
    return None


def fake_rounds(n: int, tasks: int, rounds: int, rng: random.Random) -> dict[str, object]:
    """Monitor rounds against a real head with ``n`` fake nodes (see the module
    docstring); prints and returns the timings."""
    from fedexec.autoscaler import request_resources
    from fedexec.autoscaler.fake_provider import FakeProvider
    from fedexec.autoscaler.monitor import Monitor
    from fedexec.autoscaler.providers import TAG_NODE_TYPE
    from fedexec.autoscaler.requests import requests_actor
    from fedexec.testing import Cluster

    types = {"head": NodeTypeConfig("head", {"CPU": 1}, 0, 0),
             "sim4": NodeTypeConfig("sim4", {"CPU": 4, "sim": 1}, 0, n),
             "big8": NodeTypeConfig("big8", {"CPU": 8, "big": 2}, 0, n),
             "gpu8": NodeTypeConfig("gpu8", {"CPU": 8, "GPU": 1, "big": 1}, 0, n)}
    cfg = ClusterConfig(node_types=types, head_node_type="head", max_workers=n,
                        idle_timeout_minutes=60.0)
    # `fedexec start --head`'s heartbeat interval (0.5 s); a timeout of 10 s (default
    # 5 s) so that a loaded 2-core machine does not declare simulated nodes dead
    with Cluster(head_num_cpus=1, heartbeat_interval=0.5, heartbeat_timeout=10.0) as cluster, \
            cluster.connect() as ex:
        provider = FakeProvider("bench", cluster.address, cluster.token)
        monitor = Monitor(cfg, provider, cluster.address, cluster.token)
        monitor.report_ttl = 3600.0  # rounds are run by hand here, with pauses
        refs: list = []
        try:
            # The tasks are queued first, on the lone head: a head with many nodes
            # spends O(queued tasks) per message on spillback while tasks arrive
            # (see RESULTS.md), which this benchmark does not measure.
            shapes = [dict(t.resources) for t in types.values() if t.max_workers > 0]
            ex.get(requests_actor(ex).report.remote(shapes, 3600.0))  # as a monitor does
            t0 = time.perf_counter()
            for _ in range(tasks):
                s = rng.choice(FAKE_SHAPES)
                custom = {k: v for k, v in s.items() if k not in ("CPU", "GPU")}
                refs.append(ex.options(resources=custom, num_cpus=s.get("CPU", 0),
                                       num_gpus=s.get("GPU", 0)).submit(_noop))
            submitted = time.perf_counter() - t0
            t0 = time.perf_counter()
            for start in range(0, n, 100):
                for _ in range(min(100, n - start)):
                    provider.create_node("sim4", types["sim4"].resources, {},
                                         {TAG_NODE_TYPE: "sim4"})
                if not provider.wait_joined(120):
                    raise RuntimeError("fake nodes did not join within 120 s")
            deadline = time.monotonic() + 120
            while sum(x["alive"] for x in ex.nodes()) < n + 1:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the head lists fewer than {n} fake nodes alive")
                time.sleep(0.05)
            joined = time.perf_counter() - t0
            request_resources(bundles=[{"CPU": 1}] * 50, executor=ex)
            rows = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                p = monitor.step()
                rows.append({"total": time.perf_counter() - t0, **monitor.timings})
            alive = sum(x["alive"] for x in ex.nodes())
            waiting = sum(u.count for u in p.waiting)
        finally:
            for ref in refs:  # they never run: the executor must not wait for them
                ref.cancel()
            monitor.close()
            provider.close()
    med = {k: statistics.median(r[k] for r in rows) * 1000 for k in rows[0]}
    print(f"\nmonitor rounds against a real head with {n} fake nodes ({alive} nodes alive, "
          f"{tasks} queued tasks, {waiting} demand items reported waiting):")
    print(f"{tasks} big tasks submitted in {submitted:.1f} s; then {n} fake nodes joined in "
          f"{joined:.1f} s")
    print("| rounds | median total ms | p95 total ms | median observe ms | median plan ms "
          "| median apply ms |")
    print("|---|---|---|---|---|---|")
    totals = sorted(r["total"] * 1000 for r in rows)
    print(f"| {rounds} | {med['total']:.0f} | {totals[min(len(totals) - 1, int(0.95 * len(totals)))]:.0f} "
          f"| {med['observe']:.0f} | {med['plan']:.1f} | {med['apply']:.1f} |")
    return {"nodes": n, "alive": alive, "joined_s": joined, "submitted_s": submitted,
            "waiting": waiting, "rounds": rows}


if __name__ == "__main__":
    sys.exit(main())
