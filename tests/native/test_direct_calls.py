"""Direct actor calls (direct.py): once a caller knows where an actor's worker
listens, its calls go straight there and back, and everything the hub path gave
still holds: one caller's calls start in its order (also around calls whose ref
arguments are not ready, which go through the node manager), results serve
tasks, other processes and ``wait``, large results go through the store, a
SIGKILLed worker gives restarts + retries or ``ActorDiedError``, queued calls can
be cancelled, the node counts the calls, and the worker's socket takes only
token-checked callers."""

from __future__ import annotations

import glob
import os
import signal
import socket
import threading
import time

import pytest

import fedexec
from _backend_support import Recorder, poll_until
from fedexec.backends.native import state
from fedexec.backends.native.protocol import Call, Op, client_handshake, pack_frame
from fedexec.exceptions import ActorDiedError, AuthenticationError, TaskCancelledError
from fedexec.testing import Cluster

pytestmark = pytest.mark.timeout(180)

T = 60


class Worker:
    def __init__(self) -> None:
        self.n = 0

    def pid(self) -> int:
        return os.getpid()

    def bump(self) -> int:
        self.n += 1
        return self.n

    def nap(self, seconds: float) -> int:
        time.sleep(seconds)
        self.n += 1
        return self.n

    def blob(self, size: int) -> bytes:
        return b"x" * size

    def made_here(self, x: int) -> list:
        return [fedexec.put(x), square.remote(x)]


def later(value: int, seconds: float) -> int:
    time.sleep(seconds)
    return value


def zero_of(x: int) -> float:
    return 0.0 * x


@fedexec.remote
def square(x: int) -> int:
    return x * x


def read_back(refs: list) -> object:
    return fedexec.get(refs[0])


def _link(handle):
    return handle._backend._links._links.get(handle.actor_id)


def direct(handle) -> bool:
    """Whether this process now sends ``handle``'s calls straight to its worker."""
    link = _link(handle)
    return link is not None and link.channel is not None and not link.channel.closed \
        and link.hub_calls == 0


def until_direct(ex, handle, method: str = "bump") -> None:
    assert poll_until(lambda: ex.get(getattr(handle, method).remote(), timeout=T) is not None
                      and direct(handle), timeout=30), "calls never went direct"


@pytest.fixture
def ex():
    executor = fedexec.Executor("native", num_cpus=2)
    try:
        yield executor
    finally:
        executor.shutdown()


def test_calls_go_direct_and_keep_one_callers_order(ex):
    a = ex.actor(Recorder)
    # Calls made before the caller knows the worker (hub) and after (direct) interleave
    # in one stream: all in order.
    refs = [a.add.remote(i) for i in range(3000)]
    assert ex.get(refs[-1], timeout=T) == list(range(3000))
    assert poll_until(lambda: ex.get(a.add.remote(-1), timeout=T) and direct(a), timeout=30)


def test_a_call_with_a_ref_argument_not_ready_is_not_overtaken(ex):
    a = ex.actor(Recorder)
    until_direct(ex, a, "node")
    slow = ex.submit(later, 100, 1.0)
    refs = [a.add.remote(1), a.add.remote(2), a.add.remote(slow), a.add.remote(3),
            a.add.remote(4)]
    assert not direct(a)  # the hub call holds direct calls back until it ends
    assert ex.get(refs[-1], timeout=T) == [1, 2, 100, 3, 4]
    assert poll_until(lambda: ex.get(a.add.remote(5), timeout=T) and direct(a), timeout=30)
    seen = ex.get(a.add.remote(6), timeout=T)
    assert seen[:6] == [1, 2, 100, 3, 4, 5] and seen[-2:] == [5, 6]


def test_direct_results_serve_tasks_other_processes_and_wait(ex):
    a = ex.actor(Worker)
    until_direct(ex, a)
    small = a.bump.remote()
    big = a.blob.remote(300_000)  # over the inline limit: through the store
    done, _ = fedexec.wait([small, big], num_returns=2, timeout=T)
    assert len(done) == 2
    n = ex.get(small, timeout=T)
    assert ex.get(big, timeout=T) == b"x" * 300_000
    assert ex.get(ex.submit(lambda x: x + 1, small), timeout=T) == n + 1  # as a dep
    # A task in another process reads both from the node (the refs ride in a list).
    assert ex.get(ex.submit(read_back, [small]), timeout=T) == n
    assert ex.get(ex.submit(read_back, [big]), timeout=T) == b"x" * 300_000
    # A call with a direct call's result as its argument (through the hub) sees it.
    assert ex.get(a.nap.remote(ex.submit(zero_of, small)), timeout=T) == n + 1


