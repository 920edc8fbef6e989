"""One leak check for every test (a pytest plugin loaded by ``tests/conftest.py``).

Around each test (after the wider-scoped fixtures it uses were set up, before they
are torn down) it notes this process's descendant processes, the ``fedexec-*``
entries of ``/dev/shm`` and the temporary directory, and the ``fedexec*``
threads. Whatever the test started must be gone once it and its runtimes are done:

* files: a ``fedexec-*`` entry of a runtime of ours (object stores, session
  directories) created during the test, checked after the test;
* processes: one started during the test that still runs, unless it descends from
  a process that was there before (a worker a shared runtime started) or is one
  of the per-interpreter helpers that outlive every executor by design
  (multiprocessing's resource tracker; pyspark's JVM and its Python daemons;
  the workers of joblib's reusable loky executor, which tests compare against).
  Checked after the test, or, when a runtime of ours was already running as the
  test began (a module-scoped executor or cluster, which may start processes
  lazily: a Dask nanny replacing a killed worker), when the module ends;
* threads: a ``fedexec*`` thread started during the test, checked when the module
  ends (a shared runtime may start threads lazily during any test).

What is checked at the module's end is reported with the test that started it.
A default executor the test left is shut down first, as a user's exit would.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass

import psutil
import pytest

GRACE = 20.0  # seconds a runtime may take to finish stopping after shutdown returned

_SHARED_BY_DESIGN = ("resource_tracker", "org.apache.spark.deploy.SparkSubmit",
                     "pyspark.daemon", "pyspark/daemon", "loky.backend.popen_loky")
_DIRS = ("/dev/shm", tempfile.gettempdir())

Key = tuple[int, float]  # (pid, create time) names a process; a thread is its ident


@dataclass(frozen=True)
class Snapshot:
    processes: frozenset[Key]
    entries: frozenset[str]
    threads: frozenset[threading.Thread]


def _processes() -> dict[Key, psutil.Process]:
    out = {}
    for child in psutil.Process().children(recursive=True):
        try:
            out[(child.pid, child.create_time())] = child
        except psutil.Error:
            continue
    return out


def _entries() -> set[str]:
    home = f"fedexec-{os.getuid()}"
    found = set()
    for root in _DIRS:
        try:
            names = os.listdir(root)
        except OSError:
            continue
        found.update(os.path.join(root, n) for n in names
                     if n.startswith("fedexec-") and n != home)
    return found


def _owners(path: str) -> set[int] | None:
    """The pids recorded as owners of the runtime session ``path`` belongs to (the
    store directory's ``.owners``; session directories share its session id)."""
    session = os.path.basename(path)[len("fedexec-"):].split("-")[0]
    for root in _DIRS:
        try:
            with open(os.path.join(root, f"fedexec-{session}", ".owners")) as f:
                return {int(p) for p in f.read().split()}
        except (OSError, ValueError):
            continue
    return None


def _threads() -> set[threading.Thread]:
    """The ``fedexec*`` threads alive now (the objects: an ident may be reused)."""
    return {t for t in threading.enumerate() if t.name.startswith("fedexec")}


def _exempt(proc: psutil.Process, before: frozenset[Key]) -> bool:
    """A process that is shared by design, or descends from one there before."""
    try:
        chain = [proc, *proc.parents()]
    except psutil.Error:
        return True  # gone meanwhile
    me = os.getpid()
    for p in chain:
        try:
            if p.pid == me:
                return False
            if p is not proc and (p.pid, p.create_time()) in before:
                return True
            if any(tag in " ".join(p.cmdline()) for tag in _SHARED_BY_DESIGN):
                return True
        except psutil.Error:
            continue
    return False


def snapshot() -> Snapshot:
    """What runs and exists now."""
    return Snapshot(frozenset(_processes()), frozenset(_entries()), frozenset(_threads()))


def runtime_running(snap: Snapshot) -> bool:
    """Whether a runtime of ours had processes running at ``snap``."""
    procs = _processes()
    return any(key in procs and not _exempt(procs[key], frozenset()) for key in snap.processes)


def started_since(before: Snapshot
                  ) -> tuple[dict[Key, str], list[str], dict[threading.Thread, str]]:
    """What was started or created after ``before`` and is still there: processes,
    files of our runtimes, threads."""
    now = _processes()
    procs = {}
    for key, proc in now.items():
        if key not in before.processes and not _exempt(proc, before.processes):
            try:
                procs[key] = f"process {proc.pid} ({' '.join(proc.cmdline())[:120]})"
            except psutil.Error:
                continue
    pids = {os.getpid()} | {pid for pid, _ in before.processes} | {pid for pid, _ in now}
    files = [f"file {path}" for path in sorted(_entries() - before.entries)
             if os.path.exists(path) and (_owners(path) or set()) & pids]
    threads = {t: f"thread {t.name}" for t in _threads() - before.threads}
    return procs, files, threads


def _where(thread: threading.Thread) -> str:
    """Where ``thread`` is now (its innermost frames), for the report."""
    import sys
    import traceback

    frame = sys._current_frames().get(thread.ident or 0)
    if frame is None:
        return ""
    lines = traceback.format_stack(frame)[-3:]
    return "\n      " + "      ".join(lines).rstrip()


def _still_running(procs: dict[Key, str], threads: dict[threading.Thread, str]) -> list[str]:
    alive_procs = _processes()
    return [text for key, text in procs.items() if key in alive_procs] + \
        [text + _where(t) for t, text in threads.items() if t.is_alive()]


@pytest.fixture(scope="module", autouse=True)
def _deferred_leak_checks():
    """``[(test id, processes, threads)]`` the module's tests started whose check
    waits for the module's end (see the module docstring)."""
    deferred: list[tuple[str, dict[Key, str], dict[threading.Thread, str]]] = []
    yield deferred
    deadline = time.monotonic() + GRACE
    while True:
        left = [f"{text} (started by {test})" for test, procs, threads in deferred
                for text in _still_running(procs, threads)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if left:
        pytest.fail("left running after the module's tests and runtimes ended:\n  "
                    + "\n  ".join(left), pytrace=False)


@pytest.fixture(autouse=True)
def _no_leaks_after_each_test(request: pytest.FixtureRequest,
                              _deferred_leak_checks: list[tuple[str, dict[Key, str],
                                                                dict[threading.Thread, str]]]):
    """The per-test check (see the module docstring)."""
    import fedexec

    before = snapshot()
    shared = runtime_running(before)
    yield
    if fedexec.is_initialized():
        fedexec.shutdown()
    deadline = time.monotonic() + GRACE
    while True:
        procs, files, threads = started_since(before)
        left = files if shared else [*procs.values(), *files]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if threads or (shared and procs):
        _deferred_leak_checks.append((request.node.nodeid, procs if shared else {}, threads))
    if left:
        pytest.fail("the test left behind (after its executors shut down):\n  "
                    + "\n  ".join(left), pytrace=False)
