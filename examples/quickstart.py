"""fedexec quick start: tasks, refs as arguments, an actor, put/get/wait.

Runs on the default backend (``fedexec.DEFAULT_BACKEND``); pass another name as
the first argument, e.g. ``python examples/quickstart.py local``.
"""

import sys
import time

import numpy as np

import fedexec


@fedexec.remote
def square(x: int) -> int:
    return x * x


@fedexec.remote
def total(*parts: int) -> int:
    return sum(parts)


@fedexec.remote
def column_means(matrix: np.ndarray) -> np.ndarray:
    return matrix.mean(axis=0)


@fedexec.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def add(self, n: int) -> int:
        self.value += n
        return self.value


def main(backend: str = fedexec.DEFAULT_BACKEND) -> None:
    fedexec.init(backend=backend)
    print(f"backend: {backend}, resources: {fedexec.cluster_resources()}")

    # Tasks run in parallel; refs passed as arguments are resolved before the call.
    squares = [square.remote(i) for i in range(10)]
    print("sum of squares:", fedexec.get(total.remote(*squares)))

    # put() stores a value once; tasks that take its ref share it.
    matrix = fedexec.put(np.arange(12.0).reshape(4, 3))
    print("column means:", fedexec.get(column_means.remote(matrix)))

    # An actor keeps state between calls, which run in order.
    counter = Counter.remote(100)
    refs = [counter.add.remote(i) for i in range(1, 4)]
    print("counter:", fedexec.get(refs))

    # wait() returns what is ready: here, the fast task first.
    slow = fedexec.remote(time.sleep).remote(0.5)
    fast = square.remote(7)
    ready, not_ready = fedexec.wait([slow, fast], num_returns=1, timeout=5)
    print("first ready:", fedexec.get(ready[0]), "| still running:", len(not_ready))

    # The Executor is a concurrent.futures.Executor too.
    with fedexec.Executor(backend=backend, max_workers=2) as ex:
        print("map:", list(ex.map(pow, range(5), [2] * 5)))

    fedexec.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:2])
