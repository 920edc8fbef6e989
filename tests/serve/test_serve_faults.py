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

from _backend_support import exited, poll_until
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


@pytest.mark.requires("actor_processes")  # kills a replica's process
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


@pytest.mark.requires("actor_processes")  # tells replicas apart by pid
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


@serve.deployment(num_replicas=2, max_ongoing_requests=1, health_check_period_s=0.5)
class OneAtATime:
    """Marks each request when it starts; counts how many run at once."""

    def __init__(self, directory: str) -> None:
        self.directory, self.running, self.most = directory, 0, 0

    async def __call__(self, i: int) -> dict:
        self.running += 1
        self.most = max(self.most, self.running)
        open(os.path.join(self.directory, f"{i}-{os.getpid()}"), "w").close()
        try:
            await asyncio.sleep(1.0)
        finally:
            self.running -= 1
        return {"i": i, "pid": os.getpid(), "most": self.most}


def _outcomes(handle, ids: list[int]) -> list[tuple[int, str, int]]:
    """Call ``handle`` for every id at once; (id, "ok" | error type, most at once)."""
    responses = [(i, handle.remote(i)) for i in ids]
    out = []
    for i, response in responses:
        try:
            value = response.result(timeout_s=T)
            assert value["i"] == i
            out.append((i, "ok", value["most"]))
        except Exception as exc:
            out.append((i, type(exc).__name__, 0))
    return out


class _Sender:
    """A separate process with its own router to the replicas."""

    def ready(self) -> bool:
        return serve.get_deployment_handle("OneAtATime", app_name="queued") is not None

    def send(self, ids: list[int]) -> list[tuple[int, str, int]]:
        return _outcomes(serve.get_deployment_handle("OneAtATime", app_name="queued"), ids)


@pytest.mark.requires("actor_processes")  # kills a replica's process
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_retries_requests_queued_at_the_replica(serve_url, tmp_path):
    """Three routers (two actors and the driver) each write one request to each
    replica (max_ongoing_requests=1): the replica runs one and queues the others.
    Killing it must fail only the request that had started there."""
    from fedexec.serve import _context

    handle = serve.run(OneAtATime.bind(str(tmp_path)), name="queued", route_prefix=None)
    victim = serve.api._replica_pids("OneAtATime", "queued")[0]
    ex = _context.executor()
    senders = [ex.options(num_cpus=0).actor(_Sender) for _ in range(2)]
    assert all(s.ready.remote().result(T) for s in senders)
    with ThreadPoolExecutor(1) as pool:
        futures = [s.send.remote(list(range(k * 10, k * 10 + 4)))
                   for k, s in enumerate(senders, start=1)]
        mine = pool.submit(_outcomes, handle, list(range(4)))
        assert poll_until(lambda: any(n.endswith(f"-{victim}") for n in os.listdir(tmp_path)),
                          timeout=30)
        time.sleep(0.3)  # the others are written to it by now, queued behind the first
        os.kill(victim, signal.SIGKILL)
        results = mine.result(T) + [x for f in futures for x in f.result(T)]
    started_on_victim = {int(n.split("-")[0]) for n in os.listdir(tmp_path)
                         if n.endswith(f"-{victim}")}
    failed = {i for i, outcome, _ in results if outcome != "ok"}
    assert len(results) == 12
    assert failed <= started_on_victim, (failed, started_on_victim, results)
    assert len(failed) <= 1, results  # max_ongoing_requests=1 ran there at once
    assert all(most <= 1 for _, outcome, most in results if outcome == "ok"), results
    for s in senders:
        ex.kill(s)
    serve.delete("queued")


@serve.deployment(num_replicas=2, health_check_period_s=0.5)
class Steady:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def __call__(self, request):
        await asyncio.sleep(0.005)
        return {"tag": self.tag, "pid": os.getpid()}


@pytest.mark.requires("actor_processes", "actor_restarts")  # kills the controller's process
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_controller_killed_recovers_its_applications_and_keeps_the_replicas(serve_url):
    """SIGKILL of the controller: requests keep being served meanwhile; the
    restarted controller knows the application and adopts its running replicas
    (same pids, none started twice) and keeps managing them."""
    from fedexec.serve import _client

    serve.run(Steady.bind("v1"), name="steady", route_prefix="/steady")
    replicas = set(serve.api._replica_pids("Steady", "steady"))
    controller = _client.controller_handle()
    old_pid = controller.ping.remote().result(T)["pid"]
    stop = threading.Event()
    codes: list[int] = []

    def load() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                codes.append(s.get(f"{serve_url}/steady", timeout=T).status_code)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    before = len(codes)
    os.kill(old_pid, signal.SIGKILL)

    def restarted() -> bool:
        try:
            return controller.ping.remote().result(5)["pid"] != old_pid
        except Exception:
            return False

    assert poll_until(restarted, timeout=60), "the controller was not restarted"
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(T)
    assert len(codes) > before and set(codes) == {200}, codes
    app = serve.status().applications["steady"]
    assert app.status == "RUNNING" and app.route_prefix == "/steady"
    assert set(serve.api._replica_pids("Steady", "steady")) == replicas  # adopted
    # still in charge: an update rolls, a killed replica is replaced
    serve.run(Steady.bind("v2"), name="steady", route_prefix="/steady")
    assert requests.get(f"{serve_url}/steady", timeout=T).json()["tag"] == "v2"
    new = serve.api._replica_pids("Steady", "steady")
    assert len(new) == 2 and not set(new) & replicas
    assert poll_until(lambda: all(exited(p) for p in replicas), timeout=60), \
        "the adopted replicas were not stopped by the update"
    os.kill(new[0], signal.SIGKILL)
    assert poll_until(lambda: len(set(serve.api._replica_pids("Steady", "steady"))
                                  - {new[0]}) == 2, timeout=60)
    serve.delete("steady")


@pytest.mark.requires("actor_processes")  # kills the proxy's process
@pytest.mark.timeout(120)
def test_a_killed_proxy_is_started_again_on_its_port(serve_url):
    serve.run(Steady.bind("p"), name="proxied", route_prefix="/proxied")
    ((node, proxy),) = serve.status().proxies.items()
    os.kill(proxy.pid, signal.SIGKILL)

    def back() -> bool:
        now = serve.status().proxies.get(node)
        return now is not None and now.status == "HEALTHY" and now.pid != proxy.pid

    assert poll_until(back, timeout=60), serve.status().proxies
    assert serve.status().proxies[node].port == proxy.port
    assert requests.get(f"{serve_url}/proxied", timeout=T).json()["tag"] == "p"
    serve.delete("proxied")