def test_refs_made_by_the_actor_and_returned_are_readable_at_once(ex):
    """A result holding refs the actor made (a put, a task) reaches the caller from
    the node, after the messages that made them: straight from the worker, the
    caller asked the node for them first about one time in twenty
    (ObjectLostError)."""
    a = ex.actor(Worker)
    until_direct(ex, a)
    for x in range(150):
        put, task = ex.get(a.made_here.remote(x), timeout=T)
        assert ex.get([put, task], timeout=T) == [x, x * x]
    assert direct(a)


@pytest.mark.parametrize("retries", [0, -1])
def test_sigkill_of_the_worker_mid_call_restarts_and_retries_or_fails(ex, retries):
    a = ex.options(max_restarts=1, max_task_retries=retries).actor(Worker)
    until_direct(ex, a)
    pid = ex.get(a.pid.remote(), timeout=T)
    running = a.nap.remote(2.0)
    queued = [a.bump.remote() for _ in range(5)]
    time.sleep(0.5)  # the nap runs, the bumps wait behind it on the worker
    os.kill(pid, signal.SIGKILL)
    if retries:
        # Retried in order on the restarted actor (a fresh instance: counts from 1).
        assert ex.get([running, *queued], timeout=T) == [1, 2, 3, 4, 5, 6]
    else:
        for ref in [running, *queued]:
            with pytest.raises(ActorDiedError):
                ex.get(ref, timeout=T)
    # Restarted: later calls work, and go direct to the new worker again.
    assert ex.get(a.pid.remote(), timeout=T) != pid
    until_direct(ex, a)


@pytest.mark.parametrize("retries", [0, -1])
def test_a_thread_waiting_for_one_direct_call_reads_its_link_through_a_sigkill(ex, retries):
    """``result()`` on one direct call reads the actor's link on the waiting thread
    (read_here.py): a timeout gives the link back (a later wait on another thread
    completes), and a SIGKILL of the worker during the wait ends it with the
    restarted actor's retry, or ``ActorDiedError``, which come from the node."""
    a = ex.options(max_restarts=1, max_task_retries=retries).actor(Worker)
    until_direct(ex, a)
    pid = ex.get(a.pid.remote(), timeout=T)
    slow = a.nap.remote(0.5)
    with pytest.raises(fedexec.GetTimeoutError):
        slow.result(timeout=0.1)
    box: list = []
    waiter = threading.Thread(target=lambda: box.append(slow.result(timeout=T)))
    waiter.start()
    waiter.join(T)
    assert len(box) == 1
    running = a.nap.remote(2.0)
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
    if retries:
        assert running.result(timeout=T) == 1  # retried on the fresh instance
    else:
        with pytest.raises(ActorDiedError):
            running.result(timeout=T)
    assert ex.get(a.pid.remote(), timeout=T) != pid


def test_kill_fails_direct_calls_and_later_ones(ex):
    a = ex.actor(Worker)
    until_direct(ex, a)
    running = a.nap.remote(5.0)
    queued = a.bump.remote()
    time.sleep(0.3)
    fedexec.kill(a)
    for ref in (running, queued):
        with pytest.raises(ActorDiedError):
            ex.get(ref, timeout=T)
    with pytest.raises(ActorDiedError):
        ex.get(a.bump.remote(), timeout=T)


def test_a_direct_call_queued_on_the_worker_can_be_cancelled(ex):
    a = ex.actor(Worker)
    until_direct(ex, a)
    running = a.nap.remote(1.0)
    queued = a.bump.remote()
    time.sleep(0.3)
    fedexec.cancel(queued)
    with pytest.raises(TaskCancelledError):
        ex.get(queued, timeout=T)
    assert ex.get(running, timeout=T) >= 1
    assert ex.get(a.bump.remote(), timeout=T) == ex.get(running) + 1  # never ran


def test_async_and_threaded_actors_take_direct_calls():
    class Async:
        async def echo(self, x: int) -> int:
            return x

    class Threaded(Worker):
        pass

    ex = fedexec.Executor("native", num_cpus=2)
    try:
        b = ex.actor(Async)
        assert poll_until(lambda: ex.get(b.echo.remote(1), timeout=T) == 1 and direct(b))
        assert ex.get([b.echo.remote(i) for i in range(2000)], timeout=T) == list(range(2000))
        t = ex.options(max_concurrency=4).actor(Threaded)
        until_direct(ex, t)
        t0 = time.monotonic()
        assert len(ex.get([t.nap.remote(0.5) for _ in range(4)], timeout=T)) == 4
        assert time.monotonic() - t0 < 30  # (ran; the bound only proves no hang)
    finally:
        ex.shutdown()


