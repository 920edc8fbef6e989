"""The cases of ``data.py``, each written once against ``_data_systems.DataSystem``.

A case takes a started system and the run's :class:`Context` and returns
``(rows, notes, check)``: rows ``{"metric", "value", "better", "note"}``, notes
(strings), and a JSON-able ``check`` payload that ``data.py`` compares across
systems (:data:`CHECKS`). Every case first runs its workload once, untimed, on one
file (workers start, import pandas, pyarrow and torch, fill their caches); the
median of ``reps`` timed runs follows.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _data_work as work
from _data_systems import DataSystem
from _memwatch import MemoryWatch, cpu_between, system_cpu

MB = 10**6
TAKE_REPS = 3


@dataclass
class Context:
    """What the runner tells every child (written as JSON, read back)."""

    files: dict[str, list[str]]   # data set name -> its Parquet files
    data_bytes: dict[str, int]    # data set name -> in-memory bytes
    out_dir: str                  # where ETL outputs go (removed after the check)
    reps: int
    row_filter: bool
    store_bytes: int              # object store (Dask: workers' memory) of P1-P3, take
    stream_store_bytes: int       # the same for P4
    take_rows: int                # rows of the lazy range plan
    take_copies: int              # how many times the read plan lists the ETL files


def row(metric: str, value: float, better: str, note: str = "") -> dict[str, Any]:
    return {"metric": metric, "value": value, "better": better, "note": note}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def repeat(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Median seconds of ``n`` runs of ``fn``, and the last run's result."""
    seconds, _, out = repeat_cpu(n, fn)
    return seconds, out


