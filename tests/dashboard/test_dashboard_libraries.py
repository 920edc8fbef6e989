"""The dashboard's serve / tune / train pages: what the libraries registered with
``fedexec.util.registry``, read by the head's dashboard.

The two-node cluster of ``conftest.board`` runs the real libraries: a serve
application, a tune experiment and a train run, each held running until the
test lets it end, shown by the JSON API and, in Chromium, by the pages; and
entries registered from a driver of the second node show too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import test_dashboard_browser as in_chromium

import fedexec
from _backend_support import free_port
from _dashboard_support import Board
from fedexec.util import registry

T = 60.0
browser = in_chromium.browser  # the module-scoped Chromium of the browser tests


def _until(board: Board, kind: str, check: Any, timeout: float = T, **params: Any) -> Any:
    """Poll ``/api/<kind>`` until ``check(answer)`` is truthy; returns the answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = board.api(kind, **params)
        if check(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"/api/{kind} never matched; last answer: {answer}")
        time.sleep(0.2)


def _item(answer: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((i for i in answer["items"] if i["name"] == name), None)


def test_registered_entries_are_listed_paged_updated_and_finished(board):
    second = board.cluster.nodes[1]
    with board.cluster.connect() as ex, \
            fedexec.Executor(address=second.address, token=board.cluster.token) as ex2:
        assert ex2.get_runtime_context().get_node_id() == second.node_id
        runs = [registry.register("train", f"api_run_{i}", {"iteration": 0},
                                  executor=ex2 if i == 1 else ex) for i in range(3)]
        try:
            _until(board, "train", lambda a: a["total"] == 3, name="api_run_")
            first = board.api("train", name="api_run_", limit=2)
            page = board.api("train", name="api_run_", limit=2, offset=2)
            assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 2
            assert len(first["items"]) == 2 and len(page["items"]) == 1
            assert sorted(i["name"] for i in first["items"] + page["items"]) == [
                "api_run_0", "api_run_1", "api_run_2"]
            assert board.api("tune")["items"] == []
            runs[1].update({"iteration": 7, "metrics": {"loss": 0.5}})
            answer = _until(board, "train", lambda a: _item(a, "api_run_1")["info"].get(
                "iteration") == 7, name="api_run_")
            assert answer["total"] == 3  # in place, not a new entry
            assert _item(answer, "api_run_1")["info"]["metrics"] == {"loss": 0.5}
            runs[1].finish("FINISHED", {"iteration": 8})
            _until(board, "train", lambda a: [i["name"] for i in a["items"]] == ["api_run_1"],
                   state="finished")
            html = board.get("/train", params={"name": "api_run_1"}).text
            assert "api_run_1" in html and "FINISHED" in html and "iteration" in html
            runs[0].remove()
            _until(board, "train", lambda a: a["total"] == 2, name="api_run_")
            r = board.get("/api/train", params={"limit": "x"})
            assert r.status_code == 400 and "limit must be a whole number" in r.json()["error"]
            assert board.get("/api/serve", token=False).status_code == 401
        finally:
            for run in runs:
                run.remove()


_DRIVER = """
import sys, time
import fedexec
from fedexec.util import registry
ex = fedexec.Executor(address=sys.argv[1], token=sys.argv[2])
registry.register("train", "killed_run", {"iteration": 1}, executor=ex, refresh_s=0.5)
print("registered", flush=True)
time.sleep(600)
"""


@pytest.mark.timeout(180)
def test_an_entry_whose_process_was_killed_shows_lost_while_a_live_one_stays_running(board):
    with board.cluster.connect() as ex:
        alive = registry.register("train", "alive_run", {"iteration": 1}, executor=ex,
                                  refresh_s=0.5)
        proc = subprocess.Popen([sys.executable, "-c", _DRIVER, board.cluster.address,
                                 board.cluster.token], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "registered"
            _until(board, "train", lambda a: (i := _item(a, "killed_run")) is not None
                   and i["state"] == "RUNNING")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            answer = _until(board, "train", lambda a: _item(a, "killed_run")["state"] == "LOST")
            assert _item(answer, "alive_run")["state"] == "RUNNING"  # refreshed meanwhile
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            alive.remove()


# ------------------------------------------------------------------ the libraries
def _hello_app() -> Any:
    from fedexec import serve

    @serve.deployment(num_replicas=1, actor_options={"num_cpus": 0})
    class Hello:
        def __call__(self, request: Any) -> str:
            return "hello"

    return Hello.bind()


def held_trainable(config: dict[str, Any]) -> None:
    """Reports until ``config["release"]`` exists."""
    from fedexec import tune

    step = 0
    while True:
        step += 1
        tune.report({"score": float(step)})
        if os.path.exists(config["release"]):
            return
        time.sleep(0.2)


def held_train_loop(config: dict[str, Any]) -> None:
    """Reports a round until ``config["release"]`` exists."""
    from fedexec import train

    step = 0
    while True:
        step += 1
        train.report({"loss": 1.0 / step})
        if os.path.exists(config["release"]):
            return
        time.sleep(0.2)


class Running:
    """A serve application, a tune experiment and a train run on ``board``'s
    cluster, each running until :meth:`release`."""

    APP, EXPERIMENT, RUN = "board_app", "board_experiment", "board_run"

    def __init__(self, board: Board, tmp: str) -> None:
        from fedexec import serve, train, tune

        self.board, self.release_path = board, os.path.join(tmp, "release")
        self.ex = board.cluster.connect()
        self.errors: list[BaseException] = []
        serve.start(http_options={"port": free_port()}, executor=self.ex)
        serve.run(_hello_app(), name=self.APP, route_prefix="/board")
        config = {"release": self.release_path}
        self.tuner = tune.Tuner(
            held_trainable, param_space=config, executor=self.ex,
            run_config=tune.RunConfig(name=self.EXPERIMENT, storage_path=tmp, verbose=0))
        self.trainer = train.DataParallelTrainer(
            held_train_loop, train_loop_config=config, executor=self.ex,
            scaling_config=train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
            run_config=train.RunConfig(name=self.RUN, storage_path=tmp))
        self.threads = [threading.Thread(target=self._run, args=(f,), daemon=True)
                        for f in (self.tuner.fit, self.trainer.fit)]
        for t in self.threads:
            t.start()

    def _run(self, fit: Any) -> None:
        try:
            fit()
        except BaseException as exc:
            self.errors.append(exc)

    def release(self) -> None:
        from fedexec import serve

        if os.path.exists(self.release_path):
            return
        open(self.release_path, "w").close()
        for t in self.threads:
            t.join(T)
        try:
            serve.shutdown()
        finally:
            self.ex.shutdown()


@pytest.fixture(scope="module")
def running(board, tmp_path_factory) -> Iterator[Running]:
    libs = Running(board, str(tmp_path_factory.mktemp("libs")))
    try:
        yield libs
    finally:
        libs.release()


def _running(board: Board, kind: str, name: str, check: Any = lambda i: True) -> dict:
    answer = _until(board, kind, lambda a: (i := _item(a, name)) is not None
                    and i["state"] == "RUNNING" and check(i))
    return _item(answer, name)  # type: ignore[return-value]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_serve_app_a_tune_experiment_and_a_train_run_show_while_they_run(board, running):
    app = _running(board, "serve", running.APP,
                   lambda i: i["info"]["deployments"].get("Hello") == "HEALTHY 1/1")
    assert app["info"]["route_prefix"] == "/board" and app["info"]["ingress"] == "Hello"
    exp = _running(board, "tune", running.EXPERIMENT,
                   lambda i: i["info"]["running"] == 1)
    assert exp["info"]["trials"] == 1 and exp["info"]["path"].endswith(running.EXPERIMENT)
    run = _running(board, "train", running.RUN, lambda i: i["info"]["iteration"] >= 2)
    assert run["info"]["workers"] == 1 and "loss" in run["info"]["metrics"]
    later = _running(board, "train", running.RUN,
                     lambda i: i["info"]["iteration"] > run["info"]["iteration"])
    assert later["started"] == run["started"]  # the same entry, updated in place
    assert running.errors == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_library_pages_show_them_in_a_browser_without_console_errors(board, running,
                                                                        browser):
    from selenium.webdriver.common.by import By
    for kind, name in (("serve", running.APP), ("tune", running.EXPERIMENT),
                       ("train", running.RUN)):
        _running(board, kind, name)
    browser.delete_all_cookies()
    browser.get(f"{board.url}/?token={board.token}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Cluster"
    nav = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR,
                                                                     "header a")]
    assert [h for h in nav if h.rsplit("/", 1)[-1] in ("serve", "tune", "train")]
    browser.get_log("browser")
    for path, name, title in (("/serve", running.APP, "Serve applications"),
                              ("/tune", running.EXPERIMENT, "Tune experiments"),
                              ("/train", running.RUN, "Train runs")):
        browser.get(board.url + path)
        assert browser.find_element(By.TAG_NAME, "h1").text == title
        rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert any(name in r and "RUNNING" in r for r in rows), (path, rows)
        assert in_chromium._errors(browser) == [], path
        in_chromium._shot(browser, path.strip("/"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_when_they_end_the_experiment_and_run_finish_and_the_app_goes(board, running):
    for kind, name in (("serve", running.APP), ("tune", running.EXPERIMENT),
                       ("train", running.RUN)):
        _running(board, kind, name)
    running.release()
    assert running.errors == []
    exp = _item(_until(board, "tune", lambda a: _item(a, running.EXPERIMENT)["state"]
                       == "FINISHED"), running.EXPERIMENT)
    assert exp["info"]["terminated"] == 1 and exp["info"]["running"] == 0
    assert exp["finished"] >= exp["started"]
    run = _item(_until(board, "train", lambda a: _item(a, running.RUN)["state"]
                       == "FINISHED"), running.RUN)
    assert run["info"]["iteration"] >= 2 and run["info"]["failures"] == 0
    _until(board, "serve", lambda a: _item(a, running.APP) is None)
