"""Jobs on a cluster started from the command line (``fedexec job ...``): they run
as drivers of that cluster, report how they ended, can be stopped, and the job
agent authenticates every connection before it decodes anything."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import fedexec
from _backend_support import check_a_raw_pickle_is_dropped_unread, exited, poll_until
from fedexec.backends.native import jobs_agent
from fedexec.backends.native.jobs import JobClient, pack_working_dir

T = 60


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "fedexec", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or os.environ.copy())


def gone(pid, timeout=15.0):
    """True once ``pid`` has exited (a zombie counts: init may reap it late)."""
    return poll_until(lambda: exited(pid), timeout, interval=0.05)


def job_pids(home):
    pids = []
    for name in os.listdir(home / "jobs") if (home / "jobs").exists() else []:
        with open(home / "jobs" / name / "job.json") as f:
            pid = json.load(f).get("pid")
        if pid:
            pids.append(pid)
    return pids


@pytest.fixture
def head(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("FEDEXEC_HOME", str(home))
    monkeypatch.delenv("FEDEXEC_TOKEN", raising=False)
    out = cli("start", "--head", "--port", "0", "--num-cpus", "2",
              "--resources", json.dumps({"on_cluster": 1}))  # no private runtime has it
    assert out.returncode == 0, out.stderr
    info = json.loads((home / "cluster.json").read_text())
    info["token"] = (home / "token").read_text().strip()
    info["home"] = home
    try:
        yield info
    finally:
        cli("stop")
        assert gone(info["job_agent_pid"]), "the job agent outlived 'fedexec stop'"
        assert gone(info["pid"]), "the head outlived 'fedexec stop'"
        assert all(gone(pid) for pid in job_pids(home)), "a job outlived 'fedexec stop'"


def submitted_id(out):
    """The job id ``fedexec job submit`` reported on stderr."""
    return re.search(r"fedexec_job_[0-9a-f]+", out.stderr).group(0)


def submit_no_wait(*entrypoint, env=None):
    out = cli("job", "submit", "--no-wait", "--", *entrypoint, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def status(job_id):
    out = cli("job", "status", "--format", "json", job_id)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for_output(job_id, text, timeout=T):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in cli("job", "logs", job_id).stdout:
            return
        time.sleep(0.2)
    raise AssertionError(f"{job_id} never printed {text!r}")


SCRIPT = textwrap.dedent("""
    import os, sys
    print("files", sorted(os.listdir(".")))  # before importing helper makes __pycache__
    import fedexec
    import helper  # from the working dir

    with fedexec.Executor(address="auto") as ex:
        print("nodes", len(ex.nodes()), ex.nodes()[0]["node_id"])
        print("squares", ex.get([ex.submit(helper.square, i) for i in range(4)], timeout=60))
    with fedexec.Executor(address=os.environ["FEDEXEC_ADDRESS"]) as ex:
        print("over tcp", ex.get(ex.submit(helper.square, 5), timeout=60))
    print("job", os.environ["FEDEXEC_JOB_ID"], "args", sys.argv[1:])
""")


def test_a_job_runs_its_working_dir_on_the_cluster(head, tmp_path):
    wd = tmp_path / "project"
    (wd / ".git").mkdir(parents=True)
    (wd / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (wd / "__pycache__").mkdir()
    (wd / "helper.py").write_text("def square(x):\n    return x * x\n")
    (wd / "script.py").write_text(SCRIPT)
    out = cli("job", "submit", "--working-dir", str(wd), "--", "python", "script.py",
              "a", "--flag")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "files ['helper.py', 'script.py']" in lines  # .git and __pycache__ left out
    assert f"nodes 1 {head['node_id']}" in lines        # it joined this cluster
    assert "squares [0, 1, 4, 9]" in lines              # tasks from a working-dir module
    assert "over tcp 25" in lines
    job_id = submitted_id(out)
    assert f"job {job_id} args ['a', '--flag']" in lines
    assert f"job {job_id} SUCCEEDED" in out.stderr
    record = status(job_id)
    assert record["status"] == "SUCCEEDED" and record["exit_code"] == 0
    assert record["entrypoint"] == ["python", "script.py", "a", "--flag"]
    assert record["start_time"] <= record["end_time"]
    logs = cli("job", "logs", job_id)
    assert logs.returncode == 0 and logs.stdout == out.stdout
    table = cli("job", "status", job_id).stdout
    assert "SUCCEEDED" in table and "python script.py a --flag" in table


BARE_INIT = textwrap.dedent("""
    import fedexec

    fedexec.init()  # no address: inside a job, the job's cluster

    @fedexec.remote
    def nested():
        return fedexec.get_runtime_context().job_id

    @fedexec.remote(resources={"on_cluster": 0.1})
    def where():
        ctx = fedexec.get_runtime_context()
        return ctx.job_id, ctx.node_id, fedexec.get(nested.remote(), timeout=60)

    @fedexec.remote(resources={"on_cluster": 0.1})
    class Probe:
        def job(self):
            return fedexec.get_runtime_context().job_id

    ctx = fedexec.get_runtime_context()
    print("driver", ctx.job_id, ctx.node_id)
    print("task", *fedexec.get(where.remote(), timeout=60))
    print("actor", fedexec.get(Probe.remote().job.remote(), timeout=60))
    print("nodes", *[n["node_id"] for n in fedexec.nodes()])
    fedexec.shutdown()
