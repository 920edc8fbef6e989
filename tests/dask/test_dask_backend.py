"""The dask backend beyond the conformance suite: joining clusters, how fedexec's
resources map onto Dask's, worker deaths, and what is left after shutdown."""

from __future__ import annotations

import logging
import os
import time
import uuid

import pytest

import fedexec
from _backend_support import (
    check_dependents_of_a_retried_task_get_its_result,
    check_missing_dependency_names_the_extra,
    die_on_first_call,
    square,
)
from fedexec import backends

distributed = pytest.importorskip("distributed")

T = 30


def my_restrictions():
    worker = distributed.get_worker()
    key = distributed.worker.thread_state.key
    return dict(worker.state.tasks[key].resource_restrictions or {})


def where_am_i():
    return fedexec.get_runtime_context().node_id


def kill_my_worker():
    os._exit(1)


def filled(byte, size):
    return bytes([byte]) * size


def array_filled(value, n):
    import numpy as np

    return np.full(n, value, dtype=np.float64)


def touch(path):
    with open(path, "w") as f:
        f.write("ran")


def first_and_length(value):
    return int(value[0]), len(value)


def buffer_of(arr):
    """Where the array's memory is, whether it is writable, and its first element."""
    return arr.__array_interface__["data"][0], arr.flags.writeable, float(arr[0])


class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n

    def crash(self):
        os._exit(1)

    def crash_once(self, directory):
        die_on_first_call(directory)
        return "sent again after the restart"


# --------------------------------------------------------------------------- registry
def test_missing_distributed_raises_backend_unavailable_naming_the_extra(monkeypatch):
    check_missing_dependency_names_the_extra(monkeypatch, "dask", "distributed")


def test_capabilities_are_declared():
    caps = backends.capabilities("dask")
    assert {"actors", "named_actors", "async_actors", "actor_restarts", "cancel_running",
            "worker_processes", "multi_node"} <= caps
    assert {"lineage_reconstruction", "spilling"} <= caps
    assert "placement_groups" not in caps and "gpus" not in caps and "zero_copy" not in caps


def test_unknown_backend_option_raises_value_error():
    with pytest.raises(ValueError, match="n_wrokers"):
        fedexec.Executor(backend="dask", n_wrokers=2)


# --------------------------------------------------------------------------- joining
def test_address_joins_a_running_scheduler_and_leaves_it_running(dask_cluster):
    address = dask_cluster.scheduler_address
    with fedexec.Executor(backend="dask", address=address) as ex:
        assert ex.get(ex.submit(square, 7), timeout=T) == 49
        assert ex.cluster_resources()["CPU"] == 4
        ref = ex.put([1, 2])
        assert ex.get(ex.submit(len, ref), timeout=T) == 2
    assert ref.result(timeout=0) == [1, 2]  # fetched before the client closed
    with distributed.Client(address, set_as_default=False) as client:  # still up
        assert client.submit(square, 3).result(timeout=T) == 9


def test_client_option_uses_the_client_as_is_and_does_not_close_it(dask_client):
    ex = fedexec.Executor(backend="dask", client=dask_client)
    assert ex.get(ex.submit(square, 5), timeout=T) == 25
    ex.shutdown()
    assert dask_client.status == "running"
    assert dask_client.submit(square, 4).result(timeout=T) == 16


def test_joined_cluster_rejects_arguments_that_size_a_cluster(dask_cluster):
    with pytest.raises(ValueError, match="num_cpus"):
        fedexec.Executor(backend="dask", address=dask_cluster.scheduler_address, num_cpus=2)
    with pytest.raises(ValueError):
        fedexec.Executor(backend="dask", address=dask_cluster.scheduler_address,
                         client=object())


def test_cluster_without_cpu_resources_counts_threads_as_cpus():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=3, processes=False,
                                  dashboard_address=None, silence_logs=logging.CRITICAL,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}
                                  ) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        ex = fedexec.Executor(backend="dask", client=client)
        try:
            assert ex.cluster_resources()["CPU"] == 3
            assert ex.get(ex.options(num_cpus=2).submit(my_restrictions), timeout=T) == {}
            with pytest.warns(UserWarning, match="waits until such a worker joins"):
                waiting = ex.options(resources={"tpu": 1}).submit(square, 2)
            assert ex.cancel(waiting) is True
        finally:
            ex.shutdown(cancel_futures=True)


def test_named_detached_actor_outlives_the_executor_that_made_it(dask_client):
    name = f"detached-{uuid.uuid4().hex[:8]}"
    first = fedexec.Executor(backend="dask", client=dask_client)
    first.options(name=name, lifetime="detached").actor(Counter)
    assert first.get(first.get_actor(name).incr.remote(), timeout=T) == 1
    first.shutdown()
    second = fedexec.Executor(backend="dask", client=dask_client)
    try:
        counter = second.get_actor(name)
        assert second.get(counter.incr.remote(), timeout=T) == 2
        second.kill(counter)
        with pytest.raises(ValueError):
            second.get_actor(name)
    finally:
        second.shutdown()


