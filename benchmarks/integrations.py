"""Integration benchmarks: fedexec under joblib, Dask and Modin, and its ``dask`` backend.

Usage::

    python benchmarks/integrations.py [--quick] [--only SECTIONS] [--json out.json]
                                      [--timeout SECONDS]

Sections (``--only joblib,dask`` runs some of them, in the order given):

    joblib        scikit-learn GridSearchCV (SVC on load_digits, n_jobs=-1, cv=3) on
                  fedexec's joblib backend vs loky (joblib's default) vs Ray's joblib
                  backend vs n_jobs=1; best_params_ compared
    dask          a dask.array and a dask.dataframe workload on fedexec_dask_get vs
                  Dask's threads, processes and distributed schedulers vs Ray's
                  ray_dask_get; results compared
    modin         read_csv + groupby-agg + merge + apply of a temporary CSV with Modin
                  on fedexec, on Ray, on Dask, and with plain pandas; results compared
    dask-backend  the cases of run.py that map onto distributed.Client, on
                  Executor(backend="dask") vs a plain Client of the same LocalCluster;
                  target (issue 5): fedexec-dask within 1.3x of plain Dask
    spark-backend per-task overhead, round trip, a chain, a 100 MB argument for 4
                  tasks and start-up, on Executor(backend="spark", spark=session)
                  vs plain pyspark on the same SparkSession (local[2])

Data flow::

    integrations.py ──for each section, for each system (or case)──▶
        python integrations.py --child SECTION NAME        (a session leader)
       ▲                                │ fresh runtime: start, warm up, measure,
       │ "@@RESULT@@ {json}" on stdout  │ print, shut down
       └────────────────────────────────┘
       after --timeout: the child's whole process tree is killed ("timeout")

One process per system keeps process-global state apart (Modin's engine, Dask's
default client, Ray). The ``dask-backend`` section is the exception: one process
per case holds one LocalCluster laid out as ``Executor(backend="dask")`` lays out
its own, and both a fedexec executor joined to it (``address=``) and plain
``distributed.Client`` s of it; their repetitions alternate, so load from other
processes on the machine hits both alike. ``spark-backend`` does the same with
one SparkSession per case, shared by plain pyspark and ``Executor(backend="spark",
spark=session)`` (it waits for fedexec's idle leases to end before plain pyspark
runs). Systems whose package is missing are skipped with a printed line. Ray,
Dask, Modin, scikit-learn and pyspark are imported only inside the child that
needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as runner  # noqa: E402  (kill/leftover helpers, number format, machine facts)
from _child import MARK_NOTE, MARK_RESULT, _watchdog, emit  # noqa: E402
from _env import child_env  # noqa: E402

NUM_CPUS = 2
US = "\u00b5s"
TARGET = 1.3  # issue 5: fedexec-dask within 1.3x of plain Dask
PACKAGES = ("fedexec", "ray", "dask", "distributed", "joblib", "loky", "scikit-learn",
            "modin", "pandas", "pyarrow", "pyspark", "numpy")


def reps(quick: bool) -> int:
    """Timed repetitions per measurement (the median is reported)."""
    return 1 if quick else 3


def row(metric: str, value: float, better: str, note: str = "") -> dict[str, Any]:
    return {"metric": metric, "value": value, "better": better, "note": note}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def start_ray() -> Any:
    import ray

    ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    return ray


def local_cluster() -> Any:
    """Dask's usual process cluster for 2 cores (as run.py's ``dask`` system)."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=NUM_CPUS, threads_per_worker=1, processes=True,
                        dashboard_address=None, silence_logs=logging.CRITICAL)


