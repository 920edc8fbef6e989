"""Fixtures of the dask backend tests: a Dask cluster started by the test (to join
by address or through a client). Leaks are checked after every test (tests/_leaks.py)."""

from __future__ import annotations

import logging

import pytest

distributed = pytest.importorskip("distributed")


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
