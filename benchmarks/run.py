"""Side-by-side benchmarks: fedexec against Ray, Dask, loky and the stdlib pool.

Usage::

    python benchmarks/run.py [--quick] [--only CASES] [--systems SYSTEMS]
                             [--json out.json] [--timeout SECONDS]

Data flow::

    run.py ──for each case, for each system──▶ python _child.py SYSTEM CASE
       ▲                                          │ start a fresh runtime, warm up,
       │   "@@RESULT@@ {json}" on stdout          │ measure, print the result,
       └──────────────────────────────────────────┘ shut down
       kills the child's whole process tree after --timeout ("timeout")

Each (system, case) runs in its own process and its own fresh runtime, so a hang
or a crash in one system cannot stall or skew the others. The benchmarks directory
is put on ``PYTHONPATH`` so that every system's workers can import ``_tasks``.
``fedexec-native`` is measured whenever ``"native" in fedexec.backends.available()``;
ratios are against it, or against ``fedexec-local`` while native is absent.
Systems whose package is not installed are skipped with a note.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _systems  # noqa: E402  (needs HERE on sys.path)
from _cases import CASES  # noqa: E402
from _child import MARK_NOTE, MARK_RESULT  # noqa: E402
from _env import child_env  # noqa: E402

PACKAGES = ("fedexec", "ray", "dask", "distributed", "loky", "numpy", "cloudpickle")


# --------------------------------------------------------------------------- processes
def _session_processes(sid: int) -> list[Any]:
    """Live (non-zombie) processes in session ``sid``. The child is started as a
    session leader, so this is the child and everything it started that did not
    leave the session, even after they were re-parented."""
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def _describe(procs: list[Any]) -> str:
    names = []
    for p in procs:
        try:
            names.append(p.name())
        except Exception:
            names.append(str(p.pid))
    return ", ".join(sorted(names))


def _kill_tree(pid: int) -> list[Any]:
    """Kill the child ``pid``, its descendants and its session; the processes killed."""
    try:
        import psutil
    except ImportError:  # the project always has psutil; this is a fallback
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return []
    victims: dict[int, Any] = {}
    try:
        parent = psutil.Process(pid)
        victims[parent.pid] = parent
        for c in parent.children(recursive=True):
            victims[c.pid] = c
    except psutil.NoSuchProcess:
        pass
    for p in _session_processes(pid):
        victims[p.pid] = p
    for p in victims.values():
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(victims.values()), timeout=10)
    return list(victims.values())


def _leftovers(sid: int, grace: float = 5.0) -> list[Any]:
    """Processes of the finished child's session still alive after ``grace`` s
    (killed); empty when everything exited by itself."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        return []
    deadline = time.monotonic() + grace
    while True:
        alive = _session_processes(sid)
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return _kill_tree(sid) if alive else []


def run_child(system: str, case: str, quick: bool, timeout: float,
              env: dict[str, str]) -> dict[str, Any]:
    """Run one (system, case) in a fresh process; its parsed result."""
    cmd = [sys.executable, str(HERE / "_child.py"), system, case, "--timeout", str(timeout)]
    if quick:
        cmd.append("--quick")
    result = spawn(cmd, system, timeout, env)
    if result["status"] in ("timeout", "error") and "case" not in result:
        result.update(system=system, case=case)
    return result