class Child:
    """What one child process measures: ``rows``, ``notes``, a ``check`` payload
    (compared across systems by the parent) and closers run after the result is
    printed (latest first)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.check: Any = None
        self.closers: list[Callable[[], Any]] = []
        self.start_s: float | None = None


# =========================================================================== joblib
JOBLIB_SYSTEMS = ("fedexec-native", "loky", "ray", "sequential")
JOBLIB_REQUIRES = {"fedexec-native": ("sklearn", "fedexec"), "loky": ("sklearn",),
                   "ray": ("sklearn", "ray"), "sequential": ("sklearn",)}


def joblib_child(system: str, quick: bool, child: Child, args: argparse.Namespace) -> None:
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_digits(return_X_y=True)
    grid = {"C": [1, 10, 100, 1000], "gamma": [1e-4, 1e-3]}
    if quick:
        grid = {"C": [1, 10], "gamma": [1e-3]}
    n_fits = math.prod(len(v) for v in grid.values()) * 3
    n_jobs = -1
    backend: Callable[[], Any]
    t0 = time.perf_counter()
    if system == "fedexec-native":
        from fedexec.integrations.joblib import register_fedexec

        import fedexec

        ex = fedexec.Executor(backend="native", num_cpus=NUM_CPUS)
        child.closers.append(lambda: ex.shutdown(wait=True))
        register_fedexec()

        def backend() -> Any:
            return joblib.parallel_backend("fedexec", executor=ex)
    elif system == "ray":
        ray = start_ray()
        child.closers.append(ray.shutdown)
        from ray.util.joblib import register_ray

        register_ray()

        def backend() -> Any:
            return joblib.parallel_backend("ray")
    elif system == "loky":
        def backend() -> Any:
            return joblib.parallel_backend("loky")
    else:
        n_jobs = 1
        backend = contextlib.nullcontext
    child.start_s = time.perf_counter() - t0

    def fit() -> Any:
        search = GridSearchCV(SVC(), grid, cv=3, n_jobs=n_jobs)
        with backend():
            search.fit(X, y)
        return search

    first, search = timed(fit)
    times = [timed(fit)[0] for _ in range(reps(quick))]
    what = (f"GridSearchCV(SVC(), {len(grid['C'])}x{len(grid['gamma'])} grid, cv=3, "
            f"n_jobs={n_jobs}): {n_fits} fits on load_digits")
    child.rows += [
        row("fit s (warm)", statistics.median(times), "lower",
            f"{what}; median of {reps(quick)} after the first"),
        row("first fit s (cold workers)", first, "lower",
            "the first fit after the runtime started: workers import scikit-learn"
            if n_jobs != 1 else "the first fit (n_jobs=1: no workers)"),
    ]
    if child.start_s > 0.01:
        child.rows.append(row("runtime start s", child.start_s, "lower"))
    child.check = {"best_params_": search.best_params_,
                   "mean_test_score": [round(float(s), 9)
                                       for s in search.cv_results_["mean_test_score"]]}


def joblib_check(checks: dict[str, Any]) -> list[str]:
    params = {s: json.dumps(c["best_params_"], sort_keys=True) for s, c in checks.items()}
    scores = {s: c["mean_test_score"] for s, c in checks.items()}
    same = len(set(params.values())) == 1 and all(v == next(iter(scores.values()))
                                                  for v in scores.values())
    if same:
        return [f"results equal on {', '.join(checks)}: best_params_ "
                f"{next(iter(params.values()))} and every mean_test_score"]
    return ["MISMATCH: " + "; ".join(f"{s}: best_params_ {p}, scores {scores[s]}"
                                     for s, p in params.items())]


# =========================================================================== dask
DASK_SYSTEMS = ("fedexec-native", "threads", "processes", "distributed", "ray")
DASK_REQUIRES = {"fedexec-native": ("dask", "pandas", "pyarrow", "fedexec"),
                 "threads": ("dask", "pandas", "pyarrow"),
                 "processes": ("dask", "pandas", "pyarrow"),
                 "distributed": ("dask", "pandas", "pyarrow", "distributed"),
                 "ray": ("dask", "pandas", "pyarrow", "ray")}


def _array_sizes(quick: bool) -> tuple[int, int]:
    return (2000, 500) if quick else (4000, 500)


def _frame_rows(quick: bool) -> int:
    return 1_000_000 if quick else 3_000_000


def dask_array_workload(n: int, chunk: int, compute: Callable[..., Any]) -> Any:
    import dask.array as da

    x = da.random.default_rng(42).random((n, n), chunks=chunk)
    (y,) = compute((x + x.T).mean(axis=0))
    return y


def make_frames(rows: int) -> tuple[Any, Any]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    big = pd.DataFrame({"k": rng.integers(0, 1000, rows), "g": rng.integers(0, 50, rows),
                        "v": rng.random(rows), "w": rng.random(rows)})
    lookup = pd.DataFrame({"k": np.arange(1000), "cat": np.arange(1000) % 20,
                           "weight": rng.random(1000)})
    return big, lookup


def dask_frame_workload(big: Any, lookup: Any, compute: Callable[..., Any]) -> tuple[Any, Any]:
    import dask.dataframe as dd

    df = dd.from_pandas(big, npartitions=8)
    lk = dd.from_pandas(lookup, npartitions=1)
    by_g = df.groupby("g").agg({"v": ["sum", "mean"], "w": "max"})
    m = df.merge(lk, on="k")
    m = m.assign(x=m.v * m.weight)
    by_cat = m.groupby("cat").x.sum()
    a, b = compute(by_g, by_cat)
    return a, b


def dask_child(system: str, quick: bool, child: Child, args: argparse.Namespace) -> None:
    import dask

    kwargs: dict[str, Any]
    t0 = time.perf_counter()
    if system == "fedexec-native":
        from fedexec.integrations.dask import FedexecDaskScheduler

        import fedexec

        ex = fedexec.Executor(backend="native", num_cpus=NUM_CPUS)
        child.closers.append(lambda: ex.shutdown(wait=True))
        kwargs = {"scheduler": FedexecDaskScheduler(ex)}
        how = "FedexecDaskScheduler(Executor(backend='native', num_cpus=2))"
    elif system == "threads":
        kwargs = {"scheduler": "threads", "num_workers": NUM_CPUS}
        how = "scheduler='threads', num_workers=2"
    elif system == "processes":
        kwargs = {"scheduler": "processes", "num_workers": NUM_CPUS}
        how = "scheduler='processes', num_workers=2 (a fresh process pool per compute)"
    elif system == "distributed":
        from distributed import Client

        cluster = local_cluster()
        client = Client(cluster)
        child.closers += [cluster.close, client.close]
        kwargs = {"scheduler": client}
        how = "Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True))"
    else:
        ray = start_ray()
        child.closers.append(ray.shutdown)
        from ray.util.dask import ray_dask_get

        kwargs = {"scheduler": ray_dask_get}
        how = "ray.util.dask.ray_dask_get on ray.init(num_cpus=2)"
    child.start_s = time.perf_counter() - t0
    child.notes.append(f"{system}: {how}")

    def compute(*collections: Any) -> Any:
        return dask.compute(*collections, **kwargs)

    n, chunk = _array_sizes(quick)
    rows = _frame_rows(quick)
    big, lookup = make_frames(rows)
    small_big, small_lookup = make_frames(20_000)
    if system != "processes":  # its pool is new at every compute: nothing stays warm
        # warm up: workers start and import numpy/pandas/dask before anything is timed
        dask_array_workload(1000, 250, compute)
        dask_frame_workload(small_big, small_lookup, compute)

    t_arr, t_df = [], []
    y = a = b = None
    for _ in range(reps(quick)):
        dt, y = timed(lambda: dask_array_workload(n, chunk, compute))
        t_arr.append(dt)
        dt, (a, b) = timed(lambda: dask_frame_workload(big, lookup, compute))
        t_df.append(dt)
    n_chunks = (n // chunk) ** 2
    child.rows += [
        row("array s", statistics.median(t_arr), "lower",
            f"dask.array: (x + x.T).mean(axis=0), x {n:,}x{n:,} float64 random "
            f"({n * n * 8 / 1e6:.0f} MB) in {n_chunks} chunks of {chunk}x{chunk}; "
            f"median of {reps(quick)}"),
        row("dataframe s", statistics.median(t_df), "lower",
            f"dask.dataframe: {rows:,} rows (from_pandas, 8 partitions): groupby('g').agg("
            f"sum/mean/max) and merge with a 1,000-row frame on 'k' then groupby('cat').sum; "
            f"median of {reps(quick)}"),
    ]
    import numpy as np

    a = a.sort_index()
    b = b.sort_index()
    child.check = {
        "array": [float(np.sum(y)), *(float(v) for v in y[:3]), len(y)],
        "groupby": [float(v) for v in np.asarray(a.values, dtype=float).sum(axis=0)]
                   + [len(a)],
        "merge": [float(b.sum()), float(b.iloc[0]), len(b)],
    }


def close_enough(xs: list[Any], ys: list[Any], rtol: float = 1e-9) -> bool:
    return len(xs) == len(ys) and all(
        math.isclose(x, y, rel_tol=rtol, abs_tol=1e-12) for x, y in zip(xs, ys))


def numeric_check(checks: dict[str, Any], rtol: float) -> list[str]:
    first_system, first = next(iter(checks.items()))
    bad = []
    for system, c in checks.items():
        for key, values in c.items():
            if not close_enough(values, first[key], rtol):
                bad.append(f"{system} {key} {values} != {first_system} {first[key]}")
    if bad:
        return ["MISMATCH: " + "; ".join(bad)]
    return [f"results equal (relative tolerance {rtol:g}) on {', '.join(checks)}: "
            + "; ".join(f"{k} {v[0]:.9g}" for k, v in first.items())]


# =========================================================================== modin
MODIN_SYSTEMS = ("fedexec-native", "ray", "dask", "pandas")
MODIN_REQUIRES = {"fedexec-native": ("modin", "pandas", "fedexec"),
                  "ray": ("modin", "pandas", "ray", "pyarrow"),
                  "dask": ("modin", "pandas", "distributed"),
                  "pandas": ("pandas",)}


def modin_rows(quick: bool) -> int:
    return 500_000 if quick else 2_500_000


def write_csv(path: Path, rows: int, seed: int = 1) -> None:
    """``k`` (10,000 keys), ``g`` (100 groups) and three floats of 6 decimals."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"k": rng.integers(0, 10_000, rows), "g": rng.integers(0, 100, rows),
                       "a": rng.random(rows).round(6), "b": rng.random(rows).round(6),
                       "c": rng.random(rows).round(6)})
    df.to_csv(path, index=False, float_format="%.6f")


def modin_cell(v: float) -> float:
    """The function applied to each value (a Python call per element)."""
    return v * 2.0 + 1.0 if v > 0.5 else v - 1.0


