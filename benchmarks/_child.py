"""One (system, case) measurement in its own process; started by ``run.py``.

Usage (internal)::

    python _child.py SYSTEM CASE [--quick] [--timeout S]

It starts a fresh runtime, runs the case, and prints one line
``@@RESULT@@ {json}`` with ``status`` ("ok", "n/a" or "error"), ``rows`` and
``notes``. The result is printed *before* the runtime is shut down, so a hang at
shutdown loses no numbers; a failed or slow shutdown adds a ``@@NOTE@@`` line.
``run.py`` kills the whole process tree if the child overruns its timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

MARK_RESULT = "@@RESULT@@ "
MARK_NOTE = "@@NOTE@@ "
SHUTDOWN_GRACE_S = 60.0


def emit(mark: str, payload: Any) -> None:
    sys.stdout.write(mark + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _watchdog(seconds: float, what: str) -> threading.Timer:
    def fire() -> None:
        emit(MARK_NOTE, f"{what} did not finish within {seconds:.0f} s; process killed")
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def run_case(system_name: str, case: str, quick: bool, timeout: float) -> int:
    import _cases
    import _systems

    result: dict[str, Any] = {"system": system_name, "case": case, "notes": []}
    system = _systems.make(system_name)
    result["notes"].extend(system.notes)
    if case == "startup":
        try:
            result["rows"] = _cases.startup(system_name, quick, timeout)
            result["status"] = "ok"
        except Exception:
            result.update(status="error", error=traceback.format_exc(limit=5))
        emit(MARK_RESULT, result)
        return 0
    fn = _cases.CASES[case]
    missing = _cases.missing_capability(case, system)
    if missing:
        result.update(status="n/a", rows=[], error=missing)
        emit(MARK_RESULT, result)
        return 0
    started = False
    try:
        t0 = time.perf_counter()
        system.start()
        started = True
        result["start_s"] = time.perf_counter() - t0
        out = fn(system, quick)
        rows, notes = out if isinstance(out, tuple) else (out, [])
        result.update(status="ok", rows=rows)
        result["notes"].extend(f"{system_name}: {note}" for note in notes)
    except Exception:
        result.update(status="error", rows=[], error=traceback.format_exc(limit=8))
    emit(MARK_RESULT, result)
    if started:
        timer = _watchdog(SHUTDOWN_GRACE_S, f"{system_name} shutdown")
        try:
            system.shutdown()
        except Exception as exc:
            emit(MARK_NOTE, f"{system_name} shutdown raised {type(exc).__name__}: {exc}")
        timer.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="_child.py")
    parser.add_argument("system")
    parser.add_argument("case")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    return run_case(args.system, args.case, args.quick, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