# --------------------------------------------------------------------------- resources
def test_executor_resources_are_the_workers_dask_resources():
    with fedexec.Executor(backend="dask", num_cpus=3, num_gpus=1,
                          resources={"slot": 2}) as ex:
        totals = ex._backend.client.run(lambda dask_worker: dask_worker.state.total_resources)
        (worker_resources,) = totals.values()
        assert worker_resources["CPU"] == 3
        assert worker_resources["GPU"] == 1
        assert worker_resources["slot"] == 2
        view = ex.options(num_cpus=2, num_gpus=1, resources={"slot": 0.5})
        assert ex.get(view.submit(my_restrictions), timeout=T) == {
            "CPU": 2, "GPU": 1, "slot": 0.5}
        assert ex.get(ex.options(num_cpus=0).submit(my_restrictions), timeout=T) == {}


def test_n_workers_splits_the_resources_and_each_worker_is_a_node():
    with fedexec.Executor(backend="dask", num_cpus=4, n_workers=2) as ex:
        nodes = ex.nodes()
        assert len(nodes) == 2
        assert [n["resources"]["CPU"] for n in nodes] == [2, 2]
        assert ex.cluster_resources()["CPU"] == 4
        with pytest.raises(ValueError, match="must fit one worker"):
            ex.options(num_cpus=3).submit(square, 1)
        for node in nodes:
            strategy = fedexec.NodeAffinity(node["node_id"])
            ref = ex.options(scheduling_strategy=strategy).submit(where_am_i)
            assert ex.get(ref, timeout=T) == node["node_id"]


# --------------------------------------------------------------------------- failures
def test_dependents_of_a_task_retried_after_a_worker_death_get_its_result(tmp_path):
    with fedexec.Executor(backend="dask", num_cpus=2) as ex:
        check_dependents_of_a_retried_task_get_its_result(ex, tmp_path)


def test_actor_is_rebuilt_when_its_worker_dies_if_it_may_restart():
    with fedexec.Executor(backend="dask", num_cpus=2) as ex:
        counter = ex.options(max_restarts=1).actor(Counter)
        assert ex.get([counter.incr.remote(), counter.incr.remote()], timeout=T) == [1, 2]
        with pytest.raises(fedexec.ActorDiedError):
            ex.get(counter.crash.remote(), timeout=T)
        assert ex.get(counter.incr.remote(), timeout=T) == 1  # a new instance
        with pytest.raises(fedexec.ActorDiedError):
            ex.get(counter.crash.remote(), timeout=T)
        with pytest.raises(fedexec.ActorDiedError):  # no restarts left
            ex.get(counter.incr.remote(), timeout=T)


def test_objects_lost_with_a_worker_are_rebuilt_or_stored_again(tmp_path):
    with fedexec.Executor(backend="dask", num_cpus=2) as ex:
        made = ex.submit(filled, 7, 3)
        put = ex.put([1, 2, 3])
        ex.wait([made], timeout=T)  # finished; its value lives only on the worker
        with pytest.raises(fedexec.WorkerCrashedError):
            ex.get(ex.options(max_retries=0).submit(kill_my_worker), timeout=T)
        assert ex.get(made, timeout=T) == b"\x07\x07\x07"  # re-run from its lineage
        assert ex.get(ex.submit(len, made), timeout=T) == 3
        assert ex.get(ex.submit(len, put), timeout=T) == 3  # put again from the driver


@pytest.mark.parametrize(("make", "size"), [(filled, 10_000_000), (array_filled, 1_250_000)],
                         ids=["bytes", "numpy"])
def test_objects_beyond_the_worker_memory_limit_are_spilled_to_disk(make, size):
    with fedexec.Executor(backend="dask", num_cpus=2,
                          cluster_kwargs={"memory_limit": "400MB"}) as ex:
        refs = [ex.submit(make, i, size) for i in range(30)]  # 300 MB
        ex.wait(refs, num_returns=len(refs), timeout=T)
        on_disk = ex._backend.client.run(lambda dask_worker: len(dask_worker.data.slow))
        assert sum(on_disk.values()) > 0
        assert ex.get([ex.submit(first_and_length, r) for r in refs], timeout=T) == [
            (i, size) for i in range(30)]
        assert first_and_length(ex.get(refs[0], timeout=T)) == (0, size)


