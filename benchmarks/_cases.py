"""The benchmark cases, each written once against ``_systems.System``.

A case takes a started system and the ``quick`` flag and returns a list of rows
``{"metric", "value", "better", "note"}`` (``better`` is ``"higher"`` or
``"lower"``), or ``(rows, notes)``. ``NEEDS`` says which cases need a capability
that some systems lack. Every case warms the runtime up before it measures.
``startup`` is the exception: it needs cold processes, so it starts its own, one
``_cold.py`` interpreter per repetition.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _systems
import _tasks
from _systems import System

HERE = Path(__file__).resolve().parent
MB = 10**6
ARRAY_BYTES = 200 * MB
US = "\u00b5s"  # micro sign


#: case -> (System capability it needs, what to say when the system lacks it)
NEEDS = {
    "put_get_200mb": ("object_store", "no object store"),
    "actor_calls": ("actors", "no actors"),
}


def missing_capability(case: str, system: System) -> str | None:
    """Why ``case`` does not apply to ``system``, or None when it does."""
    need = NEEDS.get(case)
    if need is not None and not getattr(system, need[0]):
        return need[1]
    return None


def row(metric: str, value: float, better: str, note: str = "") -> dict[str, Any]:
    return {"metric": metric, "value": value, "better": better, "note": note}


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile of ``samples`` (``q`` in 0..100)."""
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def warm_up(system: System, tasks: int = 20) -> None:
    """Run a few tasks so that workers exist and code paths are warm."""
    system.gather([system.submit(_tasks.noop) for _ in range(tasks)])
    for _ in range(5):
        system.result(system.submit(_tasks.noop))