def test_the_node_counts_direct_calls():
    with Cluster(head_num_cpus=2) as cluster, cluster.connect() as ex:
        a = ex.actor(Worker)
        until_direct(ex, a)
        ex.get([a.bump.remote() for _ in range(50)], timeout=T)

        def finished() -> int:
            rows = state.list_state("task_counts", cluster.address, cluster.token)
            return sum(r["count"] for r in rows
                       if r["name"] == "Worker.bump" and r["state"] == "FINISHED")

        assert poll_until(lambda: finished() >= 50, timeout=30), finished()


def test_the_workers_socket_takes_only_token_checked_callers(ex):
    a = ex.actor(Worker)
    until_direct(ex, a)
    backend = a._backend
    _, path = backend._request(Call.ACTOR_ADDRESS, a.actor_id)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    with pytest.raises(AuthenticationError):
        client_handshake(sock, b"not the token" * 3, role="caller")
    sock.close()
    # The right token, then an op a caller may not send: the worker drops us.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    client_handshake(sock, backend._token, role="caller")
    sock.sendall(pack_frame([[Op.SUBMIT, "x" * 28, [], "f", {}, 0, [], [], [], None]]))
    sock.settimeout(T)
    assert sock.recv(1024) == b""
    sock.close()
    assert ex.get(a.bump.remote(), timeout=T) >= 1  # the actor is fine


# ------------------------------------------------------------ resources held
def _threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(400)
def test_a_driver_calling_100_actors_holds_a_few_threads_not_one_per_actor(ex):
    first = ex.actor(Worker)
    until_direct(ex, first)
    before = threading.active_count()
    actors = [ex.options(num_cpus=0).actor(Worker) for _ in range(100)]
    # Every actor answers, and every one's calls end up going straight to it.
    assert ex.get([a.bump.remote() for a in actors], timeout=300) == [1] * 100
    assert poll_until(lambda: ex.get([a.bump.remote() for a in actors], timeout=T)
                      and all(direct(a) for a in actors), timeout=300, interval=0.2)
    assert len(set(ex.get([a.pid.remote() for a in actors], timeout=T))) == 100
    assert threading.active_count() - before <= 3, threading.enumerate()


def test_an_actors_worker_serves_many_callers_without_a_thread_each(ex):
    a = ex.actor(Worker)
    until_direct(ex, a)
    pid = ex.get(a.pid.remote(), timeout=T)
    backend = a._backend
    _, path = backend._request(Call.ACTOR_ADDRESS, a.actor_id)
    before = _threads_of(pid)
    socks = []
    try:
        for _ in range(40):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(T)
            sock.connect(path)
            client_handshake(sock, backend._token, role="caller")
            socks.append(sock)
        # Each raw caller's call is answered on its own connection.
        for i, sock in enumerate(socks):
            sock.sendall(pack_frame([[Op.DIRECT_CALL, f"{i:028x}", [f"{i:028x}01"],
                                      ["pid", 0, b"", [], 1], "Worker.pid"]]))
        for sock in socks:
            assert sock.recv(1 << 16)  # a DIRECT_REPLY frame
        assert _threads_of(pid) - before <= 1
    finally:
        for sock in socks:
            sock.close()
    assert ex.get(a.bump.remote(), timeout=T) >= 1


@pytest.mark.timeout(600)
def test_the_callers_link_table_and_fds_stay_bounded_over_200_actors(ex):
    links = ex.actor(Worker)._backend._links
    fds = None
    for i in range(200):
        a = ex.options(num_cpus=0).actor(Worker)
        until_direct(ex, a)
        fedexec.kill(a)
        with pytest.raises(ActorDiedError):
            ex.get(a.bump.remote(), timeout=T)
        if i == 9:
            fds = _open_fds()
    assert poll_until(lambda: len(links._links) <= 3, timeout=30), len(links._links)
    assert _open_fds() - fds <= 5