def test_tasks_in_one_worker_share_a_large_arguments_memory_read_only():
    np = pytest.importorskip("numpy")
    with fedexec.Executor(backend="dask", num_cpus=2) as ex:  # one worker process
        arr = np.arange(2_000_000, dtype=np.float64)  # 16 MB
        ref = ex.put(arr)
        arr[0] = -1.0  # put took a snapshot
        seen = ex.get([ex.submit(buffer_of, ref) for _ in range(4)], timeout=T)
        assert {s[0] for s in seen} == {seen[0][0]}  # one buffer: no copy per task
        assert {s[1:] for s in seen} == {(False, 0.0)}
        made = ex.submit(array_filled, 3.0, 2_000_000)
        assert len({ex.get(ex.submit(buffer_of, made), timeout=T)[0] for _ in range(3)}) == 1
        got = ex.get(ref, timeout=T)
        assert not got.flags.writeable and got[0] == 0.0 and got[1:].tolist() == arr[1:].tolist()


def test_a_burst_of_submits_leaves_in_few_graphs_and_keeps_its_order(monkeypatch):
    from fedexec.backends.dask import _outbox

    sizes = []
    send = _outbox.Outbox._send
    monkeypatch.setattr(_outbox.Outbox, "_send",
                        lambda self, batch: (sizes.append(len(batch)), send(self, batch))[1])
    with fedexec.Executor(backend="dask", num_cpus=2) as ex:
        ref = ex.submit(square, 1)
        refs = [ref]
        for _ in range(200):  # each takes the previous one: order matters
            ref = ex.submit(square, ref)
            refs.append(ref)
        assert ex.get(refs[:4], timeout=T) == [1, 1, 1, 1]
        ex.wait(refs, num_returns=len(refs), timeout=T)
    assert sum(sizes) >= 201 and len(sizes) < 100, sizes


def test_a_task_cancelled_before_its_batch_left_is_never_sent(monkeypatch, tmp_path):
    from fedexec.backends.dask import _outbox

    monkeypatch.setattr(_outbox, "BURST_GAP", 1e9)  # every later submit waits...
    monkeypatch.setattr(_outbox, "BURST_WAIT", 1.0)  # ...a second before it leaves
    with fedexec.Executor(backend="dask", num_cpus=2) as ex:
        assert ex.get(ex.submit(square, 2), timeout=T) == 4  # the first leaves at once
        ref = ex.submit(touch, str(tmp_path / "ran"))
        assert ref.cancel() and ref.cancelled()
        assert ex.get(ex.submit(square, 3), timeout=T) == 9  # sent after the cancel
        assert not (tmp_path / "ran").exists()
        with pytest.raises(fedexec.TaskCancelledError):
            ex.get(ref, timeout=T)


def test_withdrawing_a_task_already_sent_keeps_its_completion_callback(monkeypatch):
    import operator
    import threading

    from fedexec.backends.dask import _outbox

    monkeypatch.setattr(_outbox, "BURST_GAP", 1e9)  # after the first, every item...
    monkeypatch.setattr(_outbox, "BURST_WAIT", 0.5)  # ...leaves half a second later
    with fedexec.Executor(backend="dask", num_cpus=2) as ex:
        outbox = ex._backend.outbox
        assert ex.get(ex.submit(square, 2), timeout=T) == 4
        future = outbox.submit(operator.mul, [3, 3], f"mul-{uuid.uuid4().hex}")
        assert future.result(timeout=T) == 9  # sent and done
        fired = threading.Event()
        outbox.watch(future, lambda f: fired.set())  # still waiting to be registered
        assert outbox.withdraw([[future.key]]) == set()  # too late to take the task back
        assert fired.wait(T)


def two_values_after_touching(path):
    with open(path, "w"):
        pass
    time.sleep(0.3)
    return "meta", "block"


@pytest.mark.timeout(120)
def test_a_cancel_between_a_task_and_its_return_picks_leaving_takes_none_of_them(
        monkeypatch, tmp_path):
    """A task with num_returns=2 is three Dask tasks (the call and one pick per
    value) added to the outbox one by one, so a flush can send the call while the
    picks wait for the next one. A cancel then, once the call runs, must take back
    none of them: withdrawing only the picks left the refs pending forever (and
    shutdown(wait=True) waiting for them)."""
    from fedexec.backends.dask import _outbox
    from fedexec.backends.dask import _worker as worker_side
    from fedexec.backends.dask._backend import DaskBackend

    monkeypatch.setattr(_outbox, "BURST_GAP", 1e9)  # after the first, every item...
    monkeypatch.setattr(_outbox, "BURST_WAIT", 1.0)  # ...waits a second in the outbox
    submit = _outbox.Outbox.submit

    def call_leaves_alone(self, fn, args, key, placement=None, **kw):
        future = submit(self, fn, args, key, placement, **kw)
        if fn is worker_side.run_task:
            assert self.deliver(T)  # the call leaves now; its picks, added next, wait
        return future

    monkeypatch.setattr(_outbox.Outbox, "submit", call_leaves_alone)
    on_event = DaskBackend._on_event  # its "start" event is late: the cancel asks the worker
    monkeypatch.setattr(DaskBackend, "_on_event",
                        lambda self, event: event[1].get("e") == "start" or on_event(self, event))
    started = tmp_path / "started"
    ex = fedexec.Executor(backend="dask", num_cpus=2)
    try:
        refs = ex.options(num_returns=2).submit(two_values_after_touching, str(started))
        deadline = time.monotonic() + T
        while not started.exists():
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.01)
        assert not refs[0].cancel()  # it runs: too late to cancel
        assert ex.get(list(refs), timeout=T) == ["meta", "block"]
    finally:
        ex.shutdown(wait=True)


