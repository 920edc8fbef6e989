"""Multi-node benchmarks of the native runtime (issue #4, items 3 and 8).

Usage::

    python benchmarks/multinode.py [--quick] [--only transfer,scale] [--json out.json]
                                   [--sizes 1,16,128,512] [--nodes 10,100,500]
                                   [--interval 0.5] [--timeout 5] [--no-ray]

``transfer`` -- object bandwidth between two nodes of a ``fedexec.testing.Cluster``
(a 1-CPU head, and a node with the custom resource ``far``), both ways::

    (a) far task returns N MB ──REMOTE@far──▶ driver: ref.result()  (the head PULLs it)
    (b) driver put(N MB) on the head ──ref──▶ far task             (the far node PULLs it)

next to a local ``np.copy``, a Python TCP loopback stream, and Ray's
``ray.cluster_utils.Cluster`` (two raylets on this machine; measured in a child
process when ``import ray`` works, e.g. from ``/work/benchvenv``).

``scale`` -- the head's cost with 10, 100, 500 nodes: a real head (node manager,
1 CPU) and simulated nodes, all in one helper process (``_simnodes.py``), each a
real protocol client (TCP, HMAC handshake, HELLO, a HEARTBEAT per interval). For
each N: the head's CPU use and RSS with idle / one-changing / all-changing
heartbeats, the bytes the head sends, a no-op round trip and no-op throughput on
the head, and how long the head takes to declare silenced nodes dead.

Everything is printed as markdown tables; ``--json`` keeps every number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import _kill_tree, _leftovers, fmt, machine_facts  # noqa: E402

MB = 1 << 20
_T0 = time.monotonic()


def progress(what: str) -> None:
    print(f"  [{time.monotonic() - _T0:5.1f} s] {what} ...", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def f(x: float | None) -> str:
    if x is None or x != x:  # None or NaN
        return "-"
    return fmt(x)


# ------------------------------------------------------------------ tasks
# Defined here, so they travel by value (cloudpickle) to the workers of either system.
def make_array(mb: int) -> Any:
    import numpy as np

    a = np.empty(mb << 20, dtype=np.uint8)
    a[::4096] = 7  # touch every page: the bytes really exist
    a[-1] = 9
    return a


def consume(a: Any) -> int:
    return int(a[-1]) + int(a.nbytes)


def noop(_x: Any = None) -> int:
    return 1


# ------------------------------------------------------------------ node logs
@contextlib.contextmanager
def node_output(path: str) -> Iterator[None]:
    """Node managers started inside inherit stdout/stderr: send them to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def log_problems(path: str, what: str) -> list[str]:
    """Tracebacks and error lines the node managers wrote to ``path``."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    lines = text.splitlines()
    bad = [i for i, line in enumerate(lines)
           if "Traceback" in line or "error" in line.lower() or "fedexec node" in line]
    if not bad:
        return []
    excerpt = "\n".join(lines[bad[0]:bad[0] + 40])
    return [f"{what}: the node managers' output ({path}) has {len(bad)} suspicious line(s); "
            f"first:\n```\n{excerpt}\n```"]


# ------------------------------------------------------------------ baselines
def local_copy_mbps(mb: int, reps: int) -> float:
    import numpy as np

    src = np.ones(mb * MB, dtype=np.uint8)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        dst = np.copy(src)
        times.append(time.perf_counter() - t)
        del dst
    return mb / median(times)


def tcp_loopback_mbps(mb: int, reps: int) -> float:
    """A Python sender and receiver thread over 127.0.0.1 (recv_into a buffer)."""
    payload = memoryview(bytes(mb * MB))
    sink = bytearray(1 << 20)
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    srv.close()
    times = []
    try:
        def receive() -> None:
            left = len(payload)
            while left:
                n = conn.recv_into(sink)
                if not n:
                    break
                left -= n

        for _ in range(reps):
            th = threading.Thread(target=receive)
            t = time.perf_counter()
            th.start()
            cli.sendall(payload)
            th.join()
            times.append(time.perf_counter() - t)
    finally:
        cli.close()
        conn.close()
    return mb / median(times)


# ------------------------------------------------------------------ transfer
def run_transfer(sizes: list[int], reps: int, quick: bool, workdir: str, notes: list[str]
                 ) -> dict[str, Any]:
    import numpy as np

    from fedexec.testing import Cluster

    out: dict[str, Any] = {"sizes": sizes, "reps": reps, "fedexec": {}, "overheads": {}}
    log = os.path.join(workdir, "transfer-nodes.log")
    with node_output(log):
        cluster = Cluster(head_node_args={"num_cpus": 1})
        try:
            cluster.add_node(num_cpus=1, resources={"far": 1})
        except BaseException:
            cluster.shutdown()
            raise
    spacing = 1.5 * cluster.heartbeat_interval
    with cluster, cluster.connect() as ex:
        fx = ex.options(resources={"far": 1})
        fx.submit(noop).result()  # starts the far node's worker
        ex.submit(noop).result()
        ov = out["overheads"]
        rt = []
        for _ in range(10 if quick else 20):
            t = time.perf_counter()
            ex.submit(noop).result()
            rt.append(time.perf_counter() - t)
        ov["head_noop_rt_ms"] = median(rt) * 1e3
        rt = []
        for _ in range(3 * reps):
            time.sleep(spacing)
            t = time.perf_counter()
            fx.submit(noop).result()
            rt.append(time.perf_counter() - t)
        ov["far_noop_rt_spaced_ms"] = median(rt) * 1e3
        rt = []
        for _ in range(5 if quick else 10):
            t = time.perf_counter()
            fx.submit(noop).result()
            rt.append(time.perf_counter() - t)
        ov["far_noop_rt_back_to_back_ms"] = median(rt) * 1e3
        time.sleep(spacing)
        t = time.perf_counter()
        ex.get([fx.submit(noop) for _ in range(10)])
        ov["far_10_noops_at_once_s"] = time.perf_counter() - t

        for mb in sizes:
            progress(f"transfer {mb} MB")
            arr = np.ones(mb * MB, dtype=np.uint8)
            arr[-1] = 9
            pull, push, put = [], [], []
            for _ in range(reps):
                # (a) far -> driver: wait for the task, then time only result()
                ref = fx.submit(make_array, mb)
                ex.wait([ref], timeout=120)
                t = time.perf_counter()
                value = ref.result()
                pull.append(time.perf_counter() - t)
                assert value.nbytes == mb * MB and value[-1] == 9 and value[4096] == 7
                del value, ref
                # (b) driver put -> far task (which can start only once its node has
                # pulled the bytes); spaced so the head has heard the far node's free CPU
                t = time.perf_counter()
                pref = ex.put(arr)
                put.append(time.perf_counter() - t)
                time.sleep(spacing)
                t = time.perf_counter()
                got = fx.submit(consume, pref).result()
                push.append(time.perf_counter() - t)
                assert got == 9 + mb * MB
                del pref
            del arr
            out["fedexec"][mb] = {"pull_s": pull, "push_s": push, "put_s": put}
    notes += log_problems(log, "transfer")

    out["np_copy_mbps"] = {mb: local_copy_mbps(mb, reps) for mb in sizes}
    out["tcp_loopback_mbps"] = {mb: tcp_loopback_mbps(mb, reps) for mb in sizes}
    return out


def ray_child(sizes: list[int], reps: int) -> None:
    """Runs in a child process: the same two directions with Ray's cluster_utils."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import numpy as np
    import ray
    from ray.cluster_utils import Cluster

    res: dict[str, Any] = {"ray": ray.__version__, "sizes": {}}
    t0 = time.perf_counter()
    store = 2 * max(sizes) * MB + (512 * MB)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": store})
    cluster.add_node(num_cpus=1, resources={"far": 1}, object_store_memory=store)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    res["start_s"] = time.perf_counter() - t0
    far_make = ray.remote(resources={"far": 1})(make_array)
    far_consume = ray.remote(resources={"far": 1})(consume)
    far_noop = ray.remote(resources={"far": 1})(noop)
    ray.get(far_noop.remote())
    rt = []
    for _ in range(3 * reps):
        time.sleep(0.3)
        t = time.perf_counter()
        ray.get(far_noop.remote())
        rt.append(time.perf_counter() - t)
    res["far_noop_rt_spaced_ms"] = median(rt) * 1e3
    for mb in sizes:
        arr = np.ones(mb * MB, dtype=np.uint8)
        arr[-1] = 9
        pull, push = [], []
        for _ in range(reps):
            ref = far_make.remote(mb)
            ray.wait([ref], fetch_local=False, timeout=120)
            t = time.perf_counter()
            value = ray.get(ref)
            pull.append(time.perf_counter() - t)
            assert value.nbytes == mb * MB and value[-1] == 9
            del value, ref
            pref = ray.put(arr)
            time.sleep(0.3)
            t = time.perf_counter()
            got = ray.get(far_consume.remote(pref))
            push.append(time.perf_counter() - t)
            assert got == 9 + mb * MB
            del pref
        res["sizes"][str(mb)] = {"pull_s": pull, "push_s": push}
    print("@@RAY@@ " + json.dumps(res), flush=True)
    ray.shutdown()
    cluster.shutdown()