def spawn(cmd: list[str], name: str, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """Run a benchmark child (``cmd``) in its own process session, killed with its
    whole tree on timeout; its result line parsed, with notes about timeouts and
    processes it left behind, and ``wall_s``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True, stdin=subprocess.DEVNULL)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_tree(proc.pid)
        out, err = proc.communicate()
    except KeyboardInterrupt:
        _kill_tree(proc.pid)
        raise
    leftovers = [] if timed_out else _leftovers(proc.pid)
    result: dict[str, Any] | None = None
    notes: list[str] = []
    for line in out.splitlines():
        if line.startswith(MARK_RESULT):
            result = json.loads(line[len(MARK_RESULT):])
        elif line.startswith(MARK_NOTE):
            notes.append(json.loads(line[len(MARK_NOTE):]))
    if result is None:
        tail = (out + err).strip()[-3000:]
        error = (f"timeout after {timeout:.0f} s" if timed_out
                 else f"child exited {proc.returncode} with no result:\n{tail}")
        result = {"status": "timeout" if timed_out else "error", "error": error, "rows": [],
                  "notes": []}
    elif timed_out:
        notes.append(f"{name}: killed after the {timeout:.0f} s timeout (after measuring)")
    if leftovers:
        notes.append(f"{name}: {len(leftovers)} process(es) still running 5 s after the "
                     f"child exited, killed: {_describe(leftovers)}")
    result["notes"] = list(result.get("notes", [])) + notes
    result["wall_s"] = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- tables
def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def reference_system(results: list[dict[str, Any]]) -> str:
    for name in ("fedexec-native", "fedexec-local"):
        if any(r["system"] == name and r["status"] == "ok" for r in results):
            return name
    return "fedexec-local"


def render_case(case: str, results: list[dict[str, Any]], skip_notes: set[str]) -> str:
    """A markdown table for one case: metric by metric, every system; then its notes
    (less ``skip_notes``, the per-system set-up notes printed once at the top)."""
    ref = reference_system(results)
    ref_values = {row["metric"]: row["value"]
                  for r in results if r["system"] == ref for row in r.get("rows", [])}
    metrics: list[str] = []
    for r in results:
        for row in r.get("rows", []):
            if row["metric"] not in metrics:
                metrics.append(row["metric"])
    lines = [f"### {case}", "",
             f"| system | metric | value | better | ratio vs {ref} |", "|---|---|---:|---|---:|"]
    note_systems: dict[str, list[str]] = {}
    for metric in metrics:
        for r in results:
            for row in r.get("rows", []):
                if row["metric"] != metric:
                    continue
                base = ref_values.get(metric)
                ratio = f"{row['value'] / base:.2f}x" if base else "-"
                lines.append(f"| {r['system']} | {metric} | {fmt(row['value'])} | "
                             f"{row['better']} | {ratio} |")
                if row.get("note"):
                    note_systems.setdefault(row["note"], []).append(r["system"])
    for r in results:
        if r["status"] != "ok":
            reason = r.get("error", "").strip().splitlines()
            short = reason[-1] if reason else r["status"]
            if r["status"] not in ("timeout",) and not short.startswith(r["status"]):
                short = f"{r['status']}: {short}"
            lines.append(f"| {r['system']} | - | {short} | | |")
    notes = [f"- {note} ({', '.join(systems)})" for note, systems in note_systems.items()]
    seen = set(skip_notes)
    for r in results:
        for note in r.get("notes", []):
            if note not in seen:
                seen.add(note)
                notes.append(f"- {note}")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def render_summary(results: list[dict[str, Any]], systems: list[str]) -> str:
    """One wide table: every (case, metric) against every system."""
    keys: list[tuple[str, str, str]] = []
    value: dict[tuple[str, str, str], str] = {}
    status: dict[tuple[str, str], str] = {}
    for r in results:
        status[(r["case"], r["system"])] = r["status"]
        for row in r.get("rows", []):
            key = (r["case"], row["metric"], row["better"])
            if key not in keys:
                keys.append(key)
            value[(*key[:2], r["system"])] = fmt(row["value"])
    head = "| case | metric | better | " + " | ".join(systems) + " |"
    lines = ["## Summary", "", head, "|---|---|---|" + "---:|" * len(systems)]
    for case, metric, better in keys:
        cells = [value.get((case, metric, s)) or status.get((case, s), "-").replace("ok", "-")
                 for s in systems]
        lines.append(f"| {case} | {metric} | {better} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        import psutil

        facts["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    facts["versions"] = versions
    facts["fedexec_git"] = _git_revision()
    return facts


def _git_revision() -> str:
    """The repository's commit, and whether fedexec's sources differ from it."""
    root = HERE.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not rev:
        return "unknown"
    return rev + (" + uncommitted changes in src/" if dirty else "")


# --------------------------------------------------------------------------- main
def _names(arg: str | None, known: tuple[str, ...] | list[str], what: str) -> list[str]:
    if not arg:
        return list(known)
    names = [n.strip() for n in arg.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)}; known: {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and repetitions")
    parser.add_argument("--only", metavar="CASES",
                        help=f"comma-separated cases (default all: {', '.join(CASES)})")
    parser.add_argument("--systems", metavar="SYSTEMS",
                        help=f"comma-separated systems (default all: {', '.join(_systems.SYSTEMS)})")
    parser.add_argument("--json", metavar="PATH", help="also write every result as JSON")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="limit for one (system, case) process (default 300)")
    args = parser.parse_args(argv)
    cases = _names(args.only, list(CASES), "case")
    wanted = _names(args.systems, _systems.SYSTEMS, "system")

    facts = machine_facts()
    command = " ".join(["python benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"# fedexec benchmarks{' (--quick)' if args.quick else ''}\n")
    print(f"- command: `{command}`")
    print(f"- date: {facts['date']}")
    print(f"- machine: {facts['cpus']} CPUs, {facts.get('memory_gib', '?')} GiB RAM, "
          f"{facts['platform']}, Python {facts['python']}")
    print("- versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()))
    print(f"- fedexec source: git {facts['fedexec_git']}")

    systems, skipped = [], {}
    for name in wanted:
        reason = _systems.unavailable_reason(name)
        if reason is None:
            systems.append(name)
        else:
            skipped[name] = reason
    for name, reason in skipped.items():
        print(f"- skipped {name}: {reason}")
    print(f"- systems: {', '.join(systems)}; timeout {args.timeout:.0f} s per (system, case)")
    print("- ratio = value / the reference system's value for the same metric; "
          "'better' says which direction is faster")
    setup_notes = {note for name in systems for note in _systems.make(name).notes}
    for note in sorted(setup_notes):
        print(f"- {note}")
    print(flush=True)

    env = child_env()
    all_results: list[dict[str, Any]] = []
    for case in cases:
        results = []
        for name in systems:
            print(f"  running {case} on {name} ...", end="", file=sys.stderr, flush=True)
            r = run_child(name, case, args.quick, args.timeout, env)
            print(f" {r['status']} ({r['wall_s']:.1f} s)", file=sys.stderr, flush=True)
            if r["status"] == "error":
                print(r.get("error", ""), file=sys.stderr)
            results.append(r)
        all_results.extend(results)
        print(render_case(case, results, setup_notes), flush=True)

    print(render_summary(all_results, systems), flush=True)
    if args.json:
        payload = {"command": command, "quick": args.quick, "machine": facts,
                   "skipped": skipped, "results": all_results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
