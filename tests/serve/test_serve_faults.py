"""Replica death and rolling updates: no request that had not started fails."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from _backend_support import poll_until
from fedexec import serve

T = 60


@serve.deployment(num_replicas=2, max_ongoing_requests=2, health_check_period_s=0.5)
class Marked:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    async def __call__(self, request):
        rid = request.query_params["id"]
        open(os.path.join(self.directory, f"{rid}-{os.getpid()}"), "w").close()
        await asyncio.sleep(0.3)
        return {"id": rid, "pid": os.getpid()}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_of_a_replica_fails_only_requests_that_had_started(serve_url, tmp_path):
    serve.run(Marked.bind(str(tmp_path)), name="kill", route_prefix="/kill")
    pids = serve.api._replica_pids("Marked", "kill")
    assert len(pids) == 2
    victim = pids[0]

    def get(i: int) -> tuple[int, int]:
        r = requests.get(f"{serve_url}/kill?id={i}", timeout=T)
        return i, r.status_code

    with ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(get, i) for i in range(24)]  # 4 run at once, 20 queue
        time.sleep(0.45)
        os.kill(victim, signal.SIGKILL)
        results = [f.result() for f in futures]
    started_on_victim = {int(name.split("-")[0]) for name in os.listdir(tmp_path)
                         if name.endswith(f"-{victim}")}
    failed = {i for i, code in results if code != 200}
    assert failed <= started_on_victim, (failed, started_on_victim)
    assert len(failed) <= 2  # at most max_ongoing_requests were running there
    assert sum(code == 200 for _, code in results) >= 22
    assert poll_until(lambda: len(set(serve.api._replica_pids("Marked", "kill")) - {victim})
                      == 2, timeout=30), "the dead replica was not replaced"
    serve.delete("kill")


@serve.deployment(num_replicas=2)
class Versioned:
    def __init__(self, version: str) -> None:
        self.version = version

    async def __call__(self, request):
        await asyncio.sleep(0.01)
        return self.version


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_rolling_update_drops_no_request(serve_url):
    serve.run(Versioned.bind("v1"), name="roll", route_prefix="/roll")
    old = set(serve.api._replica_pids("Versioned", "roll"))
    stop = threading.Event()
    codes: list[int] = []
    bodies: list[str] = []

    def load() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                r = s.get(f"{serve_url}/roll", timeout=T)
                codes.append(r.status_code)
                bodies.append(r.text)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    serve.run(Versioned.bind("v2"), name="roll", route_prefix="/roll")
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(T)
    assert codes and set(codes) == {200}, [b for c, b in zip(codes, bodies) if c != 200][:3]
    assert bodies[-1] == "v2" and "v1" in bodies
    new = set(serve.api._replica_pids("Versioned", "roll"))
    assert len(new) == 2 and not new & old
    serve.delete("roll")


@serve.deployment
class Sleepy:
    async def __call__(self, request):
        await asyncio.sleep(1.0)
        return "done"


@pytest.mark.timeout(60)
def test_delete_lets_running_requests_finish(serve_url):
    serve.run(Sleepy.bind(), name="sleepy", route_prefix="/sleepy")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(requests.get, f"{serve_url}/sleepy", timeout=T)
        time.sleep(0.3)
        serve.delete("sleepy")
        r = running.result()
    assert (r.status_code, r.text) == (200, "done")
    assert requests.get(f"{serve_url}/sleepy", timeout=T).status_code == 404
    assert "sleepy" not in serve.status().applications
    with pytest.raises(serve.DeploymentNotFoundError):
        serve.get_app_handle("sleepy")