def modin_workload(pd: Any, path: str, to_pandas: Callable[[Any], Any],
                   execute: Callable[[Any], None]) -> tuple[dict[str, float], dict[str, Any]]:
    import numpy as np

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    df = pd.read_csv(path)
    execute(df)
    t1 = time.perf_counter()
    agg = to_pandas(df.groupby("g").agg({"a": "sum", "b": "mean", "c": "max"}))
    t2 = time.perf_counter()
    lookup = pd.DataFrame({"k": np.arange(10_000), "w": np.arange(10_000) % 7 / 7.0})
    merged = df.merge(lookup, on="k")
    merged_sum = float((merged["a"] * merged["w"]).sum())
    merged_len = len(merged)
    t3 = time.perf_counter()
    applied = float(df["b"].apply(modin_cell).sum())
    t4 = time.perf_counter()
    times = {"read_csv": t1 - t0, "groupby-agg": t2 - t1, "merge": t3 - t2, "apply": t4 - t3,
             "total": t4 - t0}
    agg = agg.sort_index()
    check = {"groupby": [float(v) for v in agg.to_numpy(dtype=float).sum(axis=0)] + [len(agg)],
             "merge": [merged_sum, merged_len], "apply": [applied]}
    return times, check


def modin_child(system: str, quick: bool, child: Child, args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    if system == "pandas":
        import pandas as pd

        def to_pandas(df: Any) -> Any:
            return df

        def execute(df: Any) -> None:
            return None
        how = f"pandas {pd.__version__}, one process"
    else:
        import modin.config as cfg

        if system == "fedexec-native":
            import fedexec.integrations.modin as fm

            import fedexec

            ex = fedexec.Executor(backend="native", num_cpus=NUM_CPUS)
            child.closers.append(lambda: ex.shutdown(wait=True))
            fm.set_executor(ex)
            cfg.Engine.put("Fedexec")
            how = "fedexec.integrations.modin on Executor(backend='native', num_cpus=2)"
        elif system == "ray":
            ray = start_ray()
            child.closers.append(ray.shutdown)
            cfg.Engine.put("Ray")
            how = "Engine 'Ray' on ray.init(num_cpus=2)"
        else:
            from distributed import Client

            cluster = local_cluster()
            client = Client(cluster)
            child.closers += [cluster.close, client.close]
            cfg.Engine.put("Dask")
            how = "Engine 'Dask' on Client(LocalCluster(n_workers=2, threads_per_worker=1))"
        import modin.pandas as pd
        from modin.pandas.io import to_pandas
        from modin.utils import execute as modin_execute

        def execute(df: Any) -> None:
            modin_execute(df)

        pd.DataFrame({"x": [1, 2]}).sum()  # the engine starts here
        how += f"; NPartitions={cfg.NPartitions.get()}"
    child.start_s = time.perf_counter() - t0
    child.notes.append(f"{system}: {how}")
    modin_workload(pd, args.small_csv, to_pandas, execute)  # warm up the workers
    runs = []
    check = None
    for _ in range(reps(quick)):
        times, check = modin_workload(pd, args.csv, to_pandas, execute)
        runs.append(times)
    size = os.path.getsize(args.csv) / 1e6
    rows = modin_rows(quick)
    note = {
        "read_csv": f"read_csv of a {size:.0f} MB CSV ({rows:,} rows, 5 columns); "
                    f"each step waits for its result; median of {reps(quick)}",
        "groupby-agg": "groupby('g') (100 groups).agg(sum/mean/max), to pandas",
        "merge": "merge with a 10,000-row frame on 'k', then sum of a product column",
        "apply": "Series.apply of a Python function to every value, then sum",
        "total": "all four steps",
    }
    for step in ("total", "read_csv", "groupby-agg", "merge", "apply"):
        child.rows.append(row(f"{step} s", statistics.median(r[step] for r in runs), "lower",
                              note[step]))
    child.check = check


# =========================================================================== dask backend
DASK_BACKEND_CASES = ("noop_throughput", "round_trip", "chain", "put_get_200mb",
                      "pass_200mb_to_5_tasks", "actor_calls")
PLAIN = "plain-dask"
PLAIN_RES = "plain-dask+CPU-resource"
FEDEXEC_DASK = "fedexec-dask"


def backend_sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"noop": 300, "round_trip": 100, "chain": 100, "actor_calls": 300,
                "actor_rt": 100}
    return {"noop": 1000, "round_trip": 200, "chain": 300, "actor_calls": 500,
            "actor_rt": 200}


def backend_systems(cluster: Any, case: str) -> list[Any]:
    """The adapters (``_systems`` interface) on one shared cluster."""
    import _systems

    class PlainDask(_systems.Dask):
        def __init__(self, name: str, resources: dict[str, float] | None) -> None:
            self.name = name
            self.resources = resources
            self.notes = ()
            if resources:
                self.actors = self.async_actors = False

        def start(self) -> None:
            from distributed import Client

            self.client = Client(cluster, set_as_default=self.resources is None)

        def shutdown(self) -> None:
            self.client.close()

        def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
            return self.client.submit(fn, *args, pure=False, resources=self.resources)

    class FedexecDask(_systems.Fedexec):
        def __init__(self) -> None:
            super().__init__("dask")
            self.name = FEDEXEC_DASK

        def start(self) -> None:
            import fedexec

            self.ex = fedexec.Executor(backend="dask", address=cluster.scheduler_address)

    systems: list[Any] = [PlainDask(PLAIN, None)]
    if case in ("noop_throughput", "round_trip", "chain"):
        # fedexec's tasks carry a CPU resource restriction; this shows its share
        systems.append(PlainDask(PLAIN_RES, {"CPU": 1.0}))
    systems.append(FedexecDask())
    return systems


def _noop_once(system: Any, n: int) -> dict[str, float]:
    import _cases

    total, submit = _cases.noop_round(system, n)
    return {"tasks/s (submit all, then gather)": total, "submit-only tasks/s": submit}


def _round_trip_once(system: Any, n: int) -> dict[str, float]:
    import _cases
    import _tasks

    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        system.result(system.submit(_tasks.noop))
        samples.append(time.perf_counter() - t0)
    return {f"median {US}": statistics.median(samples) * 1e6,
            f"p99 {US}": _cases.percentile(samples, 99) * 1e6}


def _chain_once(system: Any, n: int) -> dict[str, float]:
    import _tasks

    t0 = time.perf_counter()
    ref = system.submit(_tasks.link, 0)
    for _ in range(n - 1):
        ref = system.submit(_tasks.link, ref)
    value = system.result(ref)
    assert value == n, value
    return {f"{US} per link": (time.perf_counter() - t0) / n * 1e6}


def _put_get_once(system: Any, arr: Any) -> dict[str, float]:
    import _cases

    put_s, get_s = _cases.put_get_once(system, arr)
    return {"put ms": put_s * 1e3, "get ms": get_s * 1e3}


def _pass_once(system: Any, ref: Any, first: bool) -> dict[str, float]:
    import _tasks

    t0 = time.perf_counter()
    values = system.gather([system.submit(_tasks.first_element, ref) for _ in range(5)])
    assert all(v == 1.0 for v in values), values
    dt = (time.perf_counter() - t0) * 1e3
    return {"first round ms" if first else "later rounds ms": dt}


