"""One cold start, in a fresh interpreter; started by the ``startup`` case.

Usage (internal)::

    python _cold.py SYSTEM LAUNCHED_AT IMPORT_STATEMENT

Runs IMPORT_STATEMENT (timed), starts a fresh runtime, runs one no-op
task (timed), shuts down (timed), and prints ``@@STARTUP@@ {json}``. Nothing but
``sys`` and ``time`` is imported before the timed import, so no module that the
library would load is already loaded. ``LAUNCHED_AT`` is the parent's
``time.time()`` just before it started this interpreter, so ``cold_total_ms``
includes the interpreter's own start-up.
"""

import sys
import time


def main() -> int:
    name, launched_at, statement = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    t0 = time.perf_counter()
    exec(statement, {})
    t1 = time.perf_counter()

    import _systems
    import _tasks

    system = _systems.make(name)
    t2 = time.perf_counter()
    system.start()
    system.result(system.submit(_tasks.noop))
    t3 = time.perf_counter()
    cold_total = time.time() - launched_at
    system.shutdown()
    t4 = time.perf_counter()

    import json

    timings = {
        "import_ms": (t1 - t0) * 1e3,
        "start_first_task_ms": (t3 - t2) * 1e3,
        "cold_total_ms": cold_total * 1e3,
        "shutdown_ms": (t4 - t3) * 1e3,
    }
    print("@@STARTUP@@ " + json.dumps(timings), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
