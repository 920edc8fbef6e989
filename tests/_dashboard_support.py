"""Helpers of the dashboard's tests (tests/dashboard/): the pages, and a running
dashboard to ask with the cluster token."""

from __future__ import annotations

from typing import Any

import requests

from fedexec.testing import Cluster

#: Every page of the dashboard.
PAGE_PATHS = ("/", "/nodes", "/tasks", "/actors", "/objects", "/jobs", "/placement_groups",
              "/serve", "/tune", "/train", "/charts")


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