def _actor_once(system: Any, actor: Any, n: int, kind: str, rt: int) -> dict[str, float]:
    import _cases

    t0 = time.perf_counter()
    values = system.gather_calls([system.call(actor, "ping") for _ in range(n)])
    out = {f"{kind} calls/s": n / (time.perf_counter() - t0)}
    assert len(values) == n
    if rt:
        samples = []
        for _ in range(rt):
            t1 = time.perf_counter()
            system.result(system.call(actor, "ping"))
            samples.append(time.perf_counter() - t1)
        out[f"{kind} call round trip median {US}"] = statistics.median(samples) * 1e6
        out[f"{kind} call round trip p99 {US}"] = _cases.percentile(samples, 99) * 1e6
    return out


BETTER = {"tasks/s (submit all, then gather)": "higher", "submit-only tasks/s": "higher",
          "sync calls/s": "higher", "async calls/s": "higher"}


def dask_backend_child(case: str, quick: bool, child: Child, args: argparse.Namespace) -> None:
    """One case: a shared cluster, every system on it, repetitions alternating."""
    import _cases
    import _tasks

    from fedexec.backends.dask._cluster import start_local_cluster
    from fedexec.config import RuntimeConfig

    t0 = time.perf_counter()
    cluster = start_local_cluster(RuntimeConfig(num_cpus=NUM_CPUS))
    child.closers.append(cluster.close)
    systems = backend_systems(cluster, case)
    for s in systems:
        s.start()
        child.closers.append(s.shutdown)
    child.start_s = time.perf_counter() - t0
    workers = cluster.scheduler_info["workers"]
    shape = next(iter(workers.values())) if workers else {}
    child.notes.append(
        f"cluster: fedexec.backends.dask._cluster.start_local_cluster(num_cpus=2), the "
        f"LocalCluster Executor(backend='dask') starts: {len(workers)} worker process, "
        f"{shape.get('nthreads')} threads, resources {shape.get('resources')}; "
        f"{FEDEXEC_DASK} = Executor(backend='dask', address=<its scheduler>), {PLAIN} = "
        f"Client(cluster), submit(pure=False); {PLAIN_RES} adds resources={{'CPU': 1}} "
        "(the restriction fedexec puts on every task); systems alternate within each "
        "repetition")
    size = backend_sizes(quick)
    for s in systems:
        _cases.warm_up(s)
    # per system: a callable measuring once -> {metric: value}
    measure: dict[str, Callable[[], dict[str, float]]] = {}
    note = ""
    if case == "noop_throughput":
        for s in systems:
            measure[s.name] = lambda s=s: _noop_once(s, size["noop"])
        note = f"{size['noop']:,} no-op tasks submitted, then gathered"
    elif case == "round_trip":
        for s in systems:
            for _ in range(20):
                s.result(s.submit(_tasks.noop))
            measure[s.name] = lambda s=s: _round_trip_once(s, size["round_trip"])
        note = f"{size['round_trip']:,} sequential submit+wait of a no-op"
    elif case == "chain":
        for s in systems:
            measure[s.name] = lambda s=s: _chain_once(s, size["chain"])
        note = f"{size['chain']:,} tasks, each taking the previous one's future/ref"
    elif case == "put_get_200mb":
        arr = _cases.make_array()
        for s in systems:
            measure[s.name] = lambda s=s: _put_get_once(s, arr)
        note = ("200 MB float64 array: put (fedexec) / scatter(hash=False) (Dask), then "
                "get / result()")
    elif case == "pass_200mb_to_5_tasks":
        arr = _cases.make_array()
        refs = {}
        for s in systems:
            refs[s.name] = s.put(arr)
            s.result(refs[s.name])
        firsts: dict[str, dict[str, float]] = {}
        for s in systems:  # the first round of each system, once (caches cold)
            firsts[s.name] = _pass_once(s, refs[s.name], True)
        for s in systems:
            measure[s.name] = lambda s=s: _pass_once(s, refs[s.name], False)
        note = "the put ref passed to 5 tasks that return arr[0]"
    elif case == "actor_calls":
        actors = {}
        for s in systems:
            sync = s.actor(_tasks.SyncActor)
            asy = s.actor(_tasks.AsyncActor)
            _cases._first_call(s, sync, "sync actor", child.notes)
            _cases._first_call(s, asy, "async actor", child.notes)
            for _ in range(20):
                s.result(s.call(sync, "ping"))
                s.result(s.call(asy, "ping"))
            actors[s.name] = (sync, asy)

        def actor_round(s: Any) -> dict[str, float]:
            sync, asy = actors[s.name]
            out = _actor_once(s, sync, size["actor_calls"], "sync", size["actor_rt"])
            out.update(_actor_once(s, asy, size["actor_calls"], "async", 0))
            return out

        for s in systems:
            measure[s.name] = lambda s=s: actor_round(s)
        note = (f"{size['actor_calls']:,} calls submitted then gathered; "
                f"{size['actor_rt']:,} sequential calls for the round trip")
    samples: dict[str, dict[str, list[float]]] = {s.name: {} for s in systems}
    for _ in range(reps(quick)):
        for s in systems:
            for metric, value in measure[s.name]().items():
                samples[s.name].setdefault(metric, []).append(value)
    results = {}
    for s in systems:
        values = {m: statistics.median(v) for m, v in samples[s.name].items()}
        if case == "pass_200mb_to_5_tasks":
            values = {**firsts[s.name], **values}
        results[s.name] = values
    child.check = {"per_system": results,
                   "note": f"{note}; median of {reps(quick)} repetition(s)"}


# =========================================================================== spark backend
SPARK_CASES = ("startup", "fedexec_cold_start", "noop_overhead", "round_trip", "chain",
               "large_arg")
PLAIN_SPARK = "plain-pyspark"
FEDEXEC_SPARK = "fedexec-spark"
SPARK_MASTER = f"local[{NUM_CPUS}]"
SPARK_ARRAY_BYTES = 100_000_000  # the large argument: 100 MB of float64 ones


def spark_sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"noop": 40, "round_trip": 10, "chain": 10, "tasks": 4}
    return {"noop": 100, "round_trip": 20, "chain": 30, "tasks": 4}


#: The settings of a session fedexec starts itself (``fedexec.backends.spark._session.
#: DEFAULT_CONF`` and its 127.0.0.1 addresses), written out so that the timed plain
#: session start does not import fedexec.
SPARK_CONF = {"spark.app.name": "fedexec-bench", "spark.ui.enabled": "false",
              "spark.ui.showConsoleProgress": "false", "spark.log.level": "ERROR",
              "spark.python.worker.reuse": "true", "spark.driver.bindAddress": "127.0.0.1",
              "spark.driver.host": "127.0.0.1"}


