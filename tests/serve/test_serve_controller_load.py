"""The controller under many clients: long-polls and load reports hold no thread each."""

from __future__ import annotations

import os

import psutil
import pytest

from fedexec import serve
from fedexec.serve._client import controller_handle

T = 60
LISTENERS = 200
LOAD_REPORTS = 300
THREAD_BOUND = 64


@serve.deployment(num_replicas=2)
class Tagged:
    def __init__(self, tag: int) -> None:
        self.tag = tag

    def __call__(self) -> tuple[int, int]:
        return self.tag, os.getpid()


@pytest.mark.timeout(180)
@pytest.mark.requires("worker_processes")  # counts the controller process's threads
def test_many_listeners_and_load_reports_hold_few_controller_threads(serve_url):
    handle = serve.run(Tagged.bind(0), name="load", route_prefix=None)
    assert handle.remote().result(timeout_s=T)[0] == 0
    controller = controller_handle()
    proc = psutil.Process(controller.ping.remote().result(T)["pid"])
    version = controller.listen.remote(-1, 0.0).result(T)["version"]
    # every long-poll waits for a change; load reports arrive meanwhile
    polls = [controller.listen.remote(version, 90.0) for _ in range(LISTENERS)]
    reports = [controller.record_load.remote(f"router-{i}", {"load#Tagged": i % 5})
               for i in range(LOAD_REPORTS)]
    for ref in reports:
        ref.result(T)
    assert not any(p.done() for p in polls)  # still waiting: nothing changed yet
    waiting_threads = proc.num_threads()
    handle = serve.run(Tagged.bind(1), name="load", route_prefix=None,
                       _wait_timeout_s=T)  # a redeploy while they wait
    assert handle.remote().result(timeout_s=T)[0] == 1
    for p in polls:  # every waiting long-poll saw the change
        assert p.result(T)["version"] > version
    assert waiting_threads < THREAD_BOUND, (
        f"the controller held {waiting_threads} threads for {LISTENERS} waiting long-polls")
    assert proc.num_threads() < THREAD_BOUND
    serve.delete("load")
