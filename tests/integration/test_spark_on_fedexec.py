"""Spark on fedexec (``fedexec.integrations.spark.init_spark``): a Spark standalone
master and workers inside fedexec actors, on an embedded native runtime and on a
2-node ``fedexec.testing.Cluster``. Processes are checked with psutil: executors
must descend from the actors' worker processes, on the expected nodes, and die
with them; the per-test leak check (tests/_leaks.py) sees that nothing is left."""

from __future__ import annotations

import glob
import os
import re
import signal
import socket
import tempfile
import time

import psutil
import pytest

import fedexec
from _backend_support import exited

pytest.importorskip("pyspark")

from fedexec.integrations.spark import init_spark, stop_spark

from fedexec.testing import Cluster

EXECUTOR = "CoarseGrainedExecutorBackend"
WORKER = "org.apache.spark.deploy.worker.Worker"
SUPERVISOR = "fedexec.integrations._spark_supervisor"


@pytest.fixture(scope="module", autouse=True)
def _no_spark_context_of_other_modules():
    """Spark allows one SparkContext per process: stop one an earlier module left."""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    yield
    stop_spark()


@pytest.fixture
def spark_stopped():
    """Stops Spark on fedexec after the test, whatever happened."""
    yield
    stop_spark()


@pytest.fixture
def private_tmp(monkeypatch):
    """A temp dir of the test's own for the processes it starts (Spark's work dirs go
    there: other runs sharing /tmp cannot change what ``_workdirs`` sees). Short, so
    the runtime's socket paths stay under the Unix limit."""
    import shutil

    path = tempfile.mkdtemp(prefix="fx")
    monkeypatch.setenv("TMPDIR", path)
    monkeypatch.setattr(tempfile, "tempdir", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _cmd(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _spark(tag: str) -> list[psutil.Process]:
    """This process's descendants running ``tag`` (a Spark main class)."""
    return [p for p in psutil.Process().children(recursive=True)
            if tag in _cmd(p) and "java" in _cmd(p)]


def _java_left() -> list[str]:
    """Java processes under this one, except pyspark's own driver JVM."""
    return [_cmd(p)[:200] for p in psutil.Process().children(recursive=True)
            if "java" in _cmd(p) and "SparkSubmit" not in _cmd(p)
            and not exited(p.pid)]


def _actor_process(proc: psutil.Process) -> psutil.Process:
    """The fedexec worker process (the actor) whose supervisor runs ``proc``'s
    daemon: the supervisor's parent, whose pid the supervisor was given."""
    for parent in proc.parents():
        if SUPERVISOR in _cmd(parent):
            owner = parent.parent()
            assert owner is not None and str(owner.pid) in parent.cmdline()
            assert "fedexec.backends.native.node" in _cmd(owner)  # a native worker
            return owner
    raise AssertionError(f"{_cmd(proc)[:200]} does not run under a fedexec actor")


def _gone(procs: list[psutil.Process], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in procs if p.is_running() and not exited(p.pid)]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def _eventually(check, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _workdirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "spark-on-fedexec-*")))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_spark_runs_in_actors_of_the_embedded_runtime(private_tmp, spark_stopped):
    ex = fedexec.init(num_cpus=4)
    dirs_before = _workdirs()
    spark = init_spark("embedded", num_executors=2, executor_cores=1, executor_memory="512m")
    assert spark.sparkContext.master.startswith("spark://127.0.0.1:")
    with pytest.raises(fedexec.FedexecError, match="call stop_spark"):
        init_spark("again", 1, 1, "512m")

    assert spark.range(1000).selectExpr("sum(id)").collect()[0][0] == 499500
    # Each executor JVM runs under its own Spark worker actor, which holds 1 CPU.
    executors = _spark(EXECUTOR)
    assert len(executors) == 2
    actors = {_actor_process(p).pid for p in executors}
    assert len(actors) == 2
    assert ex.available_resources()["CPU"] == 2  # 4 - one per executor; the master: 0
    # Python code of a Spark job runs in the executors' Python workers, there too.
    # (a lambda: cloudpickle sends it by value, this module is not importable there)
    pids = spark.sparkContext.parallelize(range(8), 4).map(lambda _: os.getpid()).collect()
    assert {_actor_process(psutil.Process(pid)).pid for pid in pids} <= actors
    assert len(_workdirs() - dirs_before) == 3  # the master's and the workers'
    # Every Spark process (master, workers, executors, their Python workers) listens
    # on the loopback interface only.
    spark_procs = [p for p in psutil.Process().children(recursive=True)
                   if any(SUPERVISOR in _cmd(a) for a in p.parents())]
    listening = {(_cmd(p)[:60], c.laddr.ip) for p in spark_procs
                 for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for _, ip in listening), \
        listening

    stop_spark()
    stop_spark()  # idempotent
    assert _eventually(lambda: not _java_left()), _java_left()
    assert _workdirs() == dirs_before
    assert _eventually(lambda: ex.available_resources()["CPU"] == 4)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_spark_spreads_over_a_cluster_and_dies_with_its_actors(spark_stopped):
    with Cluster(head_num_cpus=0) as cluster:
        nodes = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]
        with fedexec.Executor(address=cluster.address) as ex:
            spark = init_spark("cluster", 2, 1, "512m", executor=ex)
            assert spark.range(1000).selectExpr("sum(id)").collect()[0][0] == 499500

            # One executor per node, each inside a worker actor of that node.
            executors = _spark(EXECUTOR)
            assert len(executors) == 2
            owners = {p.pid: _actor_process(p) for p in executors}
            assert sorted(o.ppid() for o in owners.values()) == sorted(n.pid for n in nodes)

            # SIGKILL one worker actor's process: its Spark worker and executor go too.
            victim = executors[0]
            actor = owners[victim.pid]
            doomed = [p for p in actor.children(recursive=True)]
            assert any(WORKER in _cmd(p) for p in doomed)
            survivor = executors[1]
            os.kill(actor.pid, signal.SIGKILL)
            assert _gone(doomed), [_cmd(p)[:120] for p in doomed if p.is_running()]
            assert survivor.is_running()

            stop_spark()
            assert _eventually(lambda: not _java_left()), _java_left()