def start_spark(master: str) -> Any:
    """A classic SparkSession whose Python workers run this interpreter."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master)
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def spark_quiet(sc: Any, timeout: float = 15.0) -> None:
    """Wait until no Spark job runs: fedexec's idle leases (each a Spark job holding
    one of the session's task slots) end ``linger`` (1 s) after their last task, and
    plain pyspark must not find its slots taken."""
    deadline = time.monotonic() + timeout
    while sc.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.05)


def spark_entry(case: str, system: str, label: str, how: str, value: float, unit: str,
                group: str = "", compare: bool = True) -> dict[str, Any]:
    """One measured value; a fedexec entry gets a ratio to every plain entry of its
    ``group`` that has ``compare`` set."""
    return {"case": case, "system": system, "label": label, "how": how, "value": value,
            "unit": unit, "group": group, "compare": compare}


def _spark_first_element(bc: Any) -> Callable[[Any], float]:
    def read(_: Any) -> float:
        return float(bc.value[0])
    return read


def spark_backend_child(case: str, quick: bool, child: Child, args: argparse.Namespace) -> None:
    """One case: one SparkSession, plain pyspark and ``Executor(backend="spark",
    spark=session)`` on it, repetitions alternating (waiting for fedexec's leases to
    end before plain pyspark runs)."""
    import _tasks

    size = spark_sizes(quick)
    entries: list[dict[str, Any]] = []
    child.check = {"entries": entries, "note": ""}
    if case == "fedexec_cold_start":
        t0 = time.perf_counter()
        import fedexec
        from fedexec.backends.spark import stop_session

        ex = fedexec.Executor(backend="spark", num_cpus=NUM_CPUS)
        t1 = time.perf_counter()
        child.closers += [stop_session, lambda: ex.shutdown(wait=True)]
        assert ex.submit(_tasks.link, 1).result() == 2
        t2 = time.perf_counter()
        master = ex._backend.sc.master
        entries += [
            spark_entry(case, FEDEXEC_SPARK, "no session yet: Executor()",
                        f"`import fedexec` + `Executor(backend='spark', num_cpus=2)`: fedexec "
                        f"starts its own session ({master}, the default)", t1 - t0, "s",
                        "session"),
            spark_entry(case, FEDEXEC_SPARK, "its first task",
                        "first `submit(...).result()`: the first lease (a Spark job) and "
                        "Python worker start", t2 - t1, "s", "first"),
            spark_entry(case, FEDEXEC_SPARK, "to the first result", "the two above",
                        t2 - t0, "s", "cold"),
        ]
        child.check["note"] = "one fresh process, measured once"
        return

    t0 = time.perf_counter()
    spark = start_spark(SPARK_MASTER)
    t1 = time.perf_counter()
    sc = spark.sparkContext
    child.closers.append(spark.stop)
    plain_first = _plain_job(sc, [0], _tasks.link)
    t2 = time.perf_counter()
    assert plain_first == [1]
    child.start_s = t1 - t0
    import fedexec

    t2b = time.perf_counter()
    ex = fedexec.Executor(backend="spark", spark=spark)
    t3 = time.perf_counter()
    child.closers.append(lambda: ex.shutdown(wait=True))
    assert ex.submit(_tasks.link, 1).result() == 2
    t4 = time.perf_counter()
    child.notes.append(
        f"one SparkSession ({SPARK_MASTER}, fedexec's default settings, UI off); "
        f"{FEDEXEC_SPARK} = Executor(backend='spark', spark=session): "
        f"{ex.cluster_resources().get('CPU')} CPUs (the session's slots), linger 1 s")
    if case == "startup":
        t5 = time.perf_counter()
        ex2 = fedexec.Executor(backend="spark")
        t6 = time.perf_counter()
        child.closers.append(lambda: ex2.shutdown(wait=True))
        assert ex2.submit(_tasks.link, 1).result() == 2
        t7 = time.perf_counter()
        entries += [
            spark_entry(case, PLAIN_SPARK, "session start",
                        f"`import pyspark` + `SparkSession.builder.master('{SPARK_MASTER}')"
                        ".getOrCreate()` (JVM, SparkContext)", t1 - t0, "s", "session"),
            spark_entry(case, PLAIN_SPARK, "first job",
                        "first `sc.parallelize([0], 1).map(f).collect()` (Python worker "
                        "daemon starts)", t2 - t1, "s", "first"),
            spark_entry(case, PLAIN_SPARK, "to the first result", "the two above", t2 - t0,
                        "s", "cold"),
            spark_entry(case, FEDEXEC_SPARK, "import fedexec", "`import fedexec` (pyspark "
                        "already imported)", (t2b - t2) * 1e3, "ms", "import"),
            spark_entry(case, FEDEXEC_SPARK, "Executor(spark=session)",
                        "`Executor(backend='spark', spark=session)` on the running session",
                        (t3 - t2b) * 1e3, "ms", "on-session"),
            spark_entry(case, FEDEXEC_SPARK, "its first task",
                        "first `submit(...).result()`: launches the first lease (a Spark job; "
                        "its Python worker imports fedexec)", (t4 - t3) * 1e3, "ms",
                        "first-lease"),
            spark_entry(case, FEDEXEC_SPARK, "Executor() on a running session",
                        "`Executor(backend='spark')` with no `spark=`: finds the running "
                        "context", (t6 - t5) * 1e3, "ms", "on-session"),
            spark_entry(case, FEDEXEC_SPARK, "its first task",
                        "its first `submit(...).result()` (a new lease)", (t7 - t6) * 1e3,
                        "ms", "first-lease"),
        ]
        child.check["note"] = "one fresh process, measured once"
        return

    n = size["noop"]
    measure_plain: dict[str, Callable[[], float]] = {}
    measure_fx: dict[str, Callable[[], float]] = {}
    # sample key -> label, how, unit, group, compare (see spark_entry)
    labels: dict[str, tuple[str, str, str, str, bool]] = {}
    if case == "noop_overhead":
        def plain_one_job() -> float:
            dt, out = timed(lambda: _plain_job(sc, range(n), _tasks.link, n))
            assert out == list(range(1, n + 1))
            return dt / n * 1e3

        def plain_n_jobs() -> float:
            import concurrent.futures as cf

            with cf.ThreadPoolExecutor(NUM_CPUS) as pool:
                dt, out = timed(lambda: list(pool.map(
                    lambda i: _plain_job(sc, [i], _tasks.link)[0], range(n))))
            assert out == list(range(1, n + 1))
            return dt / n * 1e3

        def plain_batched() -> float:
            dt, out = timed(lambda: _plain_job(sc, range(n), _tasks.link, NUM_CPUS))
            assert out == list(range(1, n + 1))
            return dt / n * 1e3

        def fx_submit() -> float:
            _fx_warm(ex)
            dt, out = timed(lambda: ex.get([ex.submit(_tasks.link, i) for i in range(n)]))
            assert out == list(range(1, n + 1))
            return dt / n * 1e3

        def fx_map() -> float:
            _fx_warm(ex)
            dt, out = timed(lambda: list(ex.map(_tasks.link, range(n))))
            assert out == list(range(1, n + 1))
            return dt / n * 1e3

        measure_plain = {"one": plain_one_job, "jobs": plain_n_jobs, "batched": plain_batched}
        measure_fx = {"submit": fx_submit, "map": fx_map}
        labels = {
            "plain:one": ("1 job, N partitions",
                          "`sc.parallelize(range(N), N).map(f).collect()`", "ms/call", "noop",
                          True),
            "plain:jobs": ("N 1-partition jobs", f"N x `sc.parallelize([i], 1).map(f)"
                           f".collect()`, from {NUM_CPUS} threads", "ms/call", "noop", True),
            "plain:batched": ("1 job, 2 partitions",
                              f"`sc.parallelize(range(N), {NUM_CPUS}).map(f).collect()`: for "
                              "reference, not one task per call", "ms/call", "noop", False),
            "fx:submit": ("submit + get", "N x `ex.submit(f, i)`, then `ex.get(refs)`",
                          "ms/call", "noop", True),
            "fx:map": ("map", "`list(ex.map(f, range(N)))`", "ms/call", "noop", True),
        }
        child.check["note"] = (f"N = {n} calls of f = x + 1; fedexec's leases warm (an "
                               "untimed batch of 20 tasks first)")
    elif case == "round_trip":
        k = size["round_trip"]

        def plain_rt() -> float:
            samples = [timed(lambda: _plain_job(sc, [0], _tasks.link))[0] for _ in range(k)]
            return statistics.median(samples) * 1e3

        def fx_rt() -> float:
            _fx_warm(ex)
            samples = [timed(lambda: ex.submit(_tasks.link, 0).result())[0] for _ in range(k)]
            return statistics.median(samples) * 1e3

        def fx_rt_cold() -> float:
            spark_quiet(sc)  # every lease has ended: this task launches one
            return timed(lambda: ex.submit(_tasks.link, 0).result())[0] * 1e3

        measure_plain = {"job": plain_rt}
        measure_fx = {"cold": fx_rt_cold, "warm": fx_rt}
        labels = {
            "plain:job": ("1-partition job", "`sc.parallelize([0], 1).map(f).collect()`",
                          "ms", "rt", True),
            "fx:warm": ("submit -> result (idle lease)", "`ex.submit(f, 0).result()` while a "
                        "lease is idle (linger 1 s)", "ms", "rt", True),
            "fx:cold": ("submit -> result (no lease)", "`ex.submit(f, 0).result()` after every "
                        "lease ended: launches a Spark job", "ms", "rt", True),
        }
        child.check["note"] = (f"median of {k} sequential calls per repetition (the "
                               "no-lease one: 1 call)")
    elif case == "chain":
        links = size["chain"]

        def plain_chain() -> float:
            def run() -> int:
                value = 0
                for _ in range(links):
                    (value,) = _plain_job(sc, [value], _tasks.link)
                return value
            dt, out = timed(run)
            assert out == links
            return dt / links * 1e3

        def fx_chain() -> float:
            _fx_warm(ex)

            def run() -> int:
                ref = ex.submit(_tasks.link, 0)
                for _ in range(links - 1):
                    ref = ex.submit(_tasks.link, ref)
                return ref.result()  # type: ignore[no-any-return]
            dt, out = timed(run)
            assert out == links
            return dt / links * 1e3

        measure_plain = {"chain": plain_chain}
        measure_fx = {"chain": fx_chain}
        labels = {
            "plain:chain": ("a job per link", "a 1-partition job per link, the value "
                            "through the driver", "ms/link", "chain", True),
            "fx:chain": ("refs as arguments", "`ref = ex.submit(f, ref)` per link, all "
                         "submitted, then the last `.result()`", "ms/link", "chain", True),
        }
        child.check["note"] = f"{links} links of f = x + 1"
    elif case == "large_arg":
        import numpy as np

        arr = np.ones(SPARK_ARRAY_BYTES // 8, dtype=np.float64)
        tasks = size["tasks"]
        fx_rounds: dict[str, list[dict[str, float]]] = {"quiet": [], "idle": []}
        plain_rounds: list[dict[str, float]] = []

        def plain_big() -> float:
            t0 = time.perf_counter()
            bc = sc.broadcast(arr)
            t1 = time.perf_counter()
            out = sc.parallelize(range(tasks), tasks).map(_spark_first_element(bc)).collect()
            t2 = time.perf_counter()
            again = sc.parallelize(range(tasks), tasks).map(_spark_first_element(bc)).collect()
            t3 = time.perf_counter()
            assert out == again == [1.0] * tasks
            bc.destroy()
            plain_rounds.append({"put": t1 - t0, "first": t2 - t1, "again": t3 - t2})
            return (t2 - t0) * 1e3

        def fx_big(idle_leases: bool) -> float:
            if idle_leases:
                _fx_warm(ex)  # leases without the new broadcast hold both slots
            else:
                spark_quiet(sc)  # no lease runs, as plain pyspark finds the session
            t0 = time.perf_counter()
            ref = ex.put(arr)
            t1 = time.perf_counter()
            out = ex.get([ex.submit(_tasks.first_element, ref) for _ in range(tasks)])
            t2 = time.perf_counter()
            again = ex.get([ex.submit(_tasks.first_element, ref) for _ in range(tasks)])
            t3 = time.perf_counter()
            assert out == again == [1.0] * tasks
            del ref
            fx_rounds["idle" if idle_leases else "quiet"].append(
                {"put": t1 - t0, "first": t2 - t1, "again": t3 - t2})
            return (t2 - t0) * 1e3

        measure_plain = {"big": plain_big}
        measure_fx = {"quiet": lambda: fx_big(False), "idle": lambda: fx_big(True)}
        # untimed warm-up: a 2 MB array through both paths (fedexec: a broadcast too)
        small = np.ones(250_000, dtype=np.float64)
        bc = sc.broadcast(small)
        assert sc.parallelize(range(tasks), tasks).map(_spark_first_element(bc)).collect()
        bc.destroy()
        ref = ex.put(small)
        assert ex.get([ex.submit(_tasks.first_element, ref) for _ in range(tasks)])
        del ref
    samples: dict[str, list[float]] = {}  # (large_arg keeps its rounds itself)
    spark_quiet(sc)  # the first lease (above) must not hold a slot
    for _ in range(reps(quick)):
        for key, fn in measure_plain.items():
            samples.setdefault(f"plain:{key}", []).append(fn())
        for key, fn in measure_fx.items():
            samples.setdefault(f"fx:{key}", []).append(fn())
        spark_quiet(sc)
    if case == "large_arg":
        mb = SPARK_ARRAY_BYTES / 1e6
        fx_how = f"{tasks} x `ex.submit(first_element, ref)`, then `ex.get`"
        for system, rounds_, put_how, task_how in (
                (PLAIN_SPARK, plain_rounds, "`bc = sc.broadcast(arr)`",
                 f"`sc.parallelize(range({tasks}), {tasks}).map(lambda _: bc.value[0])"
                 ".collect()`"),
                (FEDEXEC_SPARK, fx_rounds["quiet"], "`ref = ex.put(arr)`: pickles it on "
                 "the driver; the Spark broadcast is made when a task needs it (so in the "
                 "next row), not comparable alone",
                 f"{fx_how}; no lease running before (as for plain pyspark)")):
            med = {k: statistics.median(r[k] for r in rounds_) * 1e3 for k in rounds_[0]}
            entries += [
                spark_entry(case, system, "put / broadcast", put_how, med["put"], "ms",
                            "put", compare=False),
                spark_entry(case, system, f"{tasks} tasks, first", task_how, med["first"],
                            "ms", "first", compare=False),
                spark_entry(case, system, "put + first", "the two above",
                            med["put"] + med["first"], "ms", "total"),
                spark_entry(case, system, f"{tasks} tasks again", "the same again (same "
                            "broadcast / ref)", med["again"], "ms", "again"),
            ]
        med = {k: statistics.median(r[k] for r in fx_rounds["idle"]) * 1e3
               for k in fx_rounds["idle"][0]}
        entries += [
            spark_entry(case, FEDEXEC_SPARK, f"{tasks} tasks, first, idle leases",
                        f"{fx_how}, just after other tasks: {NUM_CPUS} idle leases (without "
                        "the new broadcast) hold the session's slots until they linger out",
                        med["first"], "ms", "first", compare=False),
            spark_entry(case, FEDEXEC_SPARK, "put + first, idle leases", "the two above",
                        med["put"] + med["first"], "ms", "total"),
        ]
        child.check["note"] = (f"a {mb:.0f} MB float64 array, a new put/broadcast per "
                               f"repetition; {tasks} tasks each return arr[0]; median of "
                               f"{reps(quick)}")
        return
    for key, values in samples.items():
        system = PLAIN_SPARK if key.startswith("plain:") else FEDEXEC_SPARK
        label, how, unit, group, compare = labels[key]
        entries.append(spark_entry(case, system, label, how, statistics.median(values), unit,
                                   group, compare))
    child.check["note"] += f"; median of {reps(quick)} repetition(s), systems alternating"


def _plain_job(sc: Any, data: Any, fn: Callable[[Any], Any], parts: int = 1) -> list[Any]:
    return sc.parallelize(data, parts).map(fn).collect()  # type: ignore[no-any-return]


def _fx_warm(ex: Any) -> None:
    """Untimed: 20 tasks, so that leases are running and idle (they linger 1 s)."""
    import _tasks

    ex.get([ex.submit(_tasks.noop) for _ in range(20)])


def render_spark_backend(results: list[dict[str, Any]], skipped: dict[str, str]) -> str:
    lines = [f"### spark-backend: {SECTIONS['spark-backend']['title']}", "",
             f"fedexec / plain = {FEDEXEC_SPARK}'s value / {PLAIN_SPARK}'s (times: below 1 "
             f"is faster); every case on one SparkSession ({SPARK_MASTER}) shared by both, "
             "except `fedexec_cold_start`", "",
             "| case | system | what | value | unit | fedexec / plain |",
             "|---|---|---|---:|---|---|"]
    notes: list[str] = []
    entries = [e for r in results if r["status"] == "ok" for e in r["check"]["entries"]]
    for r in results:
        case = r["system"]
        if r["status"] != "ok":
            short = r.get("error", "").strip().splitlines()[-1:] or [r["status"]]
            lines.append(f"| {case} | - | {r['status']}: {short[0]} | | | |")
            continue
        notes.append(f"- {case}: {r['check']['note']}")
        for e in (e for e in entries if e["case"] == case):
            ratio = ""
            if e["system"] == FEDEXEC_SPARK and e["compare"]:
                # the plain entries of the same group (startup: across the two cases)
                plains = [p for p in entries if p["system"] == PLAIN_SPARK and p["compare"]
                          and p["group"] == e["group"]
                          and (p["case"] == case or (case == "fedexec_cold_start"
                                                     and p["case"] == "startup"))]
                parts = [f"{e['value'] / p['value']:.3g}x" + (
                         f" vs {p['label']}" if len(plains) > 1 else "")
                         for p in plains if p["value"] > 0]
                ratio = "; ".join(parts)
            lines.append(f"| {case} | {e['system']} | {e['label']} | {runner.fmt(e['value'])} "
                         f"| {e['unit']} | {ratio} |")
            how = f"- {case} / {e['system']} / {e['label']}: {e['how']}"
            if e["how"] and how not in notes:
                notes.append(how)
        notes += [f"- {n}" for n in r.get("notes", []) if f"- {n}" not in notes]
    notes += [f"- skipped {name}: {why}" for name, why in skipped.items()]
    return "\n".join([*lines, "", *notes]) + "\n"


# =========================================================================== parent
SECTIONS: dict[str, dict[str, Any]] = {
    "joblib": {"systems": JOBLIB_SYSTEMS, "requires": JOBLIB_REQUIRES, "run": joblib_child,
               "reference": "fedexec-native", "check": joblib_check,
               "title": "GridSearchCV on joblib backends (issue 6, item 4)"},
    "dask": {"systems": DASK_SYSTEMS, "requires": DASK_REQUIRES, "run": dask_child,
             "reference": "fedexec-native",
             "check": lambda c: numeric_check(c, 1e-9),
             "title": "Dask collections on Dask schedulers (issue 6, item 4)"},
    "modin": {"systems": MODIN_SYSTEMS, "requires": MODIN_REQUIRES, "run": modin_child,
              "reference": "fedexec-native",
              "check": lambda c: numeric_check(c, 1e-9),
              "title": "Modin engines and plain pandas (issue 6, item 4)"},
    "dask-backend": {"systems": DASK_BACKEND_CASES,
                     "requires": dict.fromkeys(DASK_BACKEND_CASES, ("distributed", "fedexec")),
                     "run": dask_backend_child, "reference": PLAIN, "check": None,
                     "title": "fedexec's dask backend vs plain Dask (issue 5, item 6)"},
    "spark-backend": {"systems": SPARK_CASES,
                      "requires": {c: ("pyspark", "fedexec", "numpy") if c == "large_arg"
                                   else ("pyspark", "fedexec") for c in SPARK_CASES},
                      "run": spark_backend_child, "reference": PLAIN_SPARK, "check": None,
                      "title": "fedexec's spark backend vs plain pyspark (issue 5, item 6)"},
}


def missing(packages: tuple[str, ...]) -> list[str]:
    return [p for p in packages if find_spec(p) is None]


def run_child(section: str, name: str, quick: bool, timeout: float, env: dict[str, str],
              extra: list[str]) -> dict[str, Any]:
    """One (section, system or case) in a fresh process session; its parsed result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", section, name, *extra]
    if quick:
        cmd.append("--quick")
    result = runner.spawn(cmd, name, timeout, env)
    result["system"] = name
    return result


