"""``fedexec serve run|deploy|status|shutdown`` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import requests

from _backend_support import free_port, poll_until
from fedexec.testing import Cluster

T = 60
APP = textwrap.dedent("""
    from fedexec import serve

    @serve.deployment(user_config={"word": "hello"})
    class Greeter:
        def reconfigure(self, config):
            self.word = config["word"]

        def __call__(self, request):
            return f"{self.word} {request.query_params.get('name', 'world')}"

    app = Greeter.bind()
""")


def _cli(args: list[str], cwd: str, env: dict[str, str], **kw):
    return subprocess.run([sys.executable, "-m", "fedexec", "serve", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=T, **kw)


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_deploy_status_shutdown_on_a_cluster(tmp_path):
    (tmp_path / "greeter.py").write_text(APP)
    port = free_port()
    (tmp_path / "serve.yaml").write_text(textwrap.dedent(f"""
        http_options: {{host: 127.0.0.1, port: {port}}}
        applications:
          - name: greet
            route_prefix: /greet
            import_path: greeter:app
            deployments:
              - name: Greeter
                num_replicas: 2
                user_config: {{word: hi}}
    """))
    cluster = Cluster(head_num_cpus=2)
    try:
        env = {**os.environ, "FEDEXEC_TOKEN": cluster.token}
        out = _cli(["deploy", "serve.yaml", "--address", cluster.address], str(tmp_path), env)
        assert out.returncode == 0, out.stderr
        assert "deployed greet" in out.stdout
        # the CLI process has exited: serve runs on, detached
        r = requests.get(f"http://127.0.0.1:{port}/greet?name=ann", timeout=T)
        assert r.text == "hi ann"
        out = _cli(["status", "--address", cluster.address], str(tmp_path), env)
        assert out.returncode == 0, out.stderr
        status = json.loads(out.stdout)["applications"]["greet"]
        assert status["status"] == "RUNNING"
        assert status["deployments"]["Greeter"]["replica_states"] == {"RUNNING": 2}
        out = _cli(["shutdown", "--address", cluster.address], str(tmp_path), env)
        assert out.returncode == 0, out.stderr
        assert poll_until(lambda: not _ok(f"http://127.0.0.1:{port}/-/healthz"), timeout=30)
    finally:
        cluster.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_run_serves_until_interrupted(tmp_path):
    (tmp_path / "greeter.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "FEDEXEC_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "fedexec", "serve", "run", "greeter:app",
                             "--port", str(port)], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert poll_until(lambda: _ok(f"http://127.0.0.1:{port}/"), timeout=60), \
            proc.stderr.read() if proc.poll() is not None else "not serving"
        assert requests.get(f"http://127.0.0.1:{port}/?name=bo", timeout=T).text == "hello bo"
        # The proxy answers before `serve run` has finished starting; it says when it
        # has ("serving ... (Ctrl-C stops)"), and that is when Ctrl-C is meant to come.
        line = ""
        for _ in range(50):
            line = proc.stdout.readline()
            if not line or line.startswith("serving "):
                break
        assert line.startswith("serving greeter:app"), line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, proc.stderr.read()  # the stacks, if it was held
        assert not _ok(f"http://127.0.0.1:{port}/-/healthz")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# An application whose module leaves a non-daemon thread that never ends (a library
# can): the interpreter waits for it at exit, for ever.
HELD = APP + textwrap.dedent("""
    import threading

    threading.Thread(target=threading.Event().wait, name="never-ends").start()
""")


def _serving(tmp_path, app: str):
    (tmp_path / "held.py").write_text(app)
    port = free_port()
    env = {**os.environ, "FEDEXEC_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "fedexec", "serve", "run", "held:app",
                             "--port", str(port)], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = ""
    for _ in range(50):
        line = proc.stdout.readline()
        if not line or line.startswith("serving "):
            break
    assert line.startswith("serving held:app"), line + (proc.stderr.read() if proc.poll()
                                                         is not None else "")
    return proc, port


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_run_exits_within_its_grace_when_something_holds_it(tmp_path):
    proc, port = _serving(tmp_path, HELD)
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 1  # STOP_GRACE_S, then it exits anyway
        err = proc.stderr.read()
        assert "did not stop within" in err and "in wait" in err, err  # where it was held
        assert not _ok(f"http://127.0.0.1:{port}/-/healthz")  # serve was shut down
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_second_ctrl_c_stops_run_at_once(tmp_path):
    proc, _ = _serving(tmp_path, HELD)
    try:
        proc.send_signal(signal.SIGINT)
        line = ""
        for _ in range(50):  # it says it is stopping, then a second Ctrl-C may come
            line = proc.stderr.readline()
            if not line or "Ctrl-C again" in line:
                break
        assert "Ctrl-C again" in line, line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
        assert "second signal" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_import_path_says_what_to_do(tmp_path):
    out = _cli(["run", "nocolon"], str(tmp_path), dict(os.environ))
    assert out.returncode == 1 and "must look like module:variable" in out.stderr
