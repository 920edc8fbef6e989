"""The dashboard's JSON API and its token rules, against a real 2-node cluster."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.timeout(180)


def test_every_route_needs_the_token(board):
    for path in ("/api/nodes", "/api/tasks", "/metrics", "/", "/tasks", "/charts"):
        r = board.get(path, token=False, allow_redirects=False)
        assert r.status_code == 401, (path, r.status_code)
        wrong = board.get(path, token=False, allow_redirects=False,
                          headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403, (path, wrong.status_code)
    assert board.get("/api/nodes", token=False, params={"token": "x"}).status_code == 403
    assert board.get("/api/nodes", token=False,
                     params={"token": board.token}).status_code == 200


def test_token_in_the_url_sets_a_cookie_for_pages(board):
    import requests

    s = requests.Session()
    r = s.get(board.url + "/tasks", params={"token": board.token}, allow_redirects=False,
              timeout=30)
    assert r.status_code == 303 and "token" not in r.headers["location"]
    page = s.get(board.url + "/tasks", timeout=30)
    assert page.status_code == 200 and ("<table" in page.text or "none" in page.text)
    assert board.token not in page.text
    s.cookies.set("fedexec_dashboard", "forged")
    assert s.get(board.url + "/tasks", timeout=30).status_code == 403


def test_nodes_of_the_whole_cluster(board):
    nodes = board.api("nodes")
    assert nodes["total"] == 2
    assert {n["node_id"] for n in nodes["items"]} == {n.node_id for n in board.cluster.nodes}
    assert len(board.api("nodes", limit=1)["items"]) == 1
    second = board.api("nodes", limit=1, offset=1)["items"]
    assert second and second != board.api("nodes", limit=1)["items"]


def test_bad_paging_and_unknown_lists_are_400(board):
    assert board.get("/api/tasks", params={"limit": "x"}).status_code == 400
    assert board.get("/api/tasks", params={"limit": 100000}).status_code == 400
    assert board.get("/api/bogus").status_code == 400


class Holder:
    def ping(self) -> str:
        return "pong"


def _slow(s: float) -> int:
    time.sleep(s)
    return 1


def test_actors_tasks_and_placement_groups_filtered_across_nodes(board):
    with board.cluster.connect() as ex:
        holder = ex.options(name="held_on_second", num_cpus=0,
                            resources={"second": 1}).actor(Holder)
        assert ex.get(holder.ping.remote(), timeout=60) == "pong"
        pg = ex.placement_group([{"CPU": 1}], strategy="PACK", name="grp")
        assert pg.ready(timeout=60)
        running = ex.options(name="sleeper").submit(_slow, 20)
        second_id = next(n.node_id for n in board.cluster.nodes if not n.is_head)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(1.1)  # past the dashboard's cache
            actors = board.api("actors", name="held_on_second")
            tasks = board.api("tasks", name="sleeper")
            if actors["total"] and tasks["total"]:
                break
        assert actors["total"] == 1
        assert actors["items"][0]["node_id"] == second_id
        assert actors["items"][0]["state"] == "ALIVE"
        assert board.api("actors", name="held_on_second", node_id="nope")["total"] == 0
        assert tasks["total"] == 1, board.api("tasks")
        st = tasks["items"][0]["state"]
        assert board.api("tasks", name="sleeper", state=st.lower())["total"] == 1
        assert board.api("tasks", name="sleeper", state="NO_SUCH_STATE")["total"] == 0
        job = ex.get_runtime_context().job_id
        assert tasks["items"][0]["job_id"] == job and actors["items"][0]["job_id"] == job
        assert board.api("tasks", name="sleeper", job_id=job)["total"] == 1
        assert board.api("actors", job_id="another_job")["total"] == 0
        pgs = board.api("placement-groups", name="grp")
        assert pgs["total"] == 1 and pgs["items"][0]["state"] == "CREATED"
        ex.cancel(running, force=True)


def test_status_has_host_usage(board):
    status = board.get("/api/status").json()
    for node in status["nodes"]:
        assert node["host"]["memory_total"] > 0


def test_the_login_form_sets_the_cookie(board):
    import requests

    s = requests.Session()
    wrong = s.post(board.url + "/login", data={"token": "nope", "next": "/actors"},
                   allow_redirects=False, timeout=30)
    assert wrong.status_code == 403 and "not this cluster's token" in wrong.text
    ok = s.post(board.url + "/login", data={"token": board.token, "next": "//evil.example"},
                allow_redirects=False, timeout=30)
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    assert s.get(board.url + "/api/nodes", timeout=30).status_code == 200