def cell(value: float, ref: float | None) -> str:
    ratio = f" ({value / ref:.2f}x)" if ref else ""
    return f"{runner.fmt(value)}{ratio}"


def table_and_notes(title: str, ref: str | None, results: list[dict[str, Any]],
                    skipped: dict[str, str]) -> tuple[list[str], list[str]]:
    """A section's table (metrics down, systems across: value and ratio to ``ref``)
    and its notes (the metrics', the systems', failures, skipped systems)."""
    ok = [r for r in results if r["status"] == "ok"]
    metrics: list[tuple[str, str]] = []
    for r in ok:
        for rw in r["rows"]:
            if (rw["metric"], rw["better"]) not in metrics:
                metrics.append((rw["metric"], rw["better"]))
    names = [r["system"] for r in results]
    value = {(r["system"], rw["metric"]): rw["value"] for r in ok for rw in r["rows"]}
    lines = [title, "",
             f"value (ratio = value / {ref}'s value)" if ref else "no system finished", "",
             "| metric | better | " + " | ".join(names) + " |",
             "|---|---|" + "---:|" * len(names)]
    for metric, better in metrics:
        base = value.get((ref, metric))
        cells = []
        for r in results:
            v = value.get((r["system"], metric))
            cells.append(cell(v, base) if v is not None else
                         (r["status"] if r["status"] != "ok" else "-"))
        lines.append(f"| {metric} | {better} | " + " | ".join(cells) + " |")
    notes: list[str] = []
    for r in ok:
        for rw in r["rows"]:
            if rw.get("note") and f"- {rw['metric']}: {rw['note']}" not in notes:
                notes.append(f"- {rw['metric']}: {rw['note']}")
    for r in results:
        notes += [f"- {n}" for n in r.get("notes", []) if f"- {n}" not in notes]
        if r["status"] != "ok":
            last = r.get("error", "").strip().splitlines()[-1:] or ["(no message)"]
            notes.append(f"- {r['system']}: {r['status']}: {last[0]}")
    notes += [f"- skipped {name}: {why}" for name, why in skipped.items()]
    return lines, notes