""")


def test_a_bare_init_in_a_job_joins_the_jobs_cluster(head):
    out = cli("job", "submit", "--", "python", "-c", BARE_INIT)
    assert out.returncode == 0, out.stdout + out.stderr
    job_id, node = submitted_id(out), head["node_id"]
    lines = out.stdout.splitlines()
    assert f"driver {job_id} {node}" in lines        # a driver of this cluster, in this job
    assert f"task {job_id} {node} {job_id}" in lines  # its tasks (nested ones too) are the job's
    assert f"actor {job_id}" in lines
    assert f"nodes {node}" in lines
    rows = json.loads(cli("job", "list", "--format", "json").stdout)
    assert [r["job_id"] for r in rows] == [job_id]


BARE_EXECUTORS = textwrap.dedent("""
    import fedexec

    def job_of_task():
        return fedexec.get_runtime_context().job_id

    with fedexec.Executor() as a, fedexec.Executor(max_workers=1) as b, \\
            fedexec.Executor(address="auto") as c:
        print("jobs", *[ex.get_runtime_context().job_id for ex in (a, b, c)])
        print("nodes", *[ex.get_runtime_context().node_id for ex in (a, b, c)])
        on_cluster = a.options(resources={"on_cluster": 0.1})
        print("task", a.get(on_cluster.submit(job_of_task), timeout=60))
        print("map", list(b.map(abs, [-1, -2, -3], timeout=60)))  # max_workers: no error
    with fedexec.Executor(address="local", num_cpus=1) as private:
        print("private", private.get_runtime_context().node_id)
    for arg, value in (("num_cpus", 4), ("num_gpus", 1), ("object_store_memory", 1 << 30),
                       ("resources", {"x": 1}), ("initializer", print)):
        try:
            fedexec.Executor(**{arg: value})
        except ValueError as exc:
            print("refused", arg, "--", exc)
