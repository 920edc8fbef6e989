"""One program, every backend: tasks, refs as arguments, ``put``, ``map`` and an
actor run on native, local, dask and spark in turn, and give the same answers.

A backend whose optional dependency is missing is skipped (with a line saying
so). Where a backend has no actors (``"actors"`` not in its capabilities, e.g.
spark), the running total the actor keeps is computed by a chain of tasks
instead: same answer, no state in a worker.

    python examples/portable.py               # every backend, in turn
    python examples/portable.py local spark   # just these
"""

from __future__ import annotations

import sys
import time
from typing import Any

import fedexec
from fedexec import backends

BACKENDS = ["native", "local", "dask", "spark"]


def square(x: int) -> int:
    return x * x


def total(*parts: int) -> int:
    return sum(parts)


def scale(vector: list[int], k: int) -> list[int]:
    return [k * v for v in vector]


def add(a: int, b: int) -> int:
    return a + b


class Counter:
    """A running total kept by an actor."""

    def __init__(self, start: int) -> None:
        self.value = start

    def add(self, n: int) -> int:
        self.value += n
        return self.value


def answers(name: str) -> dict[str, Any]:
    """Run the program on backend ``name``; what it computed."""
    out: dict[str, Any] = {}
    with fedexec.Executor(backend=name, num_cpus=2) as ex:
        # Tasks run in parallel; refs passed as arguments become their values.
        squares = [ex.submit(square, i) for i in range(10)]
        out["sum of squares"] = ex.get(ex.submit(total, *squares), timeout=120)

        # put() stores a value once; every task given its ref reads it.
        vector = ex.put(list(range(5)))
        out["scaled"] = ex.get([ex.submit(scale, vector, k) for k in (2, 3)], timeout=120)

        # The executor is a concurrent.futures.Executor: map is ordered.
        out["map"] = list(ex.map(square, range(8), timeout=120))

        # A running total: an actor where the backend has them, else a task chain.
        if "actors" in backends.capabilities(name):
            counter = ex.actor(Counter, 100)
            steps = [counter.add.remote(n) for n in (1, 2, 3)]
        else:
            steps, ref = [], ex.put(100)
            for n in (1, 2, 3):
                ref = ex.submit(add, ref, n)
                steps.append(ref)
        out["running total"] = ex.get(steps, timeout=120)
    return out


def main(names: list[str]) -> int:
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            caps = backends.capabilities(name)
        except fedexec.BackendUnavailableError as exc:
            print(f"{name}: skipped, not installed here ({exc})")
            continue
        start = time.monotonic()
        results[name] = answers(name)
        how = "an actor" if "actors" in caps else "a chain of tasks (no actors here)"
        print(f"{name}: done in {time.monotonic() - start:.1f} s; running total kept by {how}")
        for key, value in results[name].items():
            print(f"  {key}: {value}")
    distinct = {repr(r) for r in results.values()}
    if len(distinct) > 1:
        print("the backends disagree!")
        return 1
    print(f"same answers on {', '.join(results) or 'no backend'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or BACKENDS))