def repeat_cpu(n: int, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Median seconds and median CPU seconds of all the system's processes
    (``_memwatch.system_cpu``) of ``n`` runs of ``fn``, and the last run's result."""
    times, cpus, out = [], [], None
    for _ in range(max(1, n)):
        before = system_cpu()
        dt, out = timed(fn)
        cpus.append(cpu_between(before, system_cpu()))
        times.append(dt)
    return statistics.median(times), statistics.median(cpus), out


def cpu_row(case: str, cpu: float) -> dict[str, Any]:
    return row(f"{case} CPU s", cpu, "lower",
               "user + system CPU seconds of all the system's processes (the driver, its "
               "descendants, its session) in the timed run: the work done, which other "
               "processes' load changes less than the wall time")


def _runs(ctx: Context) -> str:
    return f"median of {ctx.reps}" if ctx.reps > 1 else "one timed run"


# --------------------------------------------------------------------------- P1
def read_means(out: str) -> dict[str, Any]:
    """The groupby output written under ``out``, by key: the check payload of P1."""
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pandas().sort_values("key")
    return {"keys": [int(k) for k in table["key"]],
            "means": [float(v) for v in table["mean(x)"]]}


def etl(system: DataSystem, ctx: Context) -> tuple[list[Any], list[str], Any]:
    files = ctx.files["etl"]
    base = os.path.join(ctx.out_dir, f"{system.name}-etl")
    system.etl(files[:1], base + "-warm", ctx.row_filter)
    n = 0

    def run() -> str:
        nonlocal n
        n += 1
        out = f"{base}-{n}"
        system.etl(files, out, ctx.row_filter)
        return out

    try:
        seconds, cpu, out = repeat_cpu(ctx.reps, run)
        check = read_means(out)
    finally:
        for i in range(n + 1):
            shutil.rmtree(f"{base}-{i}" if i else base + "-warm", ignore_errors=True)
    mb = ctx.data_bytes["etl"] / MB
    how = ("Dataset.filter(fn) per row" if ctx.row_filter and system.name in
           ("fedexec-native", "ray") else "a pandas mask per batch")
    rows = [row("ETL s", seconds, "lower",
                f"{len(files)} Parquet files, {mb:,.0f} MB in memory: read -> map_batches("
                f"transform, pandas) -> filter x > {work.THRESHOLD} -> groupby(key).mean(x) "
                f"-> write_parquet; {_runs(ctx)}"),
            row("ETL MB/s", mb / seconds, "higher", "in-memory MB read / ETL s"),
            cpu_row("ETL", cpu)]
    return rows, [f"{system.name}: filter = {how}"], check


# --------------------------------------------------------------------------- P2
def inference(system: DataSystem, ctx: Context) -> tuple[list[Any], list[str], Any]:
    files = ctx.files["features"]
    system.infer(system.load(files[:1]))
    data = system.load(files)
    seconds, cpu, (n, total) = repeat_cpu(ctx.reps, lambda: system.infer(data))
    rows = [row("inference s", seconds, "lower",
                f"{n:,} rows x {work.NUM_FEATURES} float32 (already read into the system) "
                f"through a torch MLP {work.NUM_FEATURES}-{work.HIDDEN}-{work.HIDDEN}-1 in "
                f"batches of {work.MODEL_BATCH}, 2 model replicas (actor pool of 2; Dask: "
                f"one model per worker; pandas: one model); {_runs(ctx)}"),
            row("inference rows/s", n / seconds, "higher"), cpu_row("inference", cpu)]
    return rows, [], {"rows": n, "pred_sum": total}


# --------------------------------------------------------------------------- P3
def shuffle(system: DataSystem, ctx: Context) -> tuple[list[Any], list[str], Any]:
    files = ctx.files["sort"]
    system.shuffle_sort(system.load(files[:1]))
    data = system.load(files)
    seconds, cpu, summaries = repeat_cpu(ctx.reps, lambda: system.shuffle_sort(data))
    check = work.check_sorted(summaries)
    mb = ctx.data_bytes["sort"] / MB
    rows = [row("shuffle+sort s", seconds, "lower",
                f"{check['rows']:,} rows, {mb:,.0f} MB (already read into the system): "
                f"random_shuffle(seed=0) then sort('key'), each output block summarised "
                f"where it is; {_runs(ctx)}"),
            row("shuffle+sort MB/s", mb / seconds, "higher"), cpu_row("shuffle+sort", cpu)]
    notes = [f"{system.name}: {check['blocks']} output blocks"]
    del check["blocks"]
    return rows, notes, check


# --------------------------------------------------------------------------- P4
def streaming(system: DataSystem, ctx: Context) -> tuple[list[Any], list[str], Any]:
    files = ctx.files["etl"]
    system.stream(files[:1])
    before = system.spill_info()
    peaks: list[dict[str, Any]] = []

    def run() -> tuple[int, float]:
        watch = MemoryWatch(store_dirs=system.store_dirs, spill_dirs=system.spill_dirs)
        watch.start()
        try:
            return system.stream(files)
        finally:
            peaks.append(watch.stop())

    seconds, cpu, (n, total) = repeat_cpu(ctx.reps, run)
    after = system.spill_info()
    data_mb = ctx.data_bytes["etl"] / MB
    mem = {k: max(p[k] for p in peaks) for k in peaks[0]}
    if "bytes" in after:
        spilled = (after["bytes"] - before.get("bytes", 0.0)) / max(1, len(peaks))
        spill_how = "the system's own counter of bytes written to spill files"
    else:
        spilled = mem["spilled"]
        spill_how = ("the spill directory, watched: the largest size seen of each file, "
                     "added up")
    notes = [f"{system.name}: spilled = {spill_how}"] if system.spills else []
    if "objects" in after:
        notes.append(f"{system.name}: objects spilled: "
                     f"{after['objects'] - before.get('objects', 0.0):.0f}")
    notes.append(f"{system.name}: {mem['samples']} memory samples over up to "
                 f"{mem['processes']} processes")
    store = (f"object store {ctx.stream_store_bytes / MB:,.0f} MB" if system.object_store
             else "no object store")
    rows = [row("streaming s", seconds, "lower",
                f"read -> map_batches(transform) of the ETL files ({data_mb:,.0f} MB), "
                f"consumed by the driver batch by batch; {_runs(ctx)}"),
            row("streaming MB/s", data_mb / seconds, "higher"), cpu_row("streaming", cpu),
            row("peak RSS, all processes MB", mem["peak_rss"] / MB, "lower",
                "VmRSS added up over the driver, its descendants and its session (shared "
                "pages count once per process that maps them)"),
            row("peak memory held MB", mem["peak_total"] / MB, "lower",
                "RssAnon of every process + every shared-memory file they map or keep as "
                "their store (each page once)")]
    if system.object_store:
        rows.append(row("peak shared memory MB", mem["peak_shm"] / MB, "lower",
                        "the shared-memory part of 'peak memory held' (the object store)"))
    if system.spills:
        rows += [row("spilled MB", spilled / MB, "lower", "bytes written to spill files"),
                 row("spilled % of data", 100 * spilled / ctx.data_bytes["etl"], "lower")]
    notes.insert(0, f"{system.name}: {store}")
    return rows, notes, {"rows": n, "x_sum": total}


# --------------------------------------------------------------------------- take
def _squares_ok(rows: list[dict[str, Any]] | None) -> bool:
    return rows is not None and len(rows) == 10 and all(
        int(r["y"]) == int(r["id"]) ** 2 for r in rows)


def _etl_rows_ok(rows: list[dict[str, Any]] | None) -> bool:
    return rows is not None and len(rows) == 10 and all(
        0 <= int(r["key"]) < work.NUM_GROUPS and math.isfinite(float(r["x"])) for r in rows)


def take(system: DataSystem, ctx: Context) -> tuple[list[Any], list[str], Any]:
    files = ctx.files["etl"]
    many = files * ctx.take_copies
    system.take_range(1_000_000)
    system.take_read(files[:1])
    rows: list[Any] = []
    check: dict[str, Any] = {}
    t_range, got = repeat(TAKE_REPS, lambda: system.take_range(ctx.take_rows))
    if got is not None:
        check["range_rows_ok"] = _squares_ok(got)
        rows.append(row("take(10) on range s", t_range, "lower",
                        f"range of {ctx.take_rows:,} int64 ids ({ctx.take_rows * 8 / 1e9:.0f} GB)"
                        f" -> map_batches(y = id * id) -> take(10); median of {TAKE_REPS}"))
    t_read, got = repeat(TAKE_REPS, lambda: system.take_read(many))
    check["read_rows_ok"] = _etl_rows_ok(got)
    gb = ctx.data_bytes["etl"] * ctx.take_copies / 1e9
    rows.append(row("take(10) on read_parquet s", t_read, "lower",
                    f"read_parquet of the {len(files)} ETL files listed {ctx.take_copies} times"
                    f" ({len(many)} files, {gb:,.1f} GB) -> map_batches(transform) -> take(10)"
                    f"; median of {TAKE_REPS} (pandas: the first 10 rows of the first file)"))
    return rows, [], check


CASES: dict[str, Callable[[DataSystem, Context], tuple[list[Any], list[str], Any]]] = {
    "etl": etl, "inference": inference, "shuffle": shuffle, "streaming": streaming,
    "take": take,
}

TITLES = {
    "etl": "P1 ETL: read Parquet -> map_batches -> filter -> groupby-mean -> write Parquet",
    "inference": "P2 batch inference: a callable class holding a torch MLP (actor pool)",
    "shuffle": "P3 shuffle: random_shuffle, then sort by a key",
    "streaming": "P4 streaming: read + map_batches with the object store at 1/10 of the data",
    "take": "take(10) latency on a lazy plan of ~10 GB",
}

#: which data sets each case reads
NEEDS_DATA = {"etl": ("etl",), "inference": ("features",), "shuffle": ("sort",),
              "streaming": ("etl",), "take": ("etl",)}


# --------------------------------------------------------------------------- checks
def _close(a: Any, b: Any, rtol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=rtol,
                                                                  abs_tol=1e-9)
    return bool(a == b)


def _difference(key: str, got: Any, want: Any, rtol: float, ref: str) -> str | None:
    """How ``got`` differs from ``want``, the value ``ref`` has (lists element by
    element), or None."""
    if not isinstance(want, list):
        return None if _close(got, want, rtol) else f"{key} = {got!r} ({ref}: {want!r})"
    if not isinstance(got, list) or len(got) != len(want):
        n = len(got) if isinstance(got, list) else got
        return f"{key} has {n!r} values ({ref}: {len(want)})"
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if not _close(g, w, rtol)]
    if not bad:
        return None
    i = bad[0]
    return (f"{key}[{i}] = {got[i]!r} ({ref}: {want[i]!r}; {len(bad)} of {len(want)} "
            "values differ)")


def compare(case: str, checks: dict[str, Any], reference: str) -> tuple[bool, list[str]]:
    """Compare every system's check payload of ``case`` with ``reference``'s, and
    each payload's own flags (``sorted``, ``*_ok``): ``(all good, lines to print)``."""
    rtol = {"inference": 1e-5}.get(case, 1e-9)
    ref = checks[reference]
    bad = []
    for system, c in checks.items():
        for key, value in c.items():
            if (key.endswith("_ok") or key == "sorted") and value is not True:
                bad.append(f"{system}: {key} is {value!r}")
        if system == reference:
            continue
        for key, want in ref.items():
            diff = _difference(key, c.get(key), want, rtol, reference)
            if diff is not None:
                bad.append(f"{system}: {diff}")
    if bad:
        return False, ["MISMATCH (" + case + "): " + "; ".join(bad)]
    shown = ", ".join(f"{k} {v:.10g}" if isinstance(v, float) else
                      f"{k} {len(v)} values" if isinstance(v, list) else f"{k} {v}"
                      for k, v in ref.items())
    return True, [f"results equal (relative tolerance {rtol:g}) on {', '.join(checks)}: "
                  f"{shown}"]
