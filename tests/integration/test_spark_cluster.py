"""fedexec's native runtime inside a Spark application (``local[2]``): node managers
in long-running Spark tasks join a head on the driver; stopping cancels the job."""

from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

import fedexec
from _backend_support import exited

pytest.importorskip("pyspark")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is None:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors import fedexec
        session = (SparkSession.builder.master("local[2]").appName("fedexec-on-spark")
                   .config("spark.pyspark.python", sys.executable)
                   .config("spark.ui.enabled", "false")
                   .config("spark.driver.host", "127.0.0.1")
                   .config("spark.log.level", "ERROR").getOrCreate())
    yield session


def node_manager_pid():
    time.sleep(0.3)
    return fedexec.get_runtime_context().node_id, os.getppid()


class Box:
    def __init__(self):
        self.items = []

    def add(self, x):
        self.items.append(x)
        return len(self.items)


def test_start_cluster_runs_the_native_runtime_inside_spark(spark):
    from fedexec.integrations.spark import start_cluster, stop_cluster

    cluster = start_cluster(spark, num_nodes=2, num_cpus_per_node=1, timeout=180)
    try:
        with cluster.connect() as ex:
            nodes = [n for n in ex.nodes() if n["alive"]]
            assert len(nodes) == 3  # the head on the driver + two Spark tasks
            assert ex.cluster_resources()["CPU"] == 2  # the head runs no tasks
            refs = [ex.options(scheduling_strategy="SPREAD").submit(node_manager_pid)
                    for _ in range(4)]
            seen = dict(r.result(timeout=60) for r in refs)
            assert len(seen) == 2
            box = ex.actor(Box)
            assert [box.add.remote(i).result(timeout=60) for i in range(3)] == [1, 2, 3]
            import numpy as np

            big = ex.put(np.ones(1_000_000))
            assert ex.submit(np.sum, big).result(timeout=60) == 1_000_000
        pids = list(seen.values())
        assert all(psutil.pid_exists(p) for p in pids)
    finally:
        stop_cluster()
    deadline = time.monotonic() + 60
    while not all(exited(p) for p in pids):
        assert time.monotonic() < deadline, "node managers outlived their Spark tasks"
        time.sleep(0.2)