def make_array() -> Any:
    import numpy as np

    arr = np.ones(ARRAY_BYTES // 8, dtype=np.float64)
    assert arr.nbytes == ARRAY_BYTES
    return arr


# --------------------------------------------------------------------------- tasks
def rounds(quick: bool) -> int:
    """How many times a throughput measurement is repeated (the median is kept)."""
    return 1 if quick else 3


def noop_round(system: Any, n: int) -> tuple[float, float]:
    """Submit ``n`` no-op tasks, then gather them: (tasks/s overall, submits/s)."""
    t0 = time.perf_counter()
    handles = [system.submit(_tasks.noop) for _ in range(n)]
    t1 = time.perf_counter()
    values = system.gather(handles)
    t2 = time.perf_counter()
    assert len(values) == n and values[0] is None
    return n / (t2 - t0), n / (t1 - t0)


def noop_throughput(system: System, quick: bool) -> list[dict[str, Any]]:
    n = 2_000 if quick else 20_000
    warm_up(system)
    totals, submits = [], []
    for _ in range(rounds(quick)):
        total, submit = noop_round(system, n)
        totals.append(total)
        submits.append(submit)
    note = f"{n:,} no-op tasks; median of {rounds(quick)} round(s)"
    return [
        row("tasks/s (submit all, then gather)", statistics.median(totals), "higher", note),
        row("submit-only tasks/s", statistics.median(submits), "higher"),
    ]


def round_trip(system: System, quick: bool) -> list[dict[str, Any]]:
    n = 200 if quick else 2_000
    warm_up(system)
    for _ in range(50):
        system.result(system.submit(_tasks.noop))
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        system.result(system.submit(_tasks.noop))
        samples.append(time.perf_counter() - t0)
    note = f"{n:,} sequential submit+wait of a no-op"
    return [
        row(f"median {US}", statistics.median(samples) * 1e6, "lower", note),
        row(f"p99 {US}", percentile(samples, 99) * 1e6, "lower"),
    ]


def chain(system: System, quick: bool) -> list[dict[str, Any]]:
    n = 500 if quick else 2_000
    warm_up(system)
    per_link = []
    for _ in range(rounds(quick)):
        t0 = time.perf_counter()
        if system.passes_refs:
            ref = system.submit(_tasks.link, 0)
            for _ in range(n - 1):
                ref = system.submit(_tasks.link, ref)
            value = system.result(ref)
            note = f"{n:,} tasks, each takes the previous ref; submitted at once, then get"
        else:
            value = 0
            for _ in range(n):
                value = system.submit(_tasks.link, value).result()
            note = f"{n:,} links; cannot pass futures: the driver waits for each link"
        per_link.append((time.perf_counter() - t0) / n)
        assert value == n, value
    note += f"; median of {rounds(quick)} round(s)"
    return [row(f"{US} per link", statistics.median(per_link) * 1e6, "lower", note)]


# --------------------------------------------------------------------------- objects
def put_get_once(system: Any, arr: Any) -> tuple[float, float]:
    """Put ``arr``, then get it back: (put seconds, get seconds)."""
    t0 = time.perf_counter()
    ref = system.put(arr)
    t1 = time.perf_counter()
    value = system.result(ref)
    t2 = time.perf_counter()
    assert value.shape == arr.shape and value[0] == 1.0
    return t1 - t0, t2 - t1


def put_get_200mb(system: System, quick: bool) -> list[dict[str, Any]]:
    reps = 1 if quick else 3
    warm_up(system)
    system.result(system.put(b"x" * 1000))
    arr = make_array()
    puts, gets = [], []
    for _ in range(reps):
        put_s, get_s = put_get_once(system, arr)
        puts.append(put_s)
        gets.append(get_s)
    note = f"200 MB float64 numpy array; median of {reps}"
    return [
        row("put ms", statistics.median(puts) * 1e3, "lower", note),
        row("get ms", statistics.median(gets) * 1e3, "lower"),
    ]


def pass_200mb_to_5_tasks(system: System, quick: bool) -> list[dict[str, Any]]:
    warm_up(system)
    arr = make_array()
    if system.object_store:
        arg = system.put(arr)
        system.result(arg)  # the put is complete before timing starts
        how = "the put ref passed to 5 tasks that return arr[0]"
    else:
        arg = arr
        how = "no object store: the array passed by value to each of 5 tasks"
    rounds = []
    for _ in range(2 if quick else 3):
        t0 = time.perf_counter()
        values = system.gather([system.submit(_tasks.first_element, arg) for _ in range(5)])
        rounds.append(time.perf_counter() - t0)
        assert all(v == 1.0 for v in values), values
    return [
        row("first round ms", rounds[0] * 1e3, "lower", how),
        row("later rounds ms", statistics.median(rounds[1:]) * 1e3, "lower",
            "median of the repeats (caches may be warm)"),
    ]


# --------------------------------------------------------------------------- actors
def _first_call(system: System, actor: Any, what: str, notes: list[str]) -> None:
    """Make sure ``actor`` answers; notes it when a first call is lost until a
    second call arrives (a bug this harness works around rather than hangs on)."""
    first = system.call(actor, "ping")
    try:
        system.result(first, timeout=10)
    except TimeoutError:
        notes.append(
            f"BUG: the first call to a fresh {what} did not run within 10 s; it ran only "
            "after a second call was submitted"
        )
        system.result(system.call(actor, "ping"), timeout=60)
        system.result(first, timeout=60)


def actor_calls(system: System, quick: bool) -> tuple[list[dict[str, Any]], list[str]]:
    n = 1_000 if quick else 5_000
    reps = 200 if quick else 1_000
    notes: list[str] = []
    warm_up(system, tasks=5)
    rows = []

    def throughput(actor: Any) -> float:
        for _ in range(20):
            system.result(system.call(actor, "ping"))
        rates = []
        for _ in range(rounds(quick)):
            t0 = time.perf_counter()
            values = system.gather_calls([system.call(actor, "ping") for _ in range(n)])
            rates.append(n / (time.perf_counter() - t0))
            # max, not last: Dask runs the calls of one caller out of order
            assert len(values) == n and max(values) >= n, max(values)
        return statistics.median(rates)

    sync = system.actor(_tasks.SyncActor)
    _first_call(system, sync, "sync actor", notes)
    rows.append(row("sync calls/s", throughput(sync), "higher",
                    f"{n:,} calls submitted, then gathered; median of {rounds(quick)} round(s)"))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        system.result(system.call(sync, "ping"))
        samples.append(time.perf_counter() - t0)
    rows.append(row(f"sync round trip median {US}", statistics.median(samples) * 1e6, "lower",
                    f"{reps:,} sequential calls"))
    rows.append(row(f"sync round trip p99 {US}", percentile(samples, 99) * 1e6, "lower"))
    if system.async_actors:
        asy = system.actor(_tasks.AsyncActor)
        _first_call(system, asy, "async actor", notes)
        rows.append(row("async calls/s", throughput(asy), "higher",
                        f"{n:,} calls to an async def method, submitted then gathered; "
                        f"median of {rounds(quick)} round(s)"))
    return rows, notes


# --------------------------------------------------------------------------- startup
def startup(name: str, quick: bool, timeout: float) -> list[dict[str, Any]]:
    """Median of 3 (1 with --quick) cold starts, each in a fresh interpreter."""
    reps = 1 if quick else 3
    runs = []
    for _ in range(reps):  # each cold start gets a share of the case's timeout
        launched = time.time()
        proc = subprocess.run(
            [sys.executable, str(HERE / "_cold.py"), name, repr(launched),
             _systems.IMPORT_STATEMENT[name]],
            capture_output=True, text=True, timeout=timeout / (reps + 1), env=os.environ.copy(),
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@STARTUP@@ ")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise RuntimeError(f"cold start exited {proc.returncode}:\n{tail}")
        runs.append(json.loads(lines[-1].split(" ", 1)[1]))

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    note = f"median of {reps} fresh interpreters"
    return [
        row("start + first task ms", med("start_first_task_ms"), "lower",
            f"{note}; runtime start to first result, after the import"),
        row("import ms", med("import_ms"), "lower",
            f"`{_systems.IMPORT_STATEMENT[name]}` in a fresh interpreter"),
        row("cold total ms", med("cold_total_ms"), "lower",
            "interpreter launch + import + start + first task"),
        row("shutdown ms", med("shutdown_ms"), "lower"),
    ]


#: case name -> function(system, quick); ``startup`` is special-cased by _child.py
CASES: dict[str, Callable[..., Any]] = {
    "noop_throughput": noop_throughput,
    "round_trip": round_trip,
    "chain": chain,
    "put_get_200mb": put_get_200mb,
    "pass_200mb_to_5_tasks": pass_200mb_to_5_tasks,
    "actor_calls": actor_calls,
    "startup": startup,
}
