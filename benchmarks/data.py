"""Data benchmarks: fedexec.data against Ray Data, Dask DataFrame and one pandas process.

Usage::

    python benchmarks/data.py [--quick | --scale S] [--only CASES] [--systems SYSTEMS]
                              [--reps N] [--row-filter] [--json out.json]
                              [--timeout SECONDS] [--data-dir DIR]

Cases (issue 12; ``--only etl,take`` runs some of them, in the order given):

    etl        P1: ~2 GB of Parquet -> map_batches (numeric transform) -> filter ->
               groupby-mean -> write Parquet
    inference  P2: 1M rows through a callable class holding a small torch MLP
               (an actor pool of 2)
    shuffle    P3: random_shuffle of ~1 GB, then sort by a key
    streaming  P4: the P1 read + map_batches with the object store at 1/10 of the
               data: time, peak memory of all the system's processes, bytes spilled
    take       take(10) latency on lazy plans of ~10 GB (a range, a Parquet read)

Data flow::

    data.py ── writes the data sets (Parquet, a temporary directory) ──┐
       │                                                               ▼
       └──for each case, for each system──▶ python data.py --child CASE SYSTEM
       ▲                                     (a session leader) fresh runtime: start,
       │ "@@RESULT@@ {json}" on stdout       warm up on one file, measure, check,
       └─────────────────────────────────────print, shut down
       after --timeout: the child's whole process tree is killed ("timeout")

Every system reads the same files and applies the same functions (``_data_work``);
each child returns a check payload (the groupby means, the prediction sum, the sort's
block summaries, ...) that is compared with the pandas floor's: a difference is
printed as ``MISMATCH`` and makes the exit status 1. fedexec.data is skipped, with
a printed line, while ``import fedexec.data`` fails; so is any system whose package
is missing. The data directory is removed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _data_cases as cases  # noqa: E402  (needs HERE on sys.path)
import _data_systems as systems  # noqa: E402
import _data_work as work  # noqa: E402
import integrations  # noqa: E402  (cell: a value with its ratio)
import run as runner  # noqa: E402  (spawn, number format, machine facts, name lists)
from _child import MARK_NOTE, MARK_RESULT, _watchdog, emit  # noqa: E402
from _env import child_env  # noqa: E402

GB = 10**9
MIB = 2**20
QUICK_SCALE = 0.05
STORE_BYTES = 4 * GB  # object store of P1-P3 and take (Dask: both workers' memory)
MIN_STORE_BYTES = 100 * MIB  # Ray refuses a store under 75 MiB
PACKAGES = ("fedexec", "ray", "dask", "distributed", "pandas", "pyarrow", "torch", "numpy")

#: system -> the modules it needs (checked with find_spec; fedexec.data is imported)
REQUIRES = {"fedexec-native": ("pandas", "pyarrow"), "ray": ("ray", "pandas", "pyarrow"),
            "dask": ("distributed", "dask", "pandas", "pyarrow"),
            "pandas": ("pandas", "pyarrow")}
REFERENCE = "fedexec-native"
FLOOR = "pandas"

#: issue 12's targets, checked when fedexec-native ran: (case, metric, other system,
#: the largest fedexec/other time ratio allowed)
TARGETS = [
    ("etl", "ETL s", "ray", 1 / 1.5), ("inference", "inference s", "ray", 1 / 1.5),
    ("shuffle", "shuffle+sort s", "ray", 1 / 1.5),
    ("etl", "ETL s", "dask", 1.0), ("inference", "inference s", "dask", 1.0),
    ("shuffle", "shuffle+sort s", "dask", 1.0),
    ("etl", "ETL s", "pandas", 1.5),
]


# --------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class DataSpec:
    name: str
    target_bytes: float  # at scale 1
    parts: int           # files at scale 1
    min_rows: int


DATA = {
    "etl": DataSpec("etl", 2 * GB, 40, 50_000),
    "features": DataSpec("features", 128e6, 8, 20_000),  # 1M rows of 128 B
    "sort": DataSpec("sort", 1 * GB, 20, 50_000),
}


def write_data(root: str, names: set[str], scale: float) -> tuple[dict[str, list[str]],
                                                                 dict[str, int]]:
    """Write the data sets ``names`` under ``root`` at ``scale``; their files and
    in-memory bytes."""
    files: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for name in sorted(names):
        spec = DATA[name]
        per_row = work.row_bytes(name)
        rows = max(spec.min_rows, round(spec.target_bytes * scale / per_row))
        parts = spec.parts if name == "features" else max(4, round(spec.parts * scale))
        t0 = time.perf_counter()
        files[name] = work.write_dataset(os.path.join(root, name), name, rows, parts,
                                         seed=len(name))
        sizes[name] = rows * per_row
        disk = sum(os.path.getsize(p) for p in files[name])
        print(f"- data {name}: {rows:,} rows in {len(files[name])} Parquet files, "
              f"{sizes[name] / 1e6:,.0f} MB in memory, {disk / 1e6:,.0f} MB on disk "
              f"(written in {time.perf_counter() - t0:.1f} s)", flush=True)
    return files, sizes


# --------------------------------------------------------------------------- child
def child_main(case: str, name: str, ctx_path: str) -> int:
    """One (case, system) in this fresh process: start, measure, print, shut down."""
    ctx = cases.Context(**json.loads(Path(ctx_path).read_text()))
    system = systems.make(name)
    result: dict[str, Any] = {"system": name, "case": case, "notes": []}
    store = (ctx.stream_store_bytes if case == "streaming" and system.object_store
             else ctx.store_bytes)
    started = False
    try:
        t0 = time.perf_counter()
        system.start(store)
        started = True
        result["start_s"] = time.perf_counter() - t0
        load = os.getloadavg()[0]
        rows, notes, check = cases.CASES[case](system, ctx)
        result.update(status="ok", rows=rows, check=check)
        result["notes"] += notes
        result["notes"].append(f"{name}: load average (1 min) {load:.1f} when the case "
                               f"started, {os.getloadavg()[0]:.1f} when it ended "
                               f"({systems.NUM_CPUS} CPUs; other processes' load slows "
                               "every system)")
    except Exception:
        result.update(status="error", rows=[], error=traceback.format_exc(limit=12))
    emit(MARK_RESULT, result)
    if started:
        timer = _watchdog(60.0, f"{name} shutdown")
        try:
            system.shutdown()
        except Exception as exc:
            emit(MARK_NOTE, f"{name}: shutdown raised {type(exc).__name__}: {exc}")
        timer.cancel()
    return 0


# --------------------------------------------------------------------------- parent


def unavailable(name: str, python: str, env: dict[str, str]) -> str | None:
    """Why system ``name`` cannot run here, or None."""
    lacking = [m for m in REQUIRES[name] if find_spec(m) is None]
    if lacking:
        return f"package(s) {', '.join(lacking)} not installed (pip install -e '.[bench]')"
    if name == "fedexec-native":
        try:
            probe = subprocess.run([python, "-c", "import fedexec.data"], capture_output=True,
                                   text=True, timeout=120, env=env)
        except subprocess.TimeoutExpired:
            return "import fedexec.data did not finish within 120 s"
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["(no message)"])[-1]
            return f"import fedexec.data failed ({last})"
    return None


def render(case: str, results: list[dict[str, Any]], skipped: dict[str, str]
           ) -> tuple[str, bool]:
    """The case's table (metrics down, systems across: value and ratio to the
    reference), its notes and its check; and whether the check passed."""
    ok = [r for r in results if r["status"] == "ok"]
    ref = next((s for s in (REFERENCE, FLOOR) if any(r["system"] == s for r in ok)), None)
    lines, notes = integrations.table_and_notes(f"### {case}: {cases.TITLES[case]}", ref,
                                                results, skipped)
    checks = {r["system"]: r["check"] for r in ok if r.get("check") is not None}
    passed = True
    if checks:
        check_ref = FLOOR if FLOOR in checks else next(iter(checks))
        passed, check_lines = cases.compare(case, checks, check_ref)
        notes += [f"- {'**' if not passed else ''}{line}{'**' if not passed else ''}"
                  for line in check_lines]
    return "\n".join([*lines, "", *notes]) + "\n", passed


def render_targets(results: list[dict[str, Any]], ctx: cases.Context) -> str | None:
    """Issue 12's targets for fedexec-native, met or missed; None if it did not run."""
    value = {(r["case"], r["system"], rw["metric"]): rw["value"]
             for r in results if r["status"] == "ok" for rw in r["rows"]}
    if not any(s == REFERENCE for _, s, _ in value):
        return None
    lines = ["### targets (issue 12)", "", "| target | fedexec-native | other | met |",
             "|---|---:|---:|---|"]
    for case, metric, other, limit in TARGETS:
        fx, ot = value.get((case, REFERENCE, metric)), value.get((case, other, metric))
        if fx is None or ot is None:
            continue
        speed = ot / fx
        want = f">= {1 / limit:.2g}x {other}'s throughput" if limit <= 1 else \
            f"within {limit:.2g}x of {other}'s time"
        lines.append(f"| {case}: {want} | {runner.fmt(fx)} s | {runner.fmt(ot)} s "
                     f"({speed:.2f}x) | {'yes' if fx / ot <= limit else '**no**'} |")
    for case, metric in (("etl", "ETL CPU s"), ("inference", "inference CPU s"),
                         ("shuffle", "shuffle+sort CPU s")):
        fx, ot = value.get((case, REFERENCE, metric)), value.get((case, FLOOR, metric))
        if fx is not None and ot is not None:
            lines.append(f"| {case}: CPU s of all processes vs {FLOOR} (for information: "
                         f"the work done, less sensitive to load) | {runner.fmt(fx)} s | "
                         f"{runner.fmt(ot)} s ({fx / ot:.2f}x the CPU) | - |")
    peak = value.get(("streaming", REFERENCE, "peak memory held MB"))
    if peak is not None:
        limit_mb = (ctx.stream_store_bytes + GB) / 1e6
        lines.append(f"| streaming: peak memory <= store + 1 GB ({limit_mb:,.0f} MB) | "
                     f"{runner.fmt(peak)} MB | | {'yes' if peak <= limit_mb else '**no**'} |")
    spilled = value.get(("streaming", REFERENCE, "spilled % of data"))
    if spilled is not None:
        lines.append(f"| streaming: spilled < 20% of the data | {spilled:.1f}% | | "
                     f"{'yes' if spilled < 20 else '**no**'} |")
    for metric in ("take(10) on range s", "take(10) on read_parquet s"):
        t = value.get(("take", REFERENCE, metric))
        if t is not None:
            lines.append(f"| {metric.removesuffix(' s')} < 1 s | {runner.fmt(t)} s | | "
                         f"{'yes' if t < 1 else '**no**'} |")
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--quick", action="store_true",
                        help=f"small data (--scale {QUICK_SCALE}) for a quick run")
    parser.add_argument("--scale", type=float, metavar="S",
                        help="data size factor (1 = 2 GB ETL, 1M inference rows, 1 GB sort)")
    parser.add_argument("--only", metavar="CASES",
                        help=f"comma-separated cases (default all: {', '.join(cases.CASES)})")
    parser.add_argument("--systems", metavar="SYSTEMS",
                        help=f"comma-separated systems (default all: {', '.join(systems.SYSTEMS)})")
    parser.add_argument("--reps", type=int, default=1, metavar="N",
                        help="timed runs per case after the warm-up; the median is shown")
    parser.add_argument("--row-filter", action="store_true",
                        help="P1 filters with Dataset.filter(fn) per row on fedexec and Ray "
                             "(default: a pandas mask per batch, as on Dask and pandas)")
    parser.add_argument("--json", metavar="PATH", help="also write every result as JSON")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="limit for one (case, system) child process (default 600)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="where to write the data (a new temporary directory inside it)")
    parser.add_argument("--child", nargs=3, metavar=("CASE", "SYSTEM", "CTX"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(*args.child)

    case_names = runner._names(args.only, list(cases.CASES), "case")
    wanted = runner._names(args.systems, list(systems.SYSTEMS), "system")
    scale = args.scale if args.scale is not None else (QUICK_SCALE if args.quick else 1.0)
    facts = runner.machine_facts()
    command = " ".join(["python benchmarks/data.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"# fedexec data benchmarks (scale {scale:g})\n")
    print(f"- command: `{command}`")
    print(f"- date: {facts['date']}")
    print(f"- machine: {facts['cpus']} CPUs, {facts.get('memory_gib', '?')} GiB RAM, "
          f"{facts['platform']}, Python {facts['python']}")
    print(f"- versions: {versions()}")
    print(f"- fedexec source: git {facts['fedexec_git']} ({HERE.parent / 'src'} comes first "
          f"on the children's PYTHONPATH)")
    print(f"- load average (1, 5, 15 min) at the start: "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")

    env = child_env()
    skipped: dict[str, str] = {}
    names = []
    for name in wanted:
        why = unavailable(name, sys.executable, env)
        if why is None:
            names.append(name)
        else:
            skipped[name] = why
            print(f"- skipped {name}: {why}")
    if "inference" in case_names and find_spec("torch") is None:
        print("- skipped case inference: torch is not installed (see benchmarks/README.md)")
        case_names.remove("inference")
    for name in names:
        for note in systems.make(name).notes:
            print(f"- {note}")
    print(f"- every system gets {systems.NUM_CPUS} CPUs; timeout {args.timeout:.0f} s per "
          f"(case, system) child", flush=True)

    root = tempfile.mkdtemp(prefix="fedexec-databench-", dir=args.data_dir)
    all_results: list[dict[str, Any]] = []
    all_passed = True
    t_all = time.perf_counter()
    try:
        needed = {d for c in case_names for d in cases.NEEDS_DATA[c]}
        files, sizes = write_data(root, needed, scale)
        stream_store = max(MIN_STORE_BYTES, sizes.get("etl", 0) // 10)
        ctx = cases.Context(files=files, data_bytes=sizes, out_dir=os.path.join(root, "out"),
                            reps=args.reps, row_filter=args.row_filter,
                            store_bytes=STORE_BYTES, stream_store_bytes=stream_store,
                            take_rows=10 * GB // 8, take_copies=5)
        print(f"- memory: Ray's and fedexec's object store {STORE_BYTES / 1e6:,.0f} MB, in P4 "
              f"{stream_store / 1e6:,.0f} MB (1/10 of the ETL data, at least "
              f"{MIN_STORE_BYTES / 1e6:.0f} MB); Dask: memory_limit "
              f"{STORE_BYTES / systems.NUM_CPUS / 1e6:,.0f} MB per worker in every case\n",
              flush=True)
        ctx_path = os.path.join(root, "context.json")
        Path(ctx_path).write_text(json.dumps(dataclasses.asdict(ctx)))
        for case in case_names:
            results = []
            for name in names:
                print(f"  running {case} / {name} ...", end="", file=sys.stderr, flush=True)
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, name,
                       ctx_path]
                r = runner.spawn(cmd, name, args.timeout, env)
                r.update(system=name, case=case)
                print(f" {r['status']} ({r['wall_s']:.1f} s)", file=sys.stderr, flush=True)
                if r["status"] == "error":
                    print(r.get("error", ""), file=sys.stderr)
                results.append(r)
            all_results += results
            text, passed = render(case, results, skipped)
            print(text, flush=True)
            if not passed:
                all_passed = False
                print(f"!!! MISMATCH in {case}: see above", file=sys.stderr, flush=True)
        targets = render_targets(all_results, ctx)
        if targets:
            print(targets, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"total wall time {time.perf_counter() - t_all:.0f} s")
    if args.json:
        payload = {"command": command, "scale": scale, "machine": facts,
                   "context": dataclasses.asdict(ctx), "skipped": skipped,
                   "results": all_results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
