"""The worker processes of an executor-started Dask cluster."""

from __future__ import annotations

import sys

import pytest

import fedexec

distributed = pytest.importorskip("distributed")


def _profiling(dask_worker) -> bool:
    return "profile" in dask_worker.periodic_callbacks


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the deadlock is Python 3.11's")
@pytest.mark.timeout(120)
def test_workers_run_no_profiler_that_can_deadlock_them():
    """Dask's profiler calls sys._current_frames() every 10 ms; on Python 3.11 a
    collection inside it deadlocks the worker against a thread starting or
    ending (CPython gh-106883): seen as a serve controller's worker frozen, and
    serve.shutdown() hanging in client.run. The workers must not run it."""
    with fedexec.Executor(backend="dask", num_cpus=2) as ex:
        client = ex._backend.client
        assert client.run(_profiling) and not any(client.run(_profiling).values())
