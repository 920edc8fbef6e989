"""The spark backend beyond the conformance suite: batching many tasks into few
Spark jobs, cancelling through job groups, broadcasts for large values, the
shared SparkContext, other masters, and what is left after shutdown."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import psutil
import pytest

import fedexec
from _backend_support import (
    add_one,
    check_dependents_of_a_retried_task_get_its_result,
    check_missing_dependency_names_the_extra,
    square,
)
from fedexec import backends

pyspark = pytest.importorskip("pyspark")

T = 60


# --------------------------------------------------------------------------- task bodies
def my_pid():
    return os.getpid()


def spin_with_pid(pid_file, seconds=60):
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return "ran to the end"


def sleep_long(started, seconds=60):
    open(started, "w").close()
    time.sleep(seconds)  # one blocking call: only a signal ends it early
    return "slept"


def broadcasts_here_and_sum(array):
    from pyspark.broadcast import _broadcastRegistry

    return sorted(_broadcastRegistry), float(array.sum())


def nested_length(items):
    return len(fedexec.get(items[0], timeout=T))  # a large value read from the driver


def note_initializer_pid(directory):
    open(os.path.join(directory, f"init-{os.getpid()}-{uuid.uuid4().hex}"), "w").close()


def env_and_cwd(key):
    return os.environ.get(key), os.getcwd()


def sum_of_children(n):
    return sum(fedexec.get([fedexec.remote(square).remote(i) for i in range(n)], timeout=T))


class Plain:
    def read(self):
        return 1


def _wait_until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _spark_jobs(sc, groups):
    tracker = sc.statusTracker()
    return [j for g in groups for j in tracker.getJobIdsForGroup(g)]


# --------------------------------------------------------------------------- registry
def test_missing_pyspark_raises_backend_unavailable_naming_the_extra(monkeypatch):
    check_missing_dependency_names_the_extra(monkeypatch, "spark", "pyspark")


def test_capabilities_are_declared():
    caps = backends.capabilities("spark")
    assert {"cancel_running", "worker_processes", "multi_node"} <= caps
    for missing in ("actors", "async_actors", "named_actors", "actor_restarts",
                    "placement_groups", "zero_copy", "gpus", "spilling",
                    "lineage_reconstruction"):
        assert missing not in caps


def test_actors_raise_unsupported_naming_the_native_runtime_on_spark(ex):
    with pytest.raises(fedexec.UnsupportedOnBackendError) as info:
        ex.actor(Plain)
    message = str(info.value)
    assert "fedexec.integrations.spark.start_cluster(spark)" in message
    for name in backends.backends_with("actors"):
        assert name in message
    with pytest.raises(fedexec.UnsupportedOnBackendError):
        ex.get_actor("anything")


def test_bad_backend_arguments_raise_value_error():
    with pytest.raises(ValueError, match="lingr"):
        fedexec.Executor(backend="spark", lingr=1)
    with pytest.raises(ValueError, match="native backend"):
        fedexec.Executor(backend="spark", address="auto")
    with pytest.raises(ValueError, match="not both"):
        fedexec.Executor(backend="spark", address="local[2]", spark=object())
    with pytest.raises(TypeError, match="SparkSession"):
        fedexec.Executor(backend="spark", spark=object())


# --------------------------------------------------------------------------- batching
def test_many_tasks_run_in_far_fewer_spark_jobs(make_executor):
    executor = make_executor(num_cpus=2)
    refs = [executor.submit(square, i) for i in range(200)]
    assert executor.get(refs, timeout=T) == [i * i for i in range(200)]
    stats = executor._backend.stats()
    assert stats["tasks_run"] >= 200
    assert stats["spark_jobs"] <= 6, stats  # one lease per CPU, give or take a relaunch
    # Spark's own tracker agrees: each lease is one job of its own job group.
    assert len(_spark_jobs(executor._backend.sc, stats["job_groups"])) == stats["spark_jobs"]


def test_a_chain_of_dependent_tasks_stays_in_one_lease(make_executor):
    executor = make_executor(num_cpus=1)
    ref = executor.put(0)
    for _ in range(30):
        ref = executor.submit(add_one, ref)
    assert executor.get(ref, timeout=T) == 30
    assert executor._backend.stats()["spark_jobs"] <= 2


def test_idle_leases_end_after_the_linger_time(make_executor):
    executor = make_executor(num_cpus=2, linger=0.2)
    assert executor.get([executor.submit(square, i) for i in range(4)], timeout=T) == [0, 1, 4, 9]
    sc = executor._backend.sc
    groups = executor._backend.stats()["job_groups"]

    def none_active():
        active = set(sc.statusTracker().getActiveJobsIds())
        return not active & set(_spark_jobs(sc, groups))

    assert _wait_until(none_active)
    assert executor.get(executor.submit(square, 5), timeout=T) == 25  # a new lease


# --------------------------------------------------------------------------- cancelling
def test_force_cancel_kills_the_task_through_its_spark_job_group(make_executor, tmp_path):
    executor = make_executor(num_cpus=1)
    pid_file = str(tmp_path / "pid")
    ref = executor.submit(spin_with_pid, pid_file)
    assert _wait_until(lambda: os.path.exists(pid_file) and os.path.getsize(pid_file) > 0)
    pid = int(open(pid_file).read())
    (group,) = executor._backend.stats()["job_groups"]
    assert executor.cancel(ref, force=True) is True
    with pytest.raises(fedexec.TaskCancelledError):
        executor.get(ref, timeout=T)
    assert _wait_until(lambda: not psutil.pid_exists(pid)), "the task's worker is alive"
    sc = executor._backend.sc
    (job,) = sc.statusTracker().getJobIdsForGroup(group)
    assert _wait_until(lambda: str(sc.statusTracker().getJobInfo(job).status) == "FAILED")
    assert executor.get(executor.submit(square, 3), timeout=T) == 9  # its CPU came back


def test_cancel_interrupts_a_task_blocked_in_one_long_call(make_executor, tmp_path):
    executor = make_executor(num_cpus=1)
    started = str(tmp_path / "started")
    ref = executor.submit(sleep_long, started)
    assert _wait_until(lambda: os.path.exists(started))
    begin = time.monotonic()
    assert executor.cancel(ref) is True
    with pytest.raises(fedexec.TaskCancelledError):
        executor.get(ref, timeout=T)
    assert time.monotonic() - begin < 10  # not the 60 s of the sleep
    assert executor._backend.stats()["spark_jobs"] == 1  # the lease survived
    assert executor.get(executor.submit(square, 4), timeout=T) == 16


# --------------------------------------------------------------------------- values
def test_large_put_reaches_tasks_as_a_spark_broadcast(make_executor):
    executor = make_executor(num_cpus=2)
    array = np.ones(1 << 20)  # 8 MiB, over the 1 MiB threshold
    big = executor.put(array)
    small = executor.put(np.ones(10))
    results = executor.get([executor.submit(broadcasts_here_and_sum, big) for _ in range(4)],
                           timeout=T)
    stored = big._result
    assert stored.broadcast_id is not None  # one broadcast for the value, made once
    for registry, total in results:
        assert stored.broadcast_id in registry  # the task read it from the broadcast
        assert total == float(1 << 20)
    assert executor.get(executor.submit(broadcasts_here_and_sum, small), timeout=T)[1] == 10.0
    assert small._result.broadcast is None  # small values travel with the task
    assert executor.get(executor.submit(nested_length, [big]), timeout=T) == 1 << 20
    path = stored.broadcast._path
    del big, stored, results
    gc.collect()
    assert _wait_until(lambda: not os.path.exists(path)), "the broadcast outlived its value"


def test_a_large_task_result_feeding_many_tasks_is_broadcast_once(make_executor):
    executor = make_executor(num_cpus=2)
    made = executor.submit(np.arange, 1 << 18)  # 2 MiB
    sums = executor.get([executor.submit(np.sum, made) for _ in range(5)], timeout=T)
    assert sums == [sum(range(1 << 18))] * 5
    assert made._result.broadcast_id is not None



# --------------------------------------------------------------------------- workers
def test_a_dead_worker_is_detected_and_its_task_retried_for_dependents(make_executor, tmp_path):
    check_dependents_of_a_retried_task_get_its_result(make_executor(num_cpus=2), tmp_path)


def test_initializer_runs_once_in_each_python_worker(make_executor, tmp_path):
    executor = make_executor(num_cpus=2, initializer=note_initializer_pid,
                             initargs=(str(tmp_path),))
    pids = set(executor.get([executor.submit(my_pid) for _ in range(20)], timeout=T))
    for pid in pids:
        assert len([f for f in os.listdir(tmp_path) if f.startswith(f"init-{pid}-")]) == 1


def test_runtime_env_applies_while_the_task_runs_only(make_executor, tmp_path):
    executor = make_executor(num_cpus=1)
    key = f"FEDEXEC_SPARK_TEST_{uuid.uuid4().hex}"
    env = {"env_vars": {key: "on"}, "working_dir": str(tmp_path)}
    assert executor.get(executor.options(runtime_env=env).submit(env_and_cwd, key),
                        timeout=T) == ("on", str(tmp_path))
    value, cwd = executor.get(executor.submit(env_and_cwd, key), timeout=T)
    assert value is None and cwd != str(tmp_path)
    with pytest.raises(fedexec.RuntimeEnvSetupError):
        executor.get(executor.options(runtime_env={"working_dir": str(tmp_path / "no")})
                     .submit(square, 1), timeout=T)


def test_nested_tasks_go_to_the_driver_and_lend_the_parent_cpu(make_executor):
    executor = make_executor(num_cpus=1)
    assert executor.get(executor.submit(sum_of_children, 5), timeout=T) == 30


def test_executors_without_fedexec_fail_the_tasks_with_the_reason(make_executor):
    base = getattr(sys, "_base_executable", sys.executable)
    probe = subprocess.run([base, "-c", "import fedexec"], capture_output=True)
    if base == sys.executable or probe.returncode == 0:
        pytest.skip("no Python without fedexec at hand")
    executor = make_executor(num_cpus=1)
    sc = executor._backend.sc
    saved, sc.pythonExec = sc.pythonExec, base  # as a cluster whose Python lacks fedexec
    try:
        with pytest.raises(fedexec.WorkerCrashedError) as info:
            executor.get(executor.submit(square, 2), timeout=T)
    finally:
        sc.pythonExec = saved
    assert "No module named 'fedexec'" in str(info.value)
    assert "PYSPARK_PYTHON" in str(info.value)


# --------------------------------------------------------------------------- the context
def test_executors_share_one_spark_context_and_one_jvm(ex, make_executor):
    other = make_executor(num_cpus=1)
    assert other._backend.sc is ex._backend.sc
    jvms = [p for p in psutil.Process().children(recursive=True)
            if "SparkSubmit" in " ".join(_cmdline(p))]
    assert len(jvms) == 1


def _cmdline(p):
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def test_an_existing_session_passed_with_spark_is_used_and_left_running(ex):
    from pyspark.sql import SparkSession

    session = SparkSession.builder.getOrCreate()  # the running one: no new JVM
    executor = fedexec.Executor(backend="spark", spark=session, num_cpus=1)
    try:
        assert executor._backend.sc is session.sparkContext
        assert executor.get(executor.submit(square, 6), timeout=T) == 36
    finally:
        executor.shutdown()
    assert session.sparkContext.parallelize(range(4), 2).sum() == 6


def test_shutdown_stops_the_executor_threads_and_spark_jobs(make_executor):
    executor = make_executor(num_cpus=2)
    assert executor.get([executor.submit(square, i) for i in range(8)], timeout=T)[-1] == 49
    backend = executor._backend
    prefix = f"fedexec-spark-{backend.uid}"
    assert any(t.name.startswith(prefix) for t in threading.enumerate())
    executor.shutdown(wait=True)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(prefix)]
    active = set(backend.sc.statusTracker().getActiveJobsIds())
    assert not active & set(_spark_jobs(backend.sc, backend.stats()["job_groups"]))


# --------------------------------------------------------------------------- other masters
def test_address_local_n_starts_that_master_once_and_leaves_nothing_behind(run_script):
    result = run_script("""
        import json, logging, threading, time, psutil, fedexec
        from fedexec.backends.spark import _dispatcher, stop_session

        warnings = []
        handler = logging.Handler()
        handler.emit = lambda record: warnings.append(record.getMessage())
        logging.getLogger("fedexec.backends.spark").addHandler(handler)
        _dispatcher.STARVED_AFTER_S = 1.0

        def chain(n):
            if n == 0:
                return 0
            return 1 + fedexec.get(fedexec.remote(chain).remote(n - 1), timeout=60)

        def jvms():
            out = []
            for p in psutil.Process().children(recursive=True):
                try:
                    if "SparkSubmit" in " ".join(p.cmdline()):
                        out.append(p.pid)
                except psutil.Error:
                    pass
            return out

        ex = fedexec.Executor(backend="spark", address="local[2]")
        second = fedexec.Executor(backend="spark")
        try:
            fedexec.Executor(backend="spark", address="local[3]")
            mismatch = ""
        except ValueError as exc:
            mismatch = str(exc)
        # Nested gets hold their Spark slot: 2 slots cannot run a chain of 4 tasks.
        deep = ex.options(num_cpus=1).submit(chain, 3)
        deadline = time.monotonic() + 60
        while not warnings and time.monotonic() < deadline and not deep.done():
            time.sleep(0.1)
        ex.cancel(deep)
        out = {
            "starved": [w for w in warnings if "Spark task slot" in w],
            "cancelled": type(deep.exception(timeout=60)).__name__,
            "master": ex._backend.sc.master,
            "cpus": ex.cluster_resources()["CPU"],
            "values": ex.get([ex.submit(pow, i, 2) for i in range(6)], timeout=60),
            "second": second.get(second.submit(pow, 3, 3), timeout=60),
            "same_context": second._backend.sc is ex._backend.sc,
            "mismatch": mismatch,
            "jvms": jvms(),
        }
        second.shutdown()
        ex.shutdown()
        out["threads"] = [t.name for t in threading.enumerate() if t.name.startswith("fedexec")]
        out["stopped"] = stop_session()
        print(json.dumps(out))
    """)
    assert len(result["starved"]) == 1 and "free slots (2)" in result["starved"][0]
    assert result["cancelled"] == "TaskCancelledError"
    assert result["master"] == "local[2]"
    assert result["cpus"] == 2
    assert result["values"] == [0, 1, 4, 9, 16, 25]
    assert result["second"] == 27
    assert result["same_context"] is True
    assert "local[2]" in result["mismatch"]
    assert len(result["jvms"]) == 1
    assert result["threads"] == []
    assert result["stopped"] is True
    assert _wait_until(lambda: not any(psutil.pid_exists(p) for p in result["jvms"]))


def test_a_users_own_session_is_used_and_not_stopped(run_script):
    result = run_script("""
        import json, fedexec
        from pyspark.sql import SparkSession
        from fedexec.backends.spark import stop_session

        spark = (SparkSession.builder.master("local[2]")
                 .config("spark.ui.enabled", "false").getOrCreate())
        ex = fedexec.Executor(backend="spark", spark=spark)
        out = {"cpus": ex.cluster_resources()["CPU"],
               "value": ex.get(ex.submit(sum, [1, 2, 3]), timeout=60)}
        ex.shutdown()
        out["still_running"] = spark.sparkContext.parallelize(range(10), 2).sum()
        out["stopped_by_fedexec"] = stop_session()
        spark.stop()
        print(json.dumps(out))
    """)
    assert result == {"cpus": 2, "value": 6, "still_running": 45,
                      "stopped_by_fedexec": False}


@pytest.mark.slow
def test_executors_in_separate_processes_of_a_local_cluster(run_script):
    # local-cluster[2,1,1024]: a master and two executor JVMs of one core each,
    # as on a real cluster (tasks leave the driver's JVM; the lease connects back).
    result = run_script("""
        import json, os, fedexec

        def where():
            ctx = fedexec.get_runtime_context()
            return ctx.node_id, os.getppid()

        def nested(n):
            return fedexec.get(fedexec.remote(pow).remote(n, 2), timeout=60)

        ex = fedexec.Executor(backend="spark", address="local-cluster[2,1,1024]",
                              spark_conf={"spark.executor.memory": "512m"})
        nodes = ex.nodes()
        placed = ex.get([ex.submit(where) for _ in range(8)], timeout=120)
        out = {
            "cpus": ex.cluster_resources()["CPU"],
            "node_ids": [n["node_id"] for n in nodes],
            "task_nodes": sorted({p[0] for p in placed}),
            "nested": ex.get(ex.submit(nested, 7), timeout=120),
            "big": ex.get(ex.submit(len, ex.put(b"x" * (2 << 20))), timeout=120),
        }
        ex.shutdown()
        print(json.dumps(out))
    """, env={"PYSPARK_PYTHON": sys.executable})
    assert result["cpus"] == 2
    assert set(result["task_nodes"]) <= set(result["node_ids"])
    assert result["nested"] == 49
    assert result["big"] == 2 << 20
