"""Caller leases (leases.py, lease_desk.py): a driver's eligible tasks go straight to
a worker the node lent it, and everything the hub path gave still holds: order on
one worker, results that serve other tasks and processes (pending or ready, small
or through the store), retries when a leased worker is SIGKILLed, cancelling
(queued here, queued there, running, forced, ``cancel_futures``), a worker blocked
in ``get`` lending its CPU, leases recalled when other work waits and returned when
idle, two drivers at once, and the switch that turns it all off."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fedexec
from _backend_support import poll_until
from fedexec.backends.native.protocol import Call, Op
from fedexec.exceptions import GetTimeoutError, TaskCancelledError, WorkerCrashedError
from fedexec.testing import Cluster

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def leases_on(monkeypatch):
    """Leases are on by default; these tests turn them on whatever the environment (the
    node and its workers, started after this, inherit it)."""
    monkeypatch.setenv("FEDEXEC_TASK_LEASES", "1")

T = 60


def ident(x: int) -> int:
    return x


def pid_after(x: int, seconds: float) -> tuple[int, int]:
    time.sleep(seconds)
    return x, os.getpid()


def later(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def append(path: str, x: int) -> int:
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x


def blob(size: int) -> bytes:
    return b"x" * size


def plus_one(x: int) -> int:
    return x + 1


def first_plus_one(refs: list) -> int:
    return fedexec.get(refs[0]) + 1


def boom() -> int:
    raise KeyError("boom")


def parent() -> int:
    return fedexec.get(fedexec.remote(plus_one).remote(1), timeout=T)


def wait_for_sibling(refs: list) -> int:
    return fedexec.get(refs[0], timeout=T) + 1


def leased(ex: fedexec.Executor) -> int:
    """How many tasks this driver sent straight to leased workers so far."""
    return ex._backend._leases.sent


def warm(ex: fedexec.Executor) -> None:
    """Submit until a task went to a leased worker (the node's workers may still be
    starting: leases are denied meanwhile)."""
    assert poll_until(lambda: ex.get(ex.submit(ident, 1), timeout=T) and leased(ex) > 0,
                      timeout=T), "no lease was granted"


def node_workers(ex: fedexec.Executor) -> dict[str, list]:
    return ex._backend.stats()["workers"]


@pytest.fixture
def ex():
    with fedexec.Executor("native", num_cpus=2) as executor:
        yield executor


@pytest.fixture
def ex1():  # one CPU: one worker, so one lease at a time
    with fedexec.Executor("native", num_cpus=1) as executor:
        yield executor


def test_tasks_go_to_a_leased_worker_in_order(ex1, tmp_path):
    """On one worker, in order, however they went. Whether they pipeline onto our
    lease depends on timing: the node says "full" to our second request, and only a
    queue already long by then pipelines (a short one goes to the hub, which then
    recalls the lease; see leases.py, "Denials"). So up to three rounds, each in
    order, until one went mostly through the lease."""
    for round_ in range(3):
        warm(ex1)
        before = leased(ex1)
        path = str(tmp_path / f"order{round_}")
        refs = [ex1.submit(append, path, i) for i in range(2000)]
        assert ex1.get(refs, timeout=T) == list(range(2000))
        with open(path) as f:
            assert [int(x) for x in f] == list(range(2000))  # one worker: in order
        if leased(ex1) - before > 1000:
            return
    pytest.fail(f"three rounds of 2000 tasks, none mostly leased ({leased(ex1)} in all)")


def test_ten_thousand_tasks(ex):
    warm(ex)
    refs = [ex.submit(plus_one, i) for i in range(10_000)]
    assert sum(ex.get(refs, timeout=T)) == sum(range(1, 10_001))
    assert leased(ex) > 5000


def test_the_switch_sends_every_task_through_the_node(monkeypatch):
    monkeypatch.setenv("FEDEXEC_TASK_LEASES", "0")
    with fedexec.Executor("native", num_cpus=2) as ex:
        assert ex._backend._leases is None
        assert ex.get([ex.submit(plus_one, i) for i in range(100)], timeout=T) == \
            list(range(1, 101))


def test_leases_are_on_by_default(monkeypatch):
    monkeypatch.delenv("FEDEXEC_TASK_LEASES")
    with fedexec.Executor("native", num_cpus=2) as ex:
        warm(ex)


def test_a_sigkilled_leased_worker_loses_nothing(ex1):
    warm(ex1)
    first = ex1.submit(pid_after, -1, 0.0)
    _, pid = ex1.get(first, timeout=T)
    refs = [ex1.submit(pid_after, i, 0.05) for i in range(40)]
    assert poll_until(lambda: refs[2].done(), timeout=T)
    os.kill(pid, signal.SIGKILL)
    results = ex1.get(refs, timeout=T)
    assert [x for x, _ in results] == list(range(40))
    assert {p for _, p in results[5:]} - {pid}  # the rest ran on another worker


def test_a_leased_task_with_no_retry_left_fails_as_the_hubs_would(ex1):
    """(The caller returns a lease whose link closed as broken: the node kills that
    worker and never gives it work again. Returned as idle, the task behind, sent
    to the hub meanwhile, could go to it before the node saw it die, and fail as
    the task it ran.)"""
    warm(ex1)
    ref = ex1.options(max_retries=0).submit(nap, 30)
    behind = ex1.options(max_retries=0).submit(ident, 7)
    assert poll_until(lambda: any(s == "LEASED" for _, s in node_workers(ex1).values()))
    pid = next(p for p, s in node_workers(ex1).values() if s == "LEASED")
    time.sleep(0.3)  # (it started)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashedError):
        ex1.get(ref, timeout=T)
    assert ex1.get(behind, timeout=T) == 7  # not started there: resubmitted untouched


def wait_for_file(path: str) -> int:
    deadline = time.monotonic() + T
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def test_a_running_leased_task_is_listed_and_counted_by_the_node(ex1, tmp_path):
    warm(ex1)
    sent = leased(ex1)
    stop = str(tmp_path / "stop")
    ref = ex1.options(name="leased-sleeper").submit(wait_for_file, stop)

    def listed():
        return [r for r in ex1._backend._request(Call.LIST, "tasks")
                if r["name"] == "leased-sleeper"]

    assert poll_until(listed, timeout=T), ex1._backend._request(Call.LIST, "tasks")
    assert ex1._backend.stats()["leased"] == 1
    assert leased(ex1) == sent + 1  # it went straight to a leased worker
    rows = listed()
    assert len(rows) == 1 and rows[0]["state"] == "ASSIGNED"  # (as a hub task running)
    assert rows[0]["task_id"] == ref._id[:-2]
    open(stop, "w").close()
    pid = ex1.get(ref, timeout=T)
    assert rows[0]["worker_pid"] == pid
    assert poll_until(lambda: ex1._backend.stats()["leased"] == 0, timeout=T)  # it ended
    assert not [r for r in ex1._backend._request(Call.LIST, "tasks")
                if r["name"] == "leased-sleeper" and r.get("leased")]


def test_cancelling_leased_tasks(ex1):
    warm(ex1)
    running = ex1.submit(nap, 30)
    queued = [ex1.submit(ident, i) for i in range(5)]
    time.sleep(0.3)
    assert queued[0].cancel()  # queued on the worker, or here: withdrawn
    assert queued[0].cancelled()
    assert not running.cancel()  # it runs: Future.cancel cannot stop it
    ex1.cancel(running)  # SIGINT on the worker
    with pytest.raises(TaskCancelledError):
        ex1.get(running, timeout=T)
    assert ex1.get(queued[1:], timeout=T) == [1, 2, 3, 4]
    again = ex1.submit(nap, 30)
    time.sleep(0.3)
    ex1.cancel(again, force=True)  # its worker is killed
    with pytest.raises(TaskCancelledError):
        ex1.get(again, timeout=T)
    assert ex1.get(ex1.submit(ident, 9), timeout=T) == 9


def test_a_leased_worker_idle_between_tasks_keeps_serving_its_callers(ex1):
    """An idle leased worker reads its callers' links on its main thread (worker.py
    ``_read_links``): a link closed meanwhile (the lease went back, idle) is dropped
    there, a new lease's link is read, and a task that then runs still gets its
    cancel (its link is the poller's again while it runs)."""
    warm(ex1)
    pid = ex1.get(ex1.submit(nap, 0), timeout=T)
    for _ in range(3):
        sent = leased(ex1)
        assert ex1.get(ex1.submit(nap, 0), timeout=T) == pid
        time.sleep(0.4)  # idle past the grace: returned, its link closed while idle
        assert ex1.get([ex1.submit(ident, i) for i in range(20)], timeout=T) == list(range(20))
        assert leased(ex1) > sent
        running = ex1.submit(nap, 30)
        time.sleep(0.3)
        ex1.cancel(running)
        with pytest.raises(TaskCancelledError):
            ex1.get(running, timeout=T)
    assert ex1.get(ex1.submit(nap, 0), timeout=T) == pid  # the same worker all along


def test_a_thread_waiting_for_a_leased_result_reads_its_link_and_gives_it_back(ex1):
    """``result()`` on one leased ref reads its lease's link on the waiting thread
    (read_here.py): a timeout gives the link back to the poller (another thread's
    wait then completes through it), a cancel sent from another thread ends the
    wait, and a worker SIGKILLed during the wait loses nothing (the retry's result
    comes through the node manager and wakes the waiter)."""
    warm(ex1)
    slow = ex1.submit(later, 7, 0.6)
    with pytest.raises(GetTimeoutError):
        slow.result(timeout=0.1)
    box: list = []
    waiter = threading.Thread(target=lambda: box.append(slow.result(timeout=T)))
    waiter.start()
    waiter.join(T)
    assert box == [7]

    running = ex1.submit(nap, 30)
    time.sleep(0.3)
    threading.Timer(0.3, ex1.cancel, (running,)).start()
    with pytest.raises(TaskCancelledError):
        running.result(timeout=T)

    doomed = ex1.submit(pid_after, 5, 1.0)  # (max_retries: retried through the node)
    assert poll_until(lambda: any(s == "LEASED" for _, s in node_workers(ex1).values()))
    pid = next(p for p, s in node_workers(ex1).values() if s == "LEASED")
    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
    x, ran_on = doomed.result(timeout=T)
    assert x == 5 and ran_on != pid
    assert ex1.get(ex1.submit(ident, 3), timeout=T) == 3


def test_cancel_futures_cancels_every_leased_task_not_started():
    ex = fedexec.Executor("native", num_cpus=1)
    warm(ex)
    running = ex.submit(nap, 1.0)
    time.sleep(0.3)
    rest = [ex.submit(ident, i) for i in range(50)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(r.cancelled() for r in rest)
    assert isinstance(running.result(timeout=T), int)
    ex.shutdown(wait=True)  # (its threads end with it)


def test_a_pending_leased_result_serves_another_task(ex1):
    warm(ex1)
    slow = ex1.submit(later, 41, 0.5)
    dep = ex1.submit(first_plus_one, [slow])  # the ref escapes inside a list: PROMISE
    top = ex1.submit(plus_one, ex1.submit(ident, 1))  # a top-level ref argument
    assert ex1.get(dep, timeout=T) == 42
    assert ex1.get(top, timeout=T) == 2
    boxed = ex1.put([ex1.submit(ident, 5)])  # inside a put value
    assert ex1.get(ex1.submit(first_plus_one, boxed), timeout=T) == 6


def test_a_ready_leased_result_serves_another_task_and_errors_keep_their_type(ex1):
    warm(ex1)
    ready = ex1.submit(ident, 10)
    assert ex1.get(ready, timeout=T) == 10
    assert ex1.get(ex1.submit(first_plus_one, [ready]), timeout=T) == 11
    bad = ex1.submit(boom)
    with pytest.raises(KeyError):
        ex1.get(bad, timeout=T)
    with pytest.raises(KeyError):
        ex1.get(ex1.submit(first_plus_one, [bad]), timeout=T)


def test_big_leased_results_go_through_the_store_and_are_freed(ex):
    warm(ex)
    refs = [ex.submit(blob, 300_000 + i) for i in range(5)]
    assert [len(b) for b in ex.get(refs, timeout=T)] == [300_000 + i for i in range(5)]
    assert ex.get(ex.submit(first_plus_one, [ex.submit(len, refs[0])]), timeout=T) == 300_001
    del refs
    assert poll_until(lambda: ex._backend.stats()["store"]["num_objects"] == 0, timeout=30)


def pid_then_plus_one(path: str, x: int, seconds: float) -> int:
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return x + 1


def chain(ex: fedexec.Executor, first: fedexec.ObjectRef, links: int) -> fedexec.ObjectRef:
    ref = first
    for _ in range(links):
        ref = ex.submit(plus_one, ref)
    return ref


def test_a_chain_runs_link_after_link_on_one_leased_worker(ex):
    """Each link takes the ref of the one before: it goes behind it to the worker
    that makes it, which has its result (chained.py); the node never sees one.
    Up to three rounds: a round whose first link found no lease goes through the
    hub (see leases.py, "Chains")."""
    leases = ex._backend._leases
    for _ in range(3):
        warm(ex)
        before = leased(ex)
        last = chain(ex, ex.submit(ident, 0), 499)
        assert ex.get(last, timeout=T) == 499
        if leased(ex) - before == 500:
            break
    else:
        pytest.fail("no round of 500 links went all to leased workers")
    assert ex._backend.stats()["objects"] == 0  # (ours alone: the node knew none)
    del last
    assert poll_until(lambda: not leases._local and not leases._items, timeout=30)


def test_a_chain_submitted_before_a_lease_came_waits_for_it_and_goes_there(ex):
    """No idle lease (the last one went back): the first link waits here for one,
    the links behind it wait behind it, and all go to that worker."""
    leases = ex._backend._leases
    for _ in range(3):
        warm(ex)
        assert poll_until(lambda: not any(s.leases for s in leases._shapes.values()),
                          timeout=T)  # idle: returned
        before = leased(ex)
        last = chain(ex, ex.submit(ident, 0), 199)
        assert ex.get(last, timeout=T) == 199
        if leased(ex) - before == 200:
            return
    pytest.fail("no round of 200 links went all to one leased worker")


def nested_plus_one(x: int) -> int:
    time.sleep(0.2)  # (the links behind it are on this worker by now)
    return fedexec.get(fedexec.remote(plus_one).remote(x), timeout=T)


def test_a_chain_link_blocked_in_get_hands_the_links_behind_it_back(ex1):
    """One CPU: a link blocks in a nested get, its worker lends its CPU and hands
    back the links queued behind it; they go to the hub, after the blocked link's
    result is promised, and the chain ends right."""
    warm(ex1)
    before = leased(ex1)
    last = chain(ex1, ex1.submit(nested_plus_one, ex1.submit(ident, 0)), 20)
    assert leased(ex1) - before == 22
    assert ex1.get(last, timeout=T) == 21


def test_a_link_taking_a_result_that_came_carries_it(ex1):
    warm(ex1)
    ready = ex1.submit(ident, 10)
    assert ex1.get(ready, timeout=T) == 10
    before = leased(ex1)
    assert ex1.get(ex1.submit(plus_one, ready), timeout=T) == 11
    assert leased(ex1) == before + 1 and ex1._backend.stats()["objects"] == 0


def test_a_chain_link_that_raises_fails_the_links_behind_it_unrun(ex1, tmp_path):
    warm(ex1)
    path = str(tmp_path / "ran")
    before = leased(ex1)
    bad = ex1.submit(boom)
    after = [ex1.submit(append, path, bad)]
    after.append(ex1.submit(plus_one, after[0]))
    assert leased(ex1) - before == 3
    for ref in after:
        with pytest.raises(KeyError):
            ex1.get(ref, timeout=T)
    assert not os.path.exists(path)


def test_cancelling_a_chain_link_cancels_the_links_behind_it(ex1):
    warm(ex1)
    before = leased(ex1)
    slow = ex1.submit(later, 1, 1.0)
    middle = ex1.submit(plus_one, slow)
    last = ex1.submit(plus_one, middle)
    assert leased(ex1) - before == 3
    time.sleep(0.2)
    assert middle.cancel()
    assert middle.cancelled()
    with pytest.raises(TaskCancelledError):
        ex1.get(last, timeout=T)
    assert ex1.get(slow, timeout=T) == 1


def test_a_sigkill_mid_chain_loses_no_link(ex1, tmp_path):
    """The worker dies running a link: it is retried through the hub, and the links
    queued behind it go there too, taking what the ones before made (PUT first)."""
    warm(ex1)
    path = str(tmp_path / "pids")
    before = leased(ex1)
    first = chain(ex1, ex1.submit(ident, 0), 5)
    slow = ex1.submit(pid_then_plus_one, path, first, 1.0)
    last = chain(ex1, slow, 10)
    assert leased(ex1) - before == 17
    assert poll_until(lambda: os.path.exists(path) and open(path).read(), timeout=T)
    os.kill(int(open(path).read().split()[0]), signal.SIGKILL)
    assert ex1.get(last, timeout=T) == 16
    assert len(open(path).read().split()) == 2  # ran again


def made_here(x: int) -> list:
    return [fedexec.put(x), fedexec.remote(plus_one).remote(x)]


def test_refs_made_by_a_leased_task_and_returned_are_readable_and_freed(ex):
    """A leased result holding refs its task made (a put, a child task) comes from
    the node, after the messages that made them (a CI run read one from the link,
    asked the node for the child first: ObjectLostError). Dropped, all are freed."""
    warm(ex)
    before = leased(ex)
    for x in range(100):
        put, child = ex.get(ex.submit(made_here, x), timeout=T)
        assert ex.get([put, child], timeout=T) == [x, x + 1]
    assert leased(ex) - before > 50
    assert ex._backend.stats()["objects"] >= 2  # (the last put and child)
    del put, child
    assert poll_until(lambda: ex._backend.stats()["objects"] == 0, timeout=30)


def test_a_big_leased_result_passed_on_once_it_came_is_promised_to_the_node_first(ex):
    """Its worker told the node of it (LEASE_PUT) on another connection than ours,
    so our SUBMIT naming it may reach the node first (a CI run once failed the task:
    "freed or never existed"): a PROMISE goes before it, and the node waits for
    whichever of the two comes second."""
    warm(ex)
    sent: list[list] = []  # what went into the node channel's outbox, in order
    channel = ex._backend._channel

    def recording(method):
        def record(msg):
            sent.append(msg)
            return method(msg)
        return record

    for name in ("send", "send_later", "enqueue"):
        setattr(channel, name, recording(getattr(channel, name)))
    try:
        for size in range(300_000, 300_010):
            ref = ex.submit(blob, size)
            fedexec.wait([ref], timeout=T)
            rid = ref._id
            assert ex.get(ex.submit(len, ref), timeout=T) == size
            ops = [m[0] for m in sent if rid in (m[1] if m[0] == Op.PROMISE else
                                                    m[6] if m[0] == Op.SUBMIT else ())]
            assert ops == [Op.PROMISE, Op.SUBMIT], (size, ops)
            del ref
    finally:
        for name in ("send", "send_later", "enqueue"):
            delattr(channel, name)
    assert poll_until(lambda: ex._backend.stats()["store"]["num_objects"] == 0, timeout=30)


def blob_after(size: int, seconds: float) -> bytes:
    time.sleep(seconds)
    return b"x" * size


def test_a_big_pending_leased_result_passed_on_and_dropped_is_freed(ex):
    warm(ex)
    refs = [ex.submit(blob_after, 300_000 + i, 0.3) for i in range(4)]
    lens = [ex.submit(len, ref) for ref in refs]  # top-level ref arguments: PROMISE
    del refs  # dropped before their results come: the node must not hold them again
    assert ex.get(lens, timeout=T) == [300_000 + i for i in range(4)]
    del lens
    assert poll_until(lambda: ex._backend.stats()["store"]["num_objects"] == 0, timeout=30)


def test_a_leased_task_blocked_in_get_lends_its_cpu(ex1):
    warm(ex1)
    # One CPU: the task waits for a task only the node can run (its only worker is
    # blocked), so that one must get the CPU the blocked task lent.
    assert ex1.get(ex1.submit(wait_for_sibling, [ex1.submit(ident, 1)]), timeout=T) == 2

    refs = [ex1.submit(parent) for _ in range(3)]
    assert ex1.get(refs, timeout=T) == [2, 2, 2]


def test_a_long_blocked_get_names_the_leased_worker_its_task_runs_on(tmp_path, caplog):
    with fedexec.Executor("native", num_cpus=1, blocked_warning_s=0.5) as ex:
        warm(ex)
        sent = leased(ex)
        stop = str(tmp_path / "stop")
        running = ex.options(name="leased-sleeper").submit(wait_for_file, stop)
        assert leased(ex) == sent + 1
        with caplog.at_level("WARNING", logger="fedexec"):
            with pytest.raises(fedexec.GetTimeoutError):
                ex.get(running, timeout=2)
        open(stop, "w").close()
        pid = ex.get(running, timeout=T)
    assert f"task 'leased-sleeper' ({running._id[:-2]}): running on worker pid {pid} " \
        "(leased to its caller)" in caplog.text, caplog.text


@pytest.mark.skip(reason="needs a node that lends leases to two drivers: only the embedded "
                  "runtime lends them since 2026-12-07 (leases.py); re-enable when cluster "
                  "nodes lend them again (issue 17's note)")
def test_a_lease_is_returned_when_idle():
    with Cluster(head_num_cpus=1) as cluster, cluster.connect() as a, cluster.connect() as b:
        warm(a)
        assert a.get([a.submit(ident, i) for i in range(100)], timeout=T)
        assert poll_until(lambda: "LEASED" not in {s for _, s in node_workers(a).values()},
                          timeout=30)
        assert b.get(b.submit(ident, 1), timeout=T) == 1  # another caller runs


@pytest.mark.skip(reason="needs a node that lends leases to two drivers: only the embedded "
                  "runtime lends them since 2026-12-07 (leases.py); re-enable when cluster "
                  "nodes lend them again (issue 17's note)")
def test_a_lease_is_recalled_when_another_callers_work_waits():
    with Cluster(head_num_cpus=1) as cluster, cluster.connect() as a, cluster.connect() as b:
        stop = time.monotonic() + 60
        warm(a)
        stream = [a.submit(pid_after, 0, 0.01) for _ in range(20)]

        def keep_busy_until(ref) -> None:
            # a never stops submitting (a few tasks always wait: its lease never idles)
            while not ref.done() and time.monotonic() < stop:
                if sum(not r.done() for r in stream[-20:]) < 10:
                    stream.append(a.submit(pid_after, 0, 0.01))
                time.sleep(0.002)

        keep_busy_until(b.submit(ident, 5))  # another caller's task
        keep_busy_until(a.options(num_cpus=0.5).submit(ident, 6))  # another shape's
        assert time.monotonic() < stop, "the lease was never recalled"
        assert len(a.get(stream, timeout=T)) == len(stream)


_OTHER_DRIVER = textwrap.dedent("""
    import sys, fedexec
    def plus_one(x):
        return x + 1
    with fedexec.Executor(address=sys.argv[1], token=sys.argv[2]) as ex:  # (leases on:
        # FEDEXEC_TASK_LEASES=1 is inherited)
        refs = [ex.submit(plus_one, i) for i in range(2000)]
        assert ex.get(refs, timeout=120) == list(range(1, 2001))
        print("OK", ex._backend._leases.sent > 0)
""")


@pytest.mark.skip(reason="needs a node that lends leases to two drivers: only the embedded "
                  "runtime lends them since 2026-12-07 (leases.py); re-enable when cluster "
                  "nodes lend them again (issue 17's note)")
def test_two_drivers_at_once(tmp_path):
    script = tmp_path / "other.py"
    script.write_text(_OTHER_DRIVER)
    with Cluster(head_num_cpus=2) as cluster, cluster.connect() as ex:
        other = subprocess.Popen([sys.executable, str(script), cluster.address,
                                  cluster.token], stdout=subprocess.PIPE, text=True)
        try:
            refs = [ex.submit(plus_one, i) for i in range(2000)]
            assert ex.get(refs, timeout=T) == list(range(1, 2001))
            out, _ = other.communicate(timeout=120)
        finally:
            if other.poll() is None:
                other.kill()
                other.wait()
        assert other.returncode == 0 and out.startswith("OK")


def test_tasks_waiting_for_our_lease_are_demand_the_node_reports(ex1):
    """Pipelined onto our lease on a full node, or queued here, they are still
    demand: STATS counts them in ``queued_shapes`` (the autoscaler's input), and
    the count goes back to nothing once they ran."""
    warm(ex1)
    refs = [ex1.submit(later, i, 0.02) for i in range(60)]

    def queued() -> int:
        stats = ex1._backend.stats()
        return sum(n for d, n in stats["queued_shapes"] if d.get("CPU") == 1.0)

    assert poll_until(lambda: queued() >= 10, timeout=T), ex1._backend.stats()["queued_shapes"]
    assert ex1.get(refs, timeout=T) == list(range(60))
    assert poll_until(lambda: queued() == 0, timeout=T)


def node_after(seconds: float) -> str:
    time.sleep(seconds)
    return fedexec.get_runtime_context().node_id


def test_a_node_others_may_join_lends_no_leases():
    """Only the embedded runtime lends leases: a cluster node (listening on TCP)
    could gain nodes that must be able to take the tasks waiting behind a lease.
    A driver there does not ask, and the node refuses one that does."""
    with Cluster(head_num_cpus=1) as c:
        with fedexec.Executor(address=c.address) as ex:
            assert ex._backend._leases is None
            assert ex._backend._request(Call.LEASE, {"CPU": 1.0}) is None
            assert ex.get([ex.submit(plus_one, i) for i in range(20)], timeout=T) == \
                list(range(1, 21))


def test_leased_tasks_are_logged_and_counted_as_the_hubs_are():
    """Their workers say which ended (LEASE_ENDED, batched): the head's event log
    lists and counts them, ``fedexec_tasks_run`` counts them by outcome, and the
    run-time histogram times them."""
    def run_counts(ex) -> dict[str, float]:
        return {r["tags"]["outcome"]: r["value"] for r in ex._backend._request(Call.LIST, "metrics")
                if r["name"] == "fedexec_tasks_run"}

    def run_times(ex) -> tuple[int, float]:
        row = next(r for r in ex._backend._request(Call.LIST, "metrics")
                   if r["name"] == "fedexec_task_duration_seconds")
        return row["count"], row["sum"]

    with fedexec.Executor("native", num_cpus=1) as ex:
        warm(ex)
        before, sent = run_counts(ex), leased(ex)
        timed, _ = run_times(ex)
        assert ex.get(ex.submit(nap, 0.2), timeout=T)  # (leased: our lease is idle)
        for i in range(50):  # one at a time: each goes to our idle lease
            assert ex.get(ex.submit(plus_one, i), timeout=T) == i + 1
        with pytest.raises(KeyError):
            ex.get(ex.options(max_retries=0).submit(boom), timeout=T)
        assert leased(ex) - sent == 52

        def counted() -> dict[tuple[str, str], int]:
            rows = ex._backend._request(Call.LIST, "task_counts")
            return {(r["name"], r["state"]): r["count"] for r in rows}

        assert poll_until(lambda: counted().get(("plus_one", "FINISHED")) == 50, timeout=T), \
            counted()
        assert poll_until(lambda: counted().get(("boom", "FAILED")) == 1, timeout=T)
        after = run_counts(ex)
        assert after["FINISHED"] - before.get("FINISHED", 0) >= 51
        assert after["FAILED"] - before.get("FAILED", 0) == 1
        assert poll_until(lambda: run_times(ex)[0] - timed >= 52, timeout=T), run_times(ex)
        assert run_times(ex)[1] >= 0.2  # the nap's run time is in the sum
