"""What serve leaves behind: after ``serve.shutdown()`` a pooled worker that
used a handle keeps no serve thread."""

from __future__ import annotations

import os
import threading

import pytest

import fedexec
from _backend_support import free_port, poll_until
from fedexec import serve

T = 60


@serve.deployment
class Double:
    def __call__(self, x: int) -> int:
        return 2 * x


def _serve_threads() -> tuple[int, list[str]]:
    """(this worker's pid, the names of its serve threads)."""
    return os.getpid(), sorted(t.name for t in threading.enumerate()
                               if t.name.startswith("fedexec-serve"))


def _call(handle: serve.DeploymentHandle) -> tuple[int, int, list[str]]:
    value = handle.remote(2).result(timeout_s=T)
    return (value, *_serve_threads())


@pytest.mark.timeout(120)
def test_a_pooled_worker_keeps_no_serve_thread_after_shutdown():
    with fedexec.Executor(backend="native", num_cpus=1) as ex:
        serve.start(http_options={"port": free_port()}, executor=ex)
        try:
            handle = serve.run(Double.bind(), name="double", route_prefix=None)
            value, pid, threads = ex.submit(_call, handle).result(T)
            assert value == 4 and "fedexec-serve-loop" in threads
        finally:
            serve.shutdown()
        seen: list[tuple[int, list[str]]] = []

        def clean() -> bool:
            seen.append(ex.submit(_serve_threads).result(T))
            return seen[-1] == (pid, [])

        assert poll_until(clean, timeout=30, interval=0.2), seen[-3:]
        assert all(p == pid for p, _ in seen), "the task ran in another worker"
