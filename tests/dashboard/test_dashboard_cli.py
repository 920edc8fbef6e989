"""``fedexec start --head`` starts the dashboard, ``fedexec dashboard`` finds it,
``fedexec stop`` stops it; ``--no-dashboard`` leaves it out."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import psutil
import pytest
import requests

pytestmark = pytest.mark.timeout(180)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "fedexec", *args], capture_output=True,
                          text=True, timeout=120, env=os.environ.copy())


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDEXEC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEDEXEC_TOKEN", raising=False)
    yield tmp_path / "home"
    cli("stop")


def test_the_head_serves_its_dashboard_until_stopped(home):
    out = cli("start", "--head", "--port", "0", "--job-port", "0", "--num-cpus", "1",
              "--dashboard-port", "0")
    assert out.returncode == 0, out.stderr
    info = json.loads((home / "cluster.json").read_text())
    assert "Dashboard: " + info["dashboard_url"] in out.stdout
    assert info["dashboard_url"].startswith("http://127.0.0.1:")
    token = (home / "token").read_text().strip()
    url = cli("dashboard").stdout.strip()
    assert url == info["dashboard_url"] and token not in url
    signin = cli("dashboard", "--with-token").stdout.strip()
    s = requests.Session()
    page = s.get(signin, timeout=30)  # follows the redirect that sets the cookie
    assert page.status_code == 200 and "Cluster" in page.text and token not in page.url
    jobs = s.get(url + "/api/jobs", timeout=30).json()
    assert jobs["total"] == 0 and jobs["missing"] == {}
    from fedexec.backends.native.jobs import JobClient

    with JobClient() as client:
        job = client.submit([sys.executable, "-c", "print('hello from the job')"])
        client.wait(job["job_id"], timeout=60)
    time.sleep(1.1)  # past the dashboard's cache
    jobs = s.get(url + "/api/jobs", params={"job_id": job["job_id"]}, timeout=30).json()
    assert jobs["total"] == 1 and jobs["items"][0]["status"] == "SUCCEEDED"
    assert s.get(url + "/api/jobs", params={"state": "FAILED"}, timeout=30).json()["total"] == 0
    listing = s.get(url + "/jobs", timeout=30).text
    assert f'href="/jobs/{job["job_id"]}/logs"' in listing
    logs = s.get(f"{url}/jobs/{job['job_id']}/logs", timeout=30)
    assert logs.status_code == 200 and "hello from the job" in logs.text
    assert s.get(f"{url}/jobs/fedexec_job_nope/logs", timeout=30).status_code == 404
    pid = info["dashboard_pid"]
    assert psutil.pid_exists(pid)
    assert cli("stop").returncode == 0
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the dashboard outlived its head"
        time.sleep(0.1)


def test_no_dashboard(home):
    out = cli("start", "--head", "--port", "0", "--job-port", "0", "--num-cpus", "1",
              "--no-dashboard")
    assert out.returncode == 0, out.stderr
    assert "dashboard_url" not in json.loads((home / "cluster.json").read_text())
    missing = cli("dashboard")
    assert missing.returncode == 1 and "--no-dashboard" in missing.stderr


class Pinger:
    def ping(self) -> int:
        return 1


def test_list_placement_groups_and_objects_in_human_units_and_summary(home):
    import fedexec

    out = cli("start", "--head", "--port", "0", "--job-port", "0", "--num-cpus", "2",
              "--no-dashboard")
    assert out.returncode == 0, out.stderr
    with fedexec.Executor(address="auto") as ex:
        pg = ex.placement_group([{"CPU": 1}], name="cli_group")
        assert pg.ready(timeout=60)
        ref = ex.put(b"x" * (3 << 20))
        groups = cli("list", "placement-groups")
        assert groups.returncode == 0, groups.stderr
        assert re.search(r"cli_group\s+PACK\s+CREATED", groups.stdout), groups.stdout
        objects = cli("list", "objects")
        assert re.search(r"\b3\.0 MiB\b", objects.stdout), objects.stdout
        pingers = [ex.options(num_cpus=0).actor(Pinger) for _ in range(2)]
        assert ex.get([p.ping.remote() for p in pingers], timeout=60) == [1, 1]
        summary = cli("summary", "actors")
        assert re.search(r"^Pinger\s+ALIVE\s+2$", summary.stdout, re.M), summary.stdout
        js = json.loads(cli("summary", "actors", "--format", "json").stdout)
        assert {"class": "Pinger", "state": "ALIVE", "count": 2} in js
        del ref


def test_a_busy_dashboard_port_leaves_the_head_running_without_it(home):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = cli("start", "--head", "--port", "0", "--job-port", "0", "--num-cpus", "1",
                  "--dashboard-port", str(port))
    assert out.returncode == 0, out.stderr
    assert f"No dashboard: the dashboard could not listen on 127.0.0.1:{port}" in out.stdout
    assert "--dashboard-port" in out.stdout
    assert cli("status").returncode == 0
    assert cli("dashboard").returncode == 1
