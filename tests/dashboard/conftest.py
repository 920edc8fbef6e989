"""A 2-node cluster with a dashboard process on a free port, shared by a module."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the dashboard needs the [dashboard] extra")
requests = pytest.importorskip("requests")

from fedexec import dashboard  # noqa: E402
from fedexec.testing import Cluster  # noqa: E402

#: Every page of the dashboard.
PAGE_PATHS = ("/", "/nodes", "/tasks", "/actors", "/objects", "/jobs", "/placement_groups",
              "/charts")


class Board:
    """A running dashboard of ``cluster``: ``get(path, **params)`` with the token."""

    def __init__(self, cluster: Cluster, url: str, pid: int) -> None:
        self.cluster, self.url, self.pid = cluster, url, pid
        self.token = cluster.token

    def get(self, path: str, token: bool = True, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        headers.update(kw.pop("headers", {}))
        return requests.get(self.url + path, headers=headers, timeout=30, **kw)

    def api(self, kind: str, **params: Any) -> dict[str, Any]:
        r = self.get(f"/api/{kind}", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())


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