def wait_for_file(path):
    while not os.path.exists(path):
        time.sleep(0.01)
    return "ran"


@pytest.mark.timeout(120)
def test_shutdown_cancel_futures_cancels_only_what_no_worker_took(monkeypatch, tmp_path):
    """Tasks still in the outbox at shutdown are delivered first; the worker takes
    what it has a free thread and CPU for (two), and only the rest is cancelled."""
    from fedexec.backends.dask import _outbox

    monkeypatch.setattr(_outbox, "BURST_GAP", 1e9)  # after the first, every item...
    monkeypatch.setattr(_outbox, "BURST_WAIT", 5.0)  # ...waits 5 s in the outbox
    gate = str(tmp_path / "open")
    ex = fedexec.Executor(backend="dask", num_cpus=2)
    try:
        assert ex.get(ex.submit(square, 2), timeout=T) == 4  # the first leaves at once
        refs = [ex.submit(wait_for_file, gate) for _ in range(6)]
        ex.shutdown(wait=False, cancel_futures=True)
        taken = [r for r in refs if not r.cancelled()]
        assert len(taken) == 2, [r._state for r in refs]
        open(gate, "w").close()
        assert [r.result(timeout=T) for r in taken] == ["ran", "ran"]
    finally:
        open(gate, "w").close()
        ex.shutdown(wait=True)


def results_kept_for(actor_id, dask_worker=None):
    from fedexec.backends.dask import _host

    host = _host._HOSTED.get(actor_id)
    return -1 if host is None else len(host.results)


def first_item(values):
    return fedexec.get(values[0])


class Slow:
    def wait_then(self, seconds, value):
        import time

        time.sleep(seconds)
        return value


def test_actor_call_results_come_straight_back_and_become_dask_keys_only_when_needed():
    import gc

    with fedexec.Executor(backend="dask", num_cpus=2) as ex:
        counter = ex.actor(Counter)
        slow = ex.actor(Slow)
        refs = [counter.incr.remote() for _ in range(20)]
        assert ex.get(refs, timeout=T) == list(range(1, 21))
        assert all(r._dask is None for r in refs)  # no Dask key: not via the scheduler
        client = ex._backend.client
        assert list(client.run(results_kept_for, counter.actor_id).values()) == [20]
        # as a task's argument, and nested in one (to another process): exported
        assert ex.get(ex.submit(square, refs[2]), timeout=T) == 9
        assert ex.get(ex.submit(first_item, [refs[3]]), timeout=T) == 4
        # still running when passed on: the export waits for it on the actor's worker
        pending = slow.wait_then.remote(1.0, 7)
        assert not pending.done()
        assert ex.get(ex.submit(square, pending), timeout=T) == 49
        del refs, pending
        gc.collect()
        deadline = time.monotonic() + T  # dropped refs: the worker drops the results
        while list(client.run(results_kept_for, counter.actor_id).values()) != [0]:
            assert time.monotonic() < deadline
            time.sleep(0.1)


class Sleeper:
    def nap(self, i):
        import time

        time.sleep(0.02)
        return i


def test_calls_in_flight_when_the_actors_worker_is_killed_are_sent_again():
    import signal

    with fedexec.Executor(backend="dask", num_cpus=2) as ex:
        sleeper = ex.options(max_restarts=1, max_task_retries=-1).actor(Sleeper)
        assert ex.get(sleeper.nap.remote(-1), timeout=T) == -1
        pids = ex._backend.client.run(os.getpid)
        refs = [sleeper.nap.remote(i) for i in range(100)]  # ~2 s of calls queued
        time.sleep(0.3)
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        assert ex.get(refs, timeout=2 * T) == list(range(100))  # none lost


def test_max_task_retries_sends_a_call_lost_with_its_worker_again(tmp_path):
    with fedexec.Executor(backend="dask", num_cpus=2) as ex:
        counter = ex.options(max_restarts=1, max_task_retries=1).actor(Counter)
        assert ex.get(counter.crash_once.remote(str(tmp_path)), timeout=T) == (
            "sent again after the restart")

