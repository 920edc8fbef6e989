"""Fixtures of the dask backend tests: a Dask cluster started by the test (to join
by address or through a client). Leaks are checked after every test (tests/_leaks.py)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import _leaks

distributed = pytest.importorskip("distributed")


@pytest.fixture
def nothing_left():
    """A check to call right after a shutdown, inside the test: no process and no
    thread started since this fixture was set up is left (waits up to 15 s), but
    Dask's process-wide offload thread (started once, on first use)."""
    before = _leaks.snapshot()
    threads_before = {t.ident for t in threading.enumerate()}

    def check() -> None:
        deadline = time.monotonic() + 15
        while True:
            procs = list(_leaks.started_since(before)[0].values())
            threads = [t.name for t in threading.enumerate()
                       if t.ident not in threads_before and t.is_alive()
                       and not t.name.startswith("Dask-Offload")]
            if not procs and not threads:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"left behind: processes {procs}, threads {threads}")
            time.sleep(0.1)

    return check


@pytest.fixture(scope="module")
def dask_cluster():
    """A running Dask cluster of the kind a user joins: one worker process with
    four threads and a ``CPU`` resource."""
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=4, processes=True, host="127.0.0.1",
        dashboard_address=None, silence_logs=logging.CRITICAL, resources={"CPU": 4},
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )
    yield cluster
    cluster.close()


@pytest.fixture
def dask_client(dask_cluster):
    """A user's own client of ``dask_cluster``."""
    client = distributed.Client(dask_cluster, set_as_default=False)
    yield client
    client.close()
