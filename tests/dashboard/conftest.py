"""A 2-node cluster with a dashboard process on a free port, shared by a module."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

pytest.importorskip("starlette", reason="the dashboard needs the [dashboard] extra")

from _dashboard_support import Board
from fedexec import dashboard
from fedexec.testing import Cluster


@pytest.fixture(scope="module")
def board() -> Iterator[Board]:
    with Cluster(head_num_cpus=1, resources={"first": 1}) as cluster:
        cluster.add_node(num_cpus=1, resources={"second": 1})
        info = dashboard.launch(head_address=cluster.address, token=cluster.token, port=0,
                                head_pid=cluster.head.pid, sample_interval=0.5)
        try:
            yield Board(cluster, info["url"], info["pid"])
        finally:
            dashboard.stop(info["pid"])
            try:
                os.kill(info["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