def _sockets_after_direct_calls(cluster: Cluster) -> str:
    """Start 3 actors, call them directly, shut the driver down: their session dir."""
    with cluster.connect() as ex:
        actors = [ex.options(num_cpus=0).actor(Worker) for _ in range(3)]
        for a in actors:
            until_direct(ex, a)
        _, path = actors[0]._backend._request(Call.ACTOR_ADDRESS, actors[0].actor_id)
        session = os.path.dirname(path)
    assert len(glob.glob(os.path.join(session, "w-*.sock"))) >= 3  # (+ task workers)
    return session


def test_no_call_socket_is_left_after_a_normal_shutdown():
    # The node manager stops on its own (SIGTERM: its clean shutdown, no owner
    # process to tidy up after it): no socket of its actors' workers is left.
    with Cluster(head_num_cpus=2) as cluster:
        session = _sockets_after_direct_calls(cluster)
        os.kill(cluster.head.pid, signal.SIGTERM)
        assert cluster.head.wait(timeout=30) is not None
        assert not glob.glob(os.path.join(session, "*.sock"))


def test_an_actors_worker_removes_its_socket_when_it_exits_cleanly():
    # Its node manager is gone (SIGKILL: it cannot clean up): the workers see their
    # connection close and exit, each removing its own socket.
    with Cluster(head_num_cpus=2) as cluster:
        session = _sockets_after_direct_calls(cluster)
        os.kill(cluster.head.pid, signal.SIGKILL)
        assert poll_until(lambda: not glob.glob(os.path.join(session, "w-*.sock"))), \
            os.listdir(session)


# ------------------------------------------------------------ edge paths
class HeldRegistrations:
    """Holds the caller's ACTOR_CALL registrations back (``with``), so that the
    worker's DIRECT_DONE reaches the node first; ``release`` sends them."""

    def __init__(self, backend) -> None:
        self.backend, self.held = backend, []
        self.send_soon = backend._send_soon

    def _hold(self, msg) -> None:
        if msg[0] == Op.ACTOR_CALL:
            self.held.append(msg)
        else:
            self.send_soon(msg)

    def __enter__(self) -> HeldRegistrations:
        self.backend._send_soon = self._hold
        return self

    def __exit__(self, *exc) -> None:
        self.backend._send_soon = self.send_soon

    def release(self) -> None:
        assert len(self.held) == 1 and self.held[0][-1]  # it went direct (names the worker)
        time.sleep(0.3)  # the worker's DIRECT_DONE is at the node first
        self.backend._send(self.held[0])


def test_a_direct_done_that_reaches_the_node_before_the_registration(ex):
    a = ex.actor(Worker)
    until_direct(ex, a)
    with HeldRegistrations(a._backend) as registrations:
        ref = a.bump.remote()
        n = ex.get(ref, timeout=T)  # answered straight back, the node not told yet
    registrations.release()
    # The node serves the result to another process and counts the call as done.
    assert ex.get(ex.submit(read_back, [ref]), timeout=T) == n
    assert ex.get(a.bump.remote(), timeout=T) == n + 1


def test_refs_in_a_direct_result_that_came_before_the_registration_stay(ex):
    """The node keeps what the early results hold until the call is registered:
    the worker's DECREF of its own put, right behind its DIRECT_DONE, freed it (a
    CI run's ObjectLostError)."""
    a = ex.actor(Worker)
    until_direct(ex, a)
    with HeldRegistrations(a._backend) as registrations:
        ref = a.made_here.remote(7)  # its result comes from the node: after the release
    registrations.release()
    put, task = ex.get(ref, timeout=T)
    assert ex.get([put, task], timeout=T) == [7, 49]


def test_sigkill_with_calls_in_flight_answers_each_once_in_order(ex):
    a = ex.options(max_restarts=1, max_task_retries=1).actor(Worker)
    until_direct(ex, a)
    pid = ex.get(a.pid.remote(), timeout=T)
    start = ex.get(a.nap.remote(0), timeout=T)
    refs = [a.nap.remote(0.002) for _ in range(1000)]
    assert poll_until(lambda: sum(r.done() for r in refs) >= 50, timeout=T, interval=0.001)
    os.kill(pid, signal.SIGKILL)
    got = ex.get(refs, timeout=T)
    # The first calls ran on the first instance (start + 1, ...), the rest once each,
    # in order, on the restarted one (1, 2, ...): no call lost, run twice or reordered.
    k = got.index(1) if 1 in got else len(got)
    assert k >= 50 and got[:k] == list(range(start + 1, start + k + 1)), got[:k + 3]
    assert got[k:] == list(range(1, len(got) - k + 1)), got[k:k + 5]
    assert ex.get(a.bump.remote(), timeout=T) == len(got) - k + 1
