"""The server-rendered pages: each loads with the token, lists what the cluster
runs, pages through a list, and the charts draw sampled values."""

from __future__ import annotations

import re
import time

import pytest

from _dashboard_support import PAGE_PATHS

pytestmark = pytest.mark.timeout(180)


class Named:
    def ping(self) -> int:
        return 1


def test_every_page_loads(board):
    for path in PAGE_PATHS:
        r = board.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("text/html")
        assert "<h1>" in r.text and "fedexec" in r.text
    assert board.get("/nowhere").status_code == 404


def test_pages_show_what_runs_and_paginate(board):
    with board.cluster.connect() as ex:
        actors = [ex.options(name=f"page_actor_{i}", num_cpus=0).actor(Named)
                  for i in range(3)]
        assert ex.get([a.ping.remote() for a in actors], timeout=60) == [1, 1, 1]
        time.sleep(1.1)  # past the dashboard's cache
        page = board.get("/actors", params={"name": "page_actor_", "limit": 2})
        assert page.status_code == 200
        assert len(re.findall(r"<td>page_actor_\d</td>", page.text)) == 2
        assert "1-2 of 3" in page.text
        nxt = re.search(r'<a rel="next" href="([^"]+)"', page.text)
        assert nxt is not None
        second = board.get(nxt.group(1).replace("&amp;", "&"))
        assert "3-3 of 3" in second.text and 'rel="prev"' in second.text
        assert len(re.findall(r"<td>page_actor_\d</td>", second.text)) == 1
        cluster = board.get("/").text
        for node in board.cluster.nodes:
            assert node.node_id in cluster
        for a in actors:
            ex.kill(a)


def test_charts_draw_the_sampled_series(board):
    deadline = time.monotonic() + 30
    while len(board.get("/api/series").json()["samples"]) < 2:
        assert time.monotonic() < deadline, "the dashboard sampled nothing"
        time.sleep(0.5)
    page = board.get("/charts").text
    assert page.count("<svg") >= 4 and "<polyline" in page
    assert "CPUs in use" in page
