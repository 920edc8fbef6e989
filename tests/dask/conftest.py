"""Fixtures of the dask backend tests: a Dask cluster started by the test (to join
by address or through a client), and leak checks: when the module is done, no
Dask worker process of ours and no ``fedexec*`` thread is left."""

from __future__ import annotations

import logging
import threading
import time

import psutil
import pytest

distributed = pytest.importorskip("distributed")


def _worker_processes() -> list[psutil.Process]:
    """Children of this process other than multiprocessing's resource tracker (one
    per interpreter, shared, gone at exit)."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            continue
    return out


def _fedexec_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fedexec")]


@pytest.fixture(scope="module", autouse=True)
def _no_leaks():
    before = {p.pid for p in _worker_processes()}
    yield
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        procs = [p for p in _worker_processes() if p.pid not in before]
        if not procs and not _fedexec_threads():
            return
        time.sleep(0.1)
    raise AssertionError(f"left behind: processes {procs}, threads {_fedexec_threads()}")


@pytest.fixture
def nothing_left():
    """A check to call after a shutdown: no process and no thread started since this
    fixture was set up is left (waits up to 15 s), but Dask's process-wide offload
    thread (started once, on first use)."""
    before = {p.pid for p in _worker_processes()}
    threads_before = {t.ident for t in threading.enumerate()}

    def check() -> None:
        deadline = time.monotonic() + 15
        while True:
            procs = [p for p in _worker_processes() if p.pid not in before]
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