def render_section(section: str, results: list[dict[str, Any]], skipped: dict[str, str]
                   ) -> str:
    """Metrics down, systems across: value (ratio to the reference system)."""
    spec = SECTIONS[section]
    lines, notes = table_and_notes(f"### {section}: {spec['title']}", spec["reference"],
                                   results, skipped)
    checks = {r["system"]: r["check"] for r in results
              if r["status"] == "ok" and r.get("check") is not None}
    if spec["check"] is not None and len(checks) > 1:
        notes += [f"- {line}" for line in spec["check"](checks)]
    return "\n".join([*lines, "", *notes]) + "\n"


def render_dask_backend(results: list[dict[str, Any]], skipped: dict[str, str]) -> str:
    lines = [f"### dask-backend: {SECTIONS['dask-backend']['title']}", "",
             f"slowdown = how many times slower {FEDEXEC_DASK} is than {PLAIN} (time ratio; "
             f"for rates, {PLAIN}'s rate / {FEDEXEC_DASK}'s); target <= {TARGET}x", "",
             f"| case | metric | better | {PLAIN} | {PLAIN_RES} | {FEDEXEC_DASK} | "
             "slowdown | target met |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    notes: list[str] = []
    for r in results:
        case = r["system"]
        if r["status"] != "ok":
            short = r.get("error", "").strip().splitlines()[-1:] or [r["status"]]
            lines.append(f"| {case} | - | | {r['status']}: {short[0]} | | | | |")
            continue
        per = r["check"]["per_system"]
        notes.append(f"- {case}: {r['check']['note']}")
        for metric, v_plain in per.get(PLAIN, {}).items():
            better = BETTER.get(metric, "lower")
            v_fx = per.get(FEDEXEC_DASK, {}).get(metric)
            v_res = per.get(PLAIN_RES, {}).get(metric)
            if v_fx is None:
                slow, met = "-", "-"
            else:
                s = v_plain / v_fx if better == "higher" else v_fx / v_plain
                slow, met = f"{s:.2f}x", "yes" if s <= TARGET else "**no**"
            res = runner.fmt(v_res) if v_res is not None else "n/a"
            fx = runner.fmt(v_fx) if v_fx is not None else "-"
            lines.append(f"| {case} | {metric} | {better} | {runner.fmt(v_plain)} | {res} | "
                         f"{fx} | {slow} | {met} |")
        notes += [f"- {n}" for n in r.get("notes", []) if f"- {n}" not in notes]
    notes += [f"- skipped {name}: {why}" for name, why in skipped.items()]
    return "\n".join([*lines, "", *notes]) + "\n"


def child_main(section: str, name: str, quick: bool, args: argparse.Namespace) -> int:
    child = Child()
    result: dict[str, Any] = {"system": name, "section": section}
    try:
        SECTIONS[section]["run"](name, quick, child, args)
        result.update(status="ok")
    except Exception:
        result.update(status="error", error=traceback.format_exc(limit=10))
    result.update(rows=child.rows, notes=child.notes, check=child.check,
                  start_s=child.start_s)
    emit(MARK_RESULT, result)
    timer = _watchdog(60.0, f"{name} shutdown")
    for close in reversed(child.closers):
        try:
            close()
        except Exception as exc:
            emit(MARK_NOTE, f"{name}: shutdown step raised {type(exc).__name__}: {exc}")
    timer.cancel()
    return 0


@contextlib.contextmanager
def csv_files(quick: bool, needed: bool) -> Iterator[list[str]]:
    """``--csv`` and ``--small-csv`` arguments for the modin children (temp files)."""
    if not needed:
        yield []
        return
    tmp = Path(tempfile.mkdtemp(prefix="fedexec-bench-"))
    try:
        big, small = tmp / "data.csv", tmp / "small.csv"
        t0 = time.perf_counter()
        write_csv(big, modin_rows(quick))
        write_csv(small, 20_000, seed=2)
        print(f"  wrote {big} ({big.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        yield ["--csv", str(big), "--small-csv", str(small)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def versions() -> str:
    out = []
    for pkg in PACKAGES:
        try:
            out.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            out.append(f"{pkg} not installed")
    return ", ".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 1 repetition")
    parser.add_argument("--only", metavar="SECTIONS",
                        help=f"comma-separated sections (default all: {', '.join(SECTIONS)})")
    parser.add_argument("--json", metavar="PATH", help="also write every result as JSON")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="limit for one child process (default 300)")
    parser.add_argument("--child", nargs=2, metavar=("SECTION", "NAME"), help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--small-csv", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child[0], args.child[1], args.quick, args)

    sections = runner._names(args.only, list(SECTIONS), "section")
    facts = runner.machine_facts()
    command = " ".join(["python benchmarks/integrations.py",
                        *(sys.argv[1:] if argv is None else argv)])
    print(f"# fedexec integration benchmarks{' (--quick)' if args.quick else ''}\n")
    print(f"- command: `{command}`")
    print(f"- date: {facts['date']}")
    print(f"- machine: {facts['cpus']} CPUs, {facts.get('memory_gib', '?')} GiB RAM, "
          f"{facts['platform']}, Python {facts['python']}")
    print(f"- versions: {versions()}")
    print(f"- fedexec source: git {facts['fedexec_git']}")
    print(f"- every system gets {NUM_CPUS} CPUs; each value is the median of "
          f"{reps(args.quick)} timed repetition(s) after a warm-up; timeout "
          f"{args.timeout:.0f} s per child process\n", flush=True)

    env = child_env()
    all_results: dict[str, list[dict[str, Any]]] = {}
    t_all = time.perf_counter()
    with csv_files(args.quick, "modin" in sections and find_spec("pandas") is not None) as extra:
        for section in sections:
            spec = SECTIONS[section]
            skipped: dict[str, str] = {}
            results = []
            for name in spec["systems"]:
                lacking = missing(spec["requires"][name])
                if lacking:
                    skipped[name] = f"package(s) {', '.join(lacking)} not installed"
                    print(f"- {section}: skipped {name}: {skipped[name]}", flush=True)
                    continue
                print(f"  running {section} / {name} ...", end="", file=sys.stderr, flush=True)
                r = run_child(section, name, args.quick, args.timeout, env, extra)
                print(f" {r['status']} ({r['wall_s']:.1f} s)", file=sys.stderr, flush=True)
                if r["status"] == "error":
                    print(r.get("error", ""), file=sys.stderr)
                results.append(r)
            all_results[section] = results
            if section == "dask-backend":
                print(render_dask_backend(results, skipped), flush=True)
            elif section == "spark-backend":
                print(render_spark_backend(results, skipped), flush=True)
            else:
                print(render_section(section, results, skipped), flush=True)
    print(f"total wall time {time.perf_counter() - t_all:.0f} s")
    if args.json:
        payload = {"command": command, "quick": args.quick, "machine": facts,
                   "results": all_results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