def run_ray(sizes: list[int], reps: int, notes: list[str], limit: float = 240.0
            ) -> dict[str, Any] | None:
    try:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            notes.append("Ray: not installed in this interpreter; skipped (run with "
                         "/work/benchvenv/bin/python to include it)")
            return None
    except Exception:
        return None
    cmd = [sys.executable, str(HERE / "multinode.py"), "--ray-child",
           "--sizes", ",".join(map(str, sizes)), "--reps", str(reps)]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    progress("transfer with ray.cluster_utils.Cluster")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        stdout, stderr = proc.communicate()
        notes.append(f"Ray: the cluster_utils run did not finish within {limit:.0f} s; "
                     "killed")
    left = _leftovers(proc.pid, grace=10.0)
    if left:
        notes.append(f"Ray: {len(left)} process(es) were still running after shutdown; "
                     "killed")
    for line in stdout.splitlines():
        if line.startswith("@@RAY@@ "):
            return json.loads(line[len("@@RAY@@ "):])  # type: ignore[no-any-return]
    notes.append("Ray: no result; its output ended with:\n```\n"
                 + (stdout + stderr).strip()[-1500:] + "\n```")
    return None


def render_transfer(tr: dict[str, Any], ray: dict[str, Any] | None) -> str:
    lines = ["### Transfer between two nodes (MB/s; higher is better)", "",
             "| size MB | fedexec far→driver `result()` ms | MB/s | fedexec driver `put`→far "
             "task ms | MB/s | Ray far→driver MB/s | Ray put→far task MB/s | local `np.copy` "
             "MB/s | Python TCP loopback MB/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mb in tr["sizes"]:
        r = tr["fedexec"][mb]
        pull, push = median(r["pull_s"]), median(r["push_s"])
        rr = (ray or {}).get("sizes", {}).get(str(mb))
        ray_pull = mb / median(rr["pull_s"]) if rr else None
        ray_push = mb / median(rr["push_s"]) if rr else None
        lines.append(f"| {mb} | {f(pull * 1e3)} | {f(mb / pull)} | {f(push * 1e3)} | "
                     f"{f(mb / push)} | {f(ray_pull)} | {f(ray_push)} | "
                     f"{f(tr['np_copy_mbps'][mb])} | {f(tr['tcp_loopback_mbps'][mb])} |")
    ov = tr["overheads"]
    lines += ["", "| fixed costs | fedexec | Ray |", "|---|---:|---:|",
              f"| no-op round trip on the head, driver over TCP, ms | "
              f"{f(ov['head_noop_rt_ms'])} | |",
              f"| no-op round trip on the far node (calls 0.3 s apart), ms | "
              f"{f(ov['far_noop_rt_spaced_ms'])} | "
              f"{f((ray or {}).get('far_noop_rt_spaced_ms'))} |",
              f"| no-op round trip on the far node (back to back), ms | "
              f"{f(ov['far_noop_rt_back_to_back_ms'])} | |",
              f"| 10 no-ops on the far node submitted at once, s | "
              f"{f(ov['far_10_noops_at_once_s'])} | |"]
    if ray:
        lines.append(f"| cluster start (2 nodes), s | | {f(ray['start_s'])} |")
    lines += ["", f"- median of {tr['reps']} repetition(s); sizes in MiB of uint8",
              "- far→driver: the far task's result is waited for first, then only "
              "`ref.result()` is timed (the head pulls the bytes in 4 MiB CHUNKs, then the "
              "driver maps them); Ray: `ray.wait(fetch_local=False)`, then `ray.get`",
              "- put→far task: the round trip of a far task taking the put ref (it starts "
              "once its node pulled the bytes), so it includes the no-op round trip above"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ scale
class Sim:
    """The ``_simnodes.py`` process, driven over its stdin/stdout."""

    def __init__(self, address: str, token: str, interval: float):
        env = dict(os.environ, FEDEXEC_TOKEN=token)
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_simnodes.py"), "--address", address,
             "--interval", str(interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            start_new_session=True)
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()
        self.pid = self.wait_for("ready", 30)["pid"]

    def _reader(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put(None)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"the node simulator sent no {event!r} within "
                                   f"{timeout} s") from None
            if msg is None:
                raise RuntimeError(f"the node simulator exited (rc {self.proc.poll()})")
            if msg.get("event") == event:
                return msg

    def call(self, event: str, timeout: float = 60.0, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.wait_for(event, timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send(cmd="quit")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            _kill_tree(self.proc.pid)
        with contextlib.suppress(Exception):
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.stdout.close()  # type: ignore[union-attr]


def head_cpu(proc: Any) -> float:
    """CPU seconds used by ``proc`` (not its children): the scheduler's nanosecond
    count where Linux has it (psutil's ``cpu_times`` ticks at 10 ms)."""
    try:
        with open(f"/proc/{proc.pid}/schedstat") as fh:
            return int(fh.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        t = proc.cpu_times()
        return float(t.user + t.system)


def wait_listed(ex: Any, want: int, timeout: float) -> float:
    """Wait until the head lists ``want`` live nodes (itself included)."""
    t0 = time.monotonic()
    while True:
        alive = sum(1 for n in ex.nodes() if n.get("alive"))
        if alive == want:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"the head lists {alive} live nodes, expected {want}")
        time.sleep(0.1)


def measure_tasks(ex: Any, rt_n: int, tp_n: int, reps: int, budget: float = 20.0
                  ) -> dict[str, Any]:
    """No-op round trips, control-plane round trips and no-op throughput on the head;
    each part stops after ``budget`` s (a saturated head), saying so."""
    out: dict[str, Any] = {"incomplete": []}
    rts: list[float] = []
    stop = time.monotonic() + budget
    for _ in range(rt_n):
        t = time.perf_counter()
        ex.submit(noop).result(timeout=budget)
        rts.append(time.perf_counter() - t)
        if time.monotonic() > stop:
            out["incomplete"].append(f"round trip: {len(rts)} of {rt_n} in {budget:g} s")
            break
    rpcs: list[float] = []
    stop = time.monotonic() + budget
    for _ in range(rt_n):
        t = time.perf_counter()
        ex.available_resources()
        rpcs.append(time.perf_counter() - t)
        if time.monotonic() > stop:
            out["incomplete"].append(f"available_resources(): {len(rpcs)} of {rt_n} in "
                                     f"{budget:g} s")
            break
    tps = []
    for _ in range(reps):
        t = time.perf_counter()
        refs = [ex.submit(noop) for _ in range(tp_n)]
        ready, late = ex.wait(refs, num_returns=tp_n, timeout=budget)
        tps.append(len(ready) / (time.perf_counter() - t))
        if late:
            out["incomplete"].append(f"throughput: {len(ready)} of {tp_n} in {budget:g} s")
            for ref in late:
                ex.cancel(ref)
            ex.wait(late, num_returns=len(late), timeout=120)
            break
    out.update(rt_median_ms=median(rts) * 1e3, rt_p99_ms=pct(rts, 0.99) * 1e3,
               rpc_median_ms=median(rpcs) * 1e3, tasks_per_s=median(tps))
    return out


def run_scale(nodes: list[int], interval: float, timeout: float, window: float, reps: int,
              rt_n: int, tp_n: int, death_reps: int, settle: float, workdir: str,
              notes: list[str]) -> dict[str, Any]:
    import psutil

    from fedexec.testing import Cluster

    log = os.path.join(workdir, "scale-head.log")
    with node_output(log):
        cluster = Cluster(head_node_args={"num_cpus": 1}, heartbeat_interval=interval,
                          heartbeat_timeout=timeout)
    rows: list[dict[str, Any]] = []
    sim: Sim | None = None
    try:
        with cluster, cluster.connect() as ex:
            head = psutil.Process(cluster.head.pid)
            sim = Sim(cluster.address, cluster.token, interval)
            simp = psutil.Process(sim.pid)
            ex.submit(noop).result()
            alive = 0
            for n in [0, *nodes]:
                progress(f"scale: {n} simulated nodes")
                row: dict[str, Any] = {"nodes": n, "modes": {}}
                joined = sim.call("joined", 300, cmd="join", n=n - alive)
                alive = joined["alive"]
                row["join_s"] = joined["s"]
                row["listed_s"] = wait_listed(ex, alive + 1, 60)
                time.sleep(settle)
                for mode in (["idle"] if n == 0 else ["idle", "one", "all"]):
                    progress(f"scale: {n} nodes, {mode} heartbeats")
                    sim.call("mode", cmd="mode", mode=mode)
                    time.sleep(settle)
                    m: dict[str, Any] = {"cpu": [], "sim_cpu": [], "rx": [], "views": [],
                                         "rows": [], "lost": 0, "hb_lag_max": 0.0}
                    for _ in range(reps):
                        sim.call("stats", cmd="stats")
                        c0, s0, t0 = head_cpu(head), head_cpu(simp), time.monotonic()
                        time.sleep(window)
                        st = sim.call("stats", cmd="stats")
                        c1, s1, t1 = head_cpu(head), head_cpu(simp), time.monotonic()
                        m["cpu"].append((c1 - c0) / (t1 - t0))
                        m["sim_cpu"].append((s1 - s0) / (t1 - t0))
                        m["rx"].append(st["rx_bytes"] / st["s"])
                        m["views"].append(st["views"] / st["s"])
                        m["rows"].append(st["view_rows"] / max(1, st["views"]))
                        m["heartbeats_per_s"] = st["heartbeats"] / st["s"]
                        m["lost"] = max(m["lost"], st["unexpected_closed"])
                        m["hb_lag_max"] = max(m["hb_lag_max"], st["hb_lag_max"])
                    m["rss_mb"] = head.memory_info().rss / MB
                    if mode in ("idle", "all"):
                        progress(f"scale: {n} nodes, {mode} heartbeats, no-op tasks")
                        m.update(measure_tasks(ex, rt_n, tp_n, reps))
                    row["modes"][mode] = m
                sim.call("mode", cmd="mode", mode="idle")
                if n:
                    row["death"] = []
                    k = max(1, n // 10)
                    for _ in range(death_reps):
                        progress(f"scale: {n} nodes, {k} silenced")
                        time.sleep(settle)
                        sim.call("silenced", cmd="silence", n=k, wait=timeout * 3 + 10)
                        row["death"].append(sim.wait_for("dead", timeout * 3 + 30))
                        joined = sim.call("joined", 300, cmd="join", n=k)  # back to n
                        alive = joined["alive"]
                        wait_listed(ex, alive + 1, 60)
                    row["death_k"] = k
                rows.append(row)
    finally:
        if sim is not None:
            sim.close()
    notes += log_problems(log, "scale")
    return {"interval": interval, "timeout": timeout, "window": window, "reps": reps,
            "rt_n": rt_n, "tp_n": tp_n, "rows": rows}


def render_scale(sc: dict[str, Any]) -> str:
    rows = sc["rows"]
    iv = sc["interval"]
    lines = [f"### Head cost with N simulated nodes (heartbeat every {iv:g} s, "
             f"declared dead after {sc['timeout']:g} s)", "",
             "Head CPU is the node manager process alone (user+system, its workers "
             "excluded), as % of one core; VIEW traffic is what the head sent, as "
             "received by the simulator.", "",
             "| N | heartbeats | head CPU % | head CPU µs / heartbeat | head → nodes KB/s "
             "| VIEW msgs/s to one node | rows per VIEW | head RSS MB | no-op RT median "
             "ms | p99 ms | `available_resources()` ms | no-op tasks/s | nodes lost |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    partial: list[str] = []
    for row in rows:
        for mode, m in row["modes"].items():
            cpu = median(m["cpu"])
            hbs = m.get("heartbeats_per_s") or 0.0
            per_hb = cpu / hbs * 1e6 if hbs else None
            lines.append(
                f"| {row['nodes']} | {mode} | {f(cpu * 100)} | {f(per_hb)} | "
                f"{f(median(m['rx']) / 1024)} | {f(median(m['views']))} | "
                f"{f(median(m['rows']))} | {f(m['rss_mb'])} | {f(m.get('rt_median_ms'))} | "
                f"{f(m.get('rt_p99_ms'))} | {f(m.get('rpc_median_ms'))} | "
                f"{f(m.get('tasks_per_s'))}{' (!)' if m.get('incomplete') else ''} | "
                f"{m['lost']} |")
            for what in m.get("incomplete") or []:
                partial.append(f"N={row['nodes']} {mode}: {what}")
    if partial:
        lines += ["", "(!) the head was too slow to finish: " + "; ".join(partial)]
    lines += ["", "| N | join s | nodes silenced | declared dead after s: median | max "
              "| dead in a VIEW after s: median | max |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if not row.get("death"):
            continue
        closed = [x for d in row["death"] for x in d["closed_s"]]
        view = [x for d in row["death"] for x in d["view_s"]]
        missed = sum(1 for d in row["death"] if d.get("timed_out"))
        lines.append(f"| {row['nodes']} | {f(row['join_s'])} | {row['death_k']} x "
                     f"{len(row['death'])} | {f(median(closed))} | {f(max(closed or [0]))} | "
                     f"{f(median(view))} | {f(max(view or [0]))} |"
                     + (f" ({missed} round(s) timed out)" if missed else ""))
    lines += ["",
              f"- head CPU, traffic: median of {sc['reps']} windows of {sc['window']:g} s; "
              f"round trip: {sc['rt_n']} sequential no-ops on the head; tasks/s: "
              f"{sc['tp_n']} no-ops submitted then gathered, median of {sc['reps']}",
              "- modes: `idle` — reports never change; `one` — one node's report changes "
              "every heartbeat; `all` — every node's report changes every heartbeat "
              "(queue length flips 0/1)",
              "- simulated nodes report `available = {CPU: 0}`, so no task is ever "
              "forwarded to them; the driver connects to the head over TCP",
              "- declared dead: from the moment the simulator stops heartbeating a node "
              "to the head closing its connection; in a VIEW: to the moment another node "
              "receives the row with alive=False"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ main
def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, one repetition")
    ap.add_argument("--only", default="transfer,scale", help="transfer, scale or both")
    ap.add_argument("--sizes", help="MiB per transfer (default 1,16,128,512; quick 1,16,128)")
    ap.add_argument("--nodes", help="simulated node counts (default 10,100,500)")
    ap.add_argument("--interval", type=float, default=0.5, help="heartbeat interval, s")
    ap.add_argument("--timeout", type=float, help="heartbeat timeout, s (default 5; quick 2)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3; quick 1)")
    ap.add_argument("--no-ray", action="store_true", help="skip Ray (skipped with --quick)")
    ap.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    ap.add_argument("--ray-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    quick = args.quick
    sizes = _ints(args.sizes) if args.sizes else ([1, 16, 128] if quick else [1, 16, 128, 512])
    reps = args.reps or (1 if quick else 3)
    if args.ray_child:
        ray_child(sizes, reps)
        return 0
    nodes = _ints(args.nodes) if args.nodes else [10, 100, 500]
    timeout = args.timeout or (2.0 if quick else 5.0)
    only = {x.strip() for x in args.only.split(",")}

    facts = machine_facts()
    command = " ".join(["python benchmarks/multinode.py", *(sys.argv[1:] if argv is None
                                                             else argv)])
    print(f"# fedexec multi-node benchmarks{' (--quick)' if quick else ''}\n")
    print(f"- command: `{command}`")
    print(f"- date: {facts['date']}")
    print(f"- machine: {facts['cpus']} CPUs, {facts.get('memory_gib', '?')} GiB RAM, "
          f"{facts['platform']}, Python {facts['python']}")
    print(f"- fedexec source: git {facts['fedexec_git']}")
    print("- load average at start (1/5/15 min): "
          + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + "\n", flush=True)
    workdir = tempfile.mkdtemp(prefix="fedexec-multinode-")
    notes: list[str] = []
    result: dict[str, Any] = {"command": command, "machine": facts}
    t_start = time.perf_counter()
    if "transfer" in only:
        tr = run_transfer(sizes, reps, quick, workdir, notes)
        ray = None if (quick or args.no_ray) else run_ray(sizes, reps, notes)
        if quick or args.no_ray:
            notes.append("Ray: skipped (--quick or --no-ray)")
        result["transfer"], result["ray"] = tr, ray
        print(render_transfer(tr, ray), flush=True)
    if "scale" in only:
        sc = run_scale(nodes, args.interval, timeout,
                       window=1.0 if quick else 2.0, reps=reps,
                       rt_n=20 if quick else 50, tp_n=300 if quick else 500,
                       death_reps=1 if quick else 3, settle=args.interval * (1 if quick else 2),
                       workdir=workdir, notes=notes)
        result["scale"] = sc
        print(render_scale(sc), flush=True)
    for note in notes:
        print(f"- {note}")
    result["notes"] = notes
    kept = any("node managers' output" in n for n in notes)
    if not kept:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s; load average at the end: "
          + " / ".join(f"{x:.1f}" for x in os.getloadavg())
          + (f"; node logs kept in {workdir}" if kept else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