def test_java_missing_on_the_nodes_is_a_clear_error(monkeypatch, spark_stopped):
    from pyspark import SparkContext

    SparkContext._ensure_initialized()  # the driver's JVM, while Java is found
    monkeypatch.setenv("JAVA_HOME", "/nonexistent-java-home")
    ex = fedexec.init(num_cpus=2)  # its node and workers inherit the environment
    with pytest.raises(fedexec.FedexecError,
                       match=r"JAVA_HOME=/nonexistent-java-home on node .* no bin/java"):
        init_spark("nojava", 1, 1, "512m", timeout=60)
    assert _eventually(lambda: ex.available_resources()["CPU"] == 2)
    with pytest.raises(fedexec.FedexecError, match="JAVA_HOME"):  # not "already runs"
        init_spark("nojava", 1, 1, "512m", timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_master_port_in_use_is_a_clear_error(private_tmp, spark_stopped):
    ex = fedexec.init(num_cpus=2)
    dirs_before = _workdirs()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(fedexec.FedexecError,
                           match=re.escape(f"127.0.0.1:{port}: the port is in use; pass "
                                           "another master_port")):
            init_spark("busy", 1, 1, "512m", master_port=port)
    assert _eventually(lambda: not _java_left()), _java_left()
    assert _workdirs() == dirs_before
    assert _eventually(lambda: ex.available_resources()["CPU"] == 2)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_executors_that_cannot_start_are_a_clear_error(spark_stopped):
    ex = fedexec.init(num_cpus=2)
    configs = {"spark.executor.extraJavaOptions": "-javaagent:/nonexistent/agent.jar",
               "spark.deploy.maxExecutorRetries": "1"}  # read by the master
    with pytest.raises(fedexec.FedexecError, match="executors") \
            as info:
        init_spark("failing", 1, 1, "512m", configs=configs, timeout=120)
    assert "/nonexistent/agent.jar" in str(info.value)  # from the executor's stderr
    from pyspark import SparkContext

    assert SparkContext._active_spark_context is None
    assert _eventually(lambda: not _java_left()), _java_left()
    assert _eventually(lambda: ex.available_resources()["CPU"] == 2)


@pytest.mark.timeout(120)
def test_no_room_for_the_executors_is_a_clear_error(spark_stopped):
    ex = fedexec.init(num_cpus=2)
    with pytest.raises(fedexec.FedexecError,
                       match="has not had room for 1 Spark executors of 8 CPU"):
        init_spark("big", 1, 8, "512m", timeout=5)
    assert _eventually(lambda: not _java_left()), _java_left()
    assert _eventually(lambda: ex.available_resources()["CPU"] == 2)


def test_arguments_are_checked_before_anything_starts():
    with pytest.raises(ValueError, match="num_executors"):
        init_spark("x", 0, 1, "1g")
    with pytest.raises(ValueError, match="executor_cores"):
        init_spark("x", 1, 1.5, "1g")
    with pytest.raises(ValueError, match="executor_memory"):
        init_spark("x", 1, 1, "lots")
    with pytest.raises(ValueError, match="at least 450 MiB"):
        init_spark("x", 1, 1, "100m")
    with pytest.raises(ValueError, match=r"spark\.cores\.max"):
        init_spark("x", 1, 1, "1g", configs={"spark.cores.max": "8"})
    assert not fedexec.is_initialized()