""")


def test_bare_executors_in_a_job_join_its_cluster_with_the_jobs_id(head):
    out = cli("job", "submit", "--", "python", "-c", BARE_EXECUTORS)
    assert out.returncode == 0, out.stdout + out.stderr
    job_id, node = submitted_id(out), head["node_id"]
    lines = out.stdout.splitlines()
    assert f"jobs {job_id} {job_id} {job_id}" in lines
    assert f"nodes {node} {node} {node}" in lines
    assert f"task {job_id}" in lines
    assert "map [1, 2, 3]" in lines
    private = next(line.split()[1] for line in lines if line.startswith("private"))
    assert private != node
    refused = [line for line in lines if line.startswith("refused")]
    assert [line.split()[1] for line in refused] == [
        "num_cpus", "num_gpus", "object_store_memory", "resources", "initializer"]
    assert all("joins the cluster" in line and "(from FEDEXEC_ADDRESS)" in line
               and "address='local'" in line for line in refused)


def test_a_driver_keeps_one_job_id_per_cluster(head):
    with fedexec.Executor(address=head["address"]) as a, \
            fedexec.Executor(address="auto") as b:
        job_id = a.get_runtime_context().job_id
        assert job_id and b.get_runtime_context().job_id == job_id
        task = a.submit(lambda: fedexec.get_runtime_context().job_id)
        assert a.get(task, timeout=T) == job_id
    with fedexec.Executor(address="auto") as again:  # the same driver, later
        assert again.get_runtime_context().job_id == job_id
    other = subprocess.run(
        [sys.executable, "-c", "import fedexec\n"
         "with fedexec.Executor(address='auto') as ex:\n"
         "    print(ex.get_runtime_context().job_id)"],
        capture_output=True, text=True, timeout=T)
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() not in ("", job_id)  # another driver, another job


def test_fedexec_address_is_read_only_by_a_native_executor_without_an_address(head):
    env = {**os.environ, "FEDEXEC_ADDRESS": "127.0.0.1:1"}  # nothing listens there
    script = textwrap.dedent("""
        import fedexec
        with fedexec.Executor(address="auto") as ex:    # an explicit address wins
            print("auto", ex.get(ex.submit(abs, -2), timeout=60))
        with fedexec.Executor(backend="local") as ex:  # other backends ignore it
            print("local", ex.get(ex.submit(abs, -3), timeout=60))
        try:
            fedexec.Executor()
        except fedexec.ClusterUnreachableError as exc:
            print("unreachable --", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=T, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["auto 2", "local 3"]
    assert lines[2].startswith("unreachable --") and "FEDEXEC_ADDRESS" in lines[2]


def test_a_failing_job_is_failed_with_its_exit_code(head):
    out = cli("job", "submit", "--", "python", "-c",
              "import sys; print('about to fail'); sys.exit(3)")
    assert out.returncode == 1
    assert "about to fail" in out.stdout and "FAILED (exit code 3)" in out.stderr
    record = status(submitted_id(out))
    assert record["status"] == "FAILED" and record["exit_code"] == 3
    out = cli("job", "submit", "--", "python", "-c", "raise ValueError('bad input')")
    assert out.returncode == 1 and "ValueError: bad input" in out.stdout
    out = cli("job", "submit", "--", "no-such-program-here")
    assert out.returncode == 1 and "no program 'no-such-program-here'" in out.stderr


def test_stop_ends_the_job_and_its_processes(head):
    job_id = submit_no_wait("python", "-c",
                            "import subprocess, sys, time\n"
                            "child = subprocess.Popen([sys.executable, '-c', "
                            "'import time; time.sleep(600)'])\n"
                            "print('child', child.pid, flush=True)\n"
                            "time.sleep(600)")
    assert job_id.startswith("fedexec_job_")
    wait_for_output(job_id, "child")
    child = int(cli("job", "logs", job_id).stdout.split()[1])
    record = status(job_id)
    assert record["status"] == "RUNNING" and psutil.pid_exists(record["pid"])
    out = cli("job", "stop", job_id)
    assert out.returncode == 0 and f"job {job_id} STOPPED" in out.stdout
    record = status(job_id)
    assert record["status"] == "STOPPED" and record["exit_code"] == -signal.SIGTERM
    assert gone(record["pid"]) and gone(child)  # the whole process group


def test_a_job_ignoring_sigterm_is_killed_after_the_grace_period(head):
    job_id = submit_no_wait("python", "-c",
                            "import signal, time\n"
                            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                            "print('ready', flush=True)\n"
                            "time.sleep(600)")
    wait_for_output(job_id, "ready")
    started = time.monotonic()
    out = cli("job", "stop", "--grace", "1", job_id)
    assert out.returncode == 0 and "STOPPED" in out.stdout
    assert time.monotonic() - started < 30
    record = status(job_id)
    assert record["status"] == "STOPPED" and record["exit_code"] == -signal.SIGKILL
    assert gone(record["pid"])
    # Stopping a job that already ended leaves it as it was.
    assert "STOPPED" in cli("job", "stop", job_id).stdout


def test_logs_follow_streams_until_the_job_ends(head):
    job_id = submit_no_wait("python", "-c",
                            "import time\n"
                            "for i in range(5):\n"
                            "    print('line', i)\n"
                            "    time.sleep(0.2)")
    out = cli("job", "logs", "--follow", job_id)
    assert out.returncode == 0
    assert out.stdout.splitlines() == [f"line {i}" for i in range(5)]
    assert status(job_id)["status"] == "SUCCEEDED"


def test_list_as_json_and_as_a_table(head):
    ok = submit_no_wait("python", "-c", "print('ok')")
    bad = submit_no_wait("python", "-c", "raise SystemExit(2)")
    with JobClient() as client:
        client.wait(ok, timeout=T)
        client.wait(bad, timeout=T)
    out = cli("job", "list", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = {r["job_id"]: r for r in json.loads(out.stdout)}
    assert rows[ok]["status"] == "SUCCEEDED" and rows[bad]["status"] == "FAILED"
    assert rows[bad]["exit_code"] == 2
    table = cli("job", "list").stdout
    assert table.startswith("JOB_ID") and ok in table and bad in table


def test_stopping_the_cluster_stops_its_running_jobs(head):
    job_id = submit_no_wait("python", "-c", "import time; print('up', flush=True); "
                            "time.sleep(600)")
    wait_for_output(job_id, "up")
    pid = status(job_id)["pid"]
    assert cli("stop").returncode == 0
    assert gone(pid) and gone(head["job_agent_pid"])
    record = json.loads((head["home"] / "jobs" / job_id / "job.json").read_text())
    assert record["status"] == "STOPPED" and "cluster was stopped" in record["message"]


def test_jobs_survive_an_agent_restart(head):
    done = submit_no_wait("python", "-c", "print('finished')")
    running = submit_no_wait("python", "-c", "import time; print('up', flush=True); "
                             "time.sleep(600)")
    with JobClient() as client:
        client.wait(done, timeout=T)
    wait_for_output(running, "up")
    os.kill(head["job_agent_pid"], signal.SIGKILL)
    assert gone(head["job_agent_pid"])
    agent = jobs_agent.launch_agent(
        host="127.0.0.1", port=0, head_address=head["address"], head_pid=head["pid"],
        token=head["token"], session_dir=head["dirs"][-1], home=str(head["home"]))
    try:
        with JobClient(agent["address"]) as client:
            rows = {r["job_id"]: r for r in client.list_jobs()}
            assert rows[done]["status"] == "SUCCEEDED"
            assert client.logs(done)[0] == b"finished\n"
            assert rows[running]["status"] == "RUNNING"  # adopted, still running
            record = client.stop(running, grace=5)
            assert record["status"] == "STOPPED"
            assert gone(record["pid"])
    finally:
        jobs_agent.stop_agent(agent["pid"])
        assert gone(agent["pid"])


def test_a_wrong_token_is_refused_cleanly(head):
    env = {**os.environ, "FEDEXEC_TOKEN": "ab" * 32}
    out = cli("job", "list", env=env)
    assert out.returncode == 2
    assert "refused the cluster token" in out.stderr and "FEDEXEC_TOKEN" in out.stderr
    assert "Traceback" not in out.stderr
    with pytest.raises(fedexec.AuthenticationError, match="token"):
        JobClient(token="cd" * 32)
    assert cli("job", "list").returncode == 0  # the right token still works


def test_no_cluster_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDEXEC_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("FEDEXEC_TOKEN", "ab" * 32)
    out = cli("job", "list")
    assert out.returncode == 2 and "no running fedexec cluster" in out.stderr
    assert "Traceback" not in out.stderr
    out = cli("job", "status", "--address", "127.0.0.1:1", "fedexec_job_0")
    assert out.returncode == 2 and "cannot reach a fedexec job agent" in out.stderr
    with pytest.raises(fedexec.ClusterUnreachableError):
        JobClient("127.0.0.1:1")


def test_bad_requests_are_clean_errors(head, tmp_path):
    out = cli("job", "status", "fedexec_job_nope")
    assert out.returncode == 2 and "no job 'fedexec_job_nope'" in out.stderr
    out = cli("job", "submit", "--working-dir", str(tmp_path / "missing"), "--", "python")
    assert out.returncode == 2 and "is not a directory" in out.stderr
    out = cli("job", "submit")
    assert out.returncode == 2 and "non-empty" in out.stderr
    for text in (out.stderr,):
        assert "Traceback" not in text


def test_a_working_dir_over_the_limit_is_refused(tmp_path):
    (tmp_path / "data.bin").write_bytes(os.urandom(50_000))
    with pytest.raises(ValueError, match="packs to more than"):
        pack_working_dir(str(tmp_path), limit=10_000)
    assert len(pack_working_dir(str(tmp_path))) > 50_000


def test_a_raw_tcp_peer_sending_a_pickle_to_the_agent_is_dropped_unread(head, tmp_path):
    check_a_raw_pickle_is_dropped_unread(head["job_address"], tmp_path)
    out = cli("job", "list", "--format", "json")  # and it keeps serving
    assert out.returncode == 0 and json.loads(out.stdout) == []


def test_the_job_agent_takes_only_job_connections_and_typed_requests(head):
    from fedexec.backends.native import cluster
    from fedexec.backends.native.jobs import JobErrorKind, recv_message, send_message
    from fedexec.backends.native.protocol import client_handshake
    from fedexec.exceptions import ProtocolError

    token = cluster.token_bytes(head["token"])
    host, _, port = head["job_address"].rpartition(":")
    sock = cluster.connect(("tcp", host, int(port)))
    with sock, pytest.raises(ProtocolError, match="job agent takes job connections, not "
                                                  "'driver'"):
        client_handshake(sock, token, role="driver")
    host, _, port = head["address"].rpartition(":")
    sock = cluster.connect(("tcp", host, int(port)))
    with sock, pytest.raises(ProtocolError, match="not 'job'"):
        client_handshake(sock, token, role="job")
    with JobClient() as client:  # a request that does not fit its schema is refused
        send_message(client._sock, [2, 7])
        answer = recv_message(client._sock, bytearray(), 1 << 20)
        assert answer[:2] == [False, JobErrorKind.BAD_REQUEST]
        assert "JobStatus.job_id must be str, not int" in answer[2]
        assert client.list_jobs() == []  # the connection still serves
