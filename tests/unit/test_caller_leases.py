"""The caller's lease bookkeeping (``leases.TaskLeases``) driven without processes:
a stand-in backend records what would go to the node manager, and the node's
answers (grants, denials, recalls) are played in by hand."""

from __future__ import annotations

import collections
import socket
import threading
import time
from typing import Any

import pytest

from fedexec.backends.native import leases as leases_mod
from fedexec.backends.native.leases import TaskLeases, _Lease
from fedexec.backends.native.protocol import Kind, Op
from fedexec.options import TaskOptions


class _NodeChannel:
    def __init__(self) -> None:
        self.sent: list[list[Any]] = []
        self.closed = False

    def enqueue(self, msg: list[Any]) -> None:
        self.sent.append(msg)

    send_later = send = enqueue


class _Outboxes:
    def mark(self, channel: Any) -> None:
        pass

    def flush(self) -> None:
        pass


class _Backend:
    """What TaskLeases uses of a NativeBackend."""

    def __init__(self) -> None:
        self._channel = _NodeChannel()
        self._wake_flusher = threading.Event()
        self._outboxes = _Outboxes()
        self._refs: dict[str, Any] = {}
        self._refcount_ops: collections.deque[Any] = collections.deque()
        self.asked: list[Any] = []
        self.objects: list[list[Any]] = []
        self._flush_now = False
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1

    def _request_later(self, call: Any, args: list[Any], answered: Any) -> None:
        self.asked.append((call, args, answered))

    def _send_soon(self, msg: list[Any]) -> None:
        self._channel.sent.append(msg)

    def _on_object(self, msg: list[Any]) -> None:
        self.objects.append(msg)


@pytest.fixture
def setup():
    backend = _Backend()
    leases = TaskLeases(backend)  # type: ignore[arg-type]
    socks: list[socket.socket] = []
    yield backend, leases, socks
    for s in socks:
        s.close()


def submit(leases: TaskLeases, n: int) -> str:
    task_id = f"t{n:027d}"
    assert leases.submit(task_id, [task_id + "00"], f"task{n}", {"CPU": 1.0},
                         TaskOptions(), ["payload"], plain=True)
    return task_id


def link(leases: TaskLeases, socks: list[socket.socket], worker_id: str) -> _Lease:
    shape = next(iter(leases._shapes.values()))
    lease = _Lease(worker_id, 1, shape)
    ours, theirs = socket.socketpair()
    socks += [ours, theirs]
    assert leases._linked(lease, ours) is not None
    return lease


def hub_submits(backend: _Backend) -> list[str]:
    return [m[1] for m in backend._channel.sent if m[0] == Op.SUBMIT]


def test_a_full_node_never_strands_tasks_behind_recalled_leases(setup):
    """Both leases recalled (work waits at the node), then more tasks and a "full"
    answer: no lease of ours may take them, so they go to the hub; they once
    stayed queued here for good (a leases-on CI run hung a data pipeline)."""
    backend, leases, socks = setup
    submit(leases, 1)
    link(leases, socks, "w1")
    submit(leases, 2)  # the first lease is busy: a second one is asked for
    link(leases, socks, "w2")
    leases.recalled("w1")
    leases.recalled("w2")
    shape = next(iter(leases._shapes.values()))
    shape.denied_until = 0.0  # (the recall's _DENIED_S is over)
    later = [submit(leases, n) for n in range(3, 7)]
    assert shape.asking and len(shape.queue) == 4
    _, _, answered = backend.asked[-1]
    answered(True, "full")
    assert hub_submits(backend) == later
    assert not shape.queue


def test_the_sweep_sends_stranded_tasks_to_the_hub(setup):
    """Whatever left tasks queued here with no lease that may take them and none
    asked for, the flusher's sweep hands them to the hub."""
    backend, leases, socks = setup
    submit(leases, 1)
    link(leases, socks, "w1")
    leases.recalled("w1")
    shape = next(iter(leases._shapes.values()))
    item = leases_mod._Item("t" + "9" * 27, ["t" + "9" * 27 + "00"], "stranded",
                            {"CPU": 1.0}, 0, ["payload"])
    item.shape = shape
    shape.queue.append(item)  # (as the old "full" answer left them)
    leases._items[item.task_id] = item
    assert hub_submits(backend) == []
    leases.sweep(time.monotonic())
    assert hub_submits(backend) == [item.task_id]
    assert not shape.queue


def test_a_lease_never_answered_stops_holding_tasks_back(setup):
    """A lease asked for whose answer (or worker handshake) never comes: after
    _ASK_TIMEOUT_S the sweep treats it as denied, and the tasks queued for it go to
    the hub (they once could wait for it forever)."""
    backend, leases, socks = setup
    first = submit(leases, 1)
    shape = next(iter(leases._shapes.values()))
    assert shape.asking and len(shape.queue) == 1
    leases.sweep(time.monotonic())
    assert hub_submits(backend) == []  # (not yet)
    leases.sweep(time.monotonic() + leases_mod._ASK_TIMEOUT_S + 1)
    assert not shape.asking
    assert hub_submits(backend) == [first]
    lease = link(leases, socks, "w1")  # the answer, late: the lease is kept, idle
    assert lease in shape.leases and not lease.sent


def test_a_task_for_an_idle_leased_worker_is_written_by_its_submitter(setup):
    """Not left for the flusher (a wake-up, then its batching pause): the worker is
    idle, so batching gains nothing."""
    backend, leases, socks = setup
    submit(leases, 1)
    lease = link(leases, socks, "w1")  # (linked on this thread: not an I/O thread)
    assert len(lease.sent) == 1 and backend.flushes == 1
    lease.sent.clear()  # (as if answered)
    backend._wake_flusher.clear()
    submit(leases, 2)
    assert len(lease.sent) == 1 and backend.flushes == 2
    assert not backend._wake_flusher.is_set()


def test_a_result_holding_refs_is_taken_from_the_node_not_the_link(setup):
    """A leased result that holds refs (a child task's, a put's) is completed from
    the node manager, after its LEASE_PUT: the refs' own messages (the worker's
    SUBMIT, PUT) are ahead of it there. Taken from the link, the driver asked the
    node for a child it had not heard of yet (a CI run's ObjectLostError)."""
    backend, leases, socks = setup
    tasks, lent = [], []
    for n in (1, 2, 3):  # one lease each (a busy one makes the next task ask anew)
        tasks.append(submit(leases, n))
        lent.append(link(leases, socks, f"w{n}"))
    plain, holding, escaped = tasks
    leases.escaping(escaped + "00")  # pickled into another task's args meanwhile
    assert backend._channel.sent[-1] == [Op.PROMISE, [escaped + "00"]]
    del backend._channel.sent[:]
    child = "c" * 28 + "00"
    for lease, task_id, contained in zip(lent, tasks, ([], [child], [child])):
        leases._on_frame(lease, [[Op.LEASE_DONE, task_id,
                                  [[task_id + "00", Kind.INLINE, b"x", [], contained]]]])
    assert [m[1] for m in backend.objects] == [plain + "00"]
    assert backend._channel.sent == [[Op.PROMISE, [holding + "00"]],
                                     [Op.SUBSCRIBE, [holding + "00"]],
                                     [Op.SUBSCRIBE, [escaped + "00"]]]
    # the node holds both for us now: dropping them is a DECREF
    assert not leases.released(holding + "00") and not leases.released(escaped + "00")
    assert leases.released(plain + "00")


def test_a_chain_link_handed_back_goes_to_the_hub_after_its_arguments(setup):
    """A link sent behind the task making its argument, handed back (its worker
    blocked, or no longer had that result): the NM learns of the argument first
    (PROMISE: not come yet; PUT: came), then gets the link with it as a dep."""
    backend, leases, socks = setup
    first = submit(leases, 1)
    lease = link(leases, socks, "w1")
    dep = first + "00"
    assert leases.submit("u" * 27, ["u" * 27 + "00"], "link", {"CPU": 1.0}, TaskOptions(),
                         ["payload"], plain=True, deps=[dep], dep_refs=("a ref",))
    assert list(lease.sent) == [first, "u" * 27]  # behind the task making its argument
    del backend._channel.sent[:]
    leases._on_frame(lease, [[Op.LEASE_HANDBACK, ["u" * 27]]])
    promise, submitted = backend._channel.sent[:2]  # (then a DECREF: no ref of it here)
    assert promise == [Op.PROMISE, [dep]]
    assert submitted[0] == Op.SUBMIT and submitted[1] == "u" * 27 and submitted[6] == [dep]
    del backend._channel.sent[:]
    leases._on_frame(lease, [[Op.LEASE_DONE, first, [[dep, Kind.INLINE, b"x", [], []]]]])
    assert backend._channel.sent == [[Op.PUT, dep, Kind.INLINE, b"x", [], []]]  # promised
    # A link whose argument came carries it; handed back, that is PUT before it.
    second = submit(leases, 2)
    assert list(lease.sent) == [second]
    dep = second + "00"
    leases._on_frame(lease, [[Op.LEASE_DONE, second, [[dep, Kind.INLINE, b"y", [], []]]]])
    assert leases.submit("v" * 27, ["v" * 27 + "00"], "link", {"CPU": 1.0}, TaskOptions(),
                         ["payload"], plain=True, deps=[dep], dep_refs=("a ref",))
    assert lease.sent["v" * 27].wire == [[dep, Kind.INLINE, b"y", [], []]]
    del backend._channel.sent[:]
    leases._on_frame(lease, [[Op.LEASE_HANDBACK, ["v" * 27]]])
    put, submitted = backend._channel.sent[:2]
    assert put == [Op.PUT, dep, Kind.INLINE, b"y", [], []] and submitted[6] == [dep]


def dependent(leases: TaskLeases, n: int, dep_task: str) -> str:
    task_id = f"u{n:027d}"
    assert leases.submit(task_id, [task_id + "00"], f"link{n}", {"CPU": 1.0}, TaskOptions(),
                         ["payload"], plain=True, deps=[dep_task + "00"], dep_refs=("ref",))
    return task_id


def test_a_chain_link_never_waits_behind_many_tasks_it_does_not_need(setup):
    _, leases, socks = setup
    first = submit(leases, 1)
    lease = link(leases, socks, "w1")
    second = dependent(leases, 2, dependent(leases, 1, first))  # each behind the last
    assert len(lease.sent) == 3
    with pytest.raises(AssertionError):
        dependent(leases, 3, first)  # behind two it does not need: the hub
    dependent(leases, 4, second)  # the last one sent: behind it
    assert list(lease.sent)[-1] == f"u{4:027d}"



def test_a_chain_queued_here_goes_out_in_order_behind_its_first_link(setup):
    """No lease yet: the links wait behind the first one (not in the shape's queue)
    and go with it, to its lease or, denied, to the hub, each after its argument."""
    backend, leases, socks = setup
    first = submit(leases, 1)  # (a lease is asked for)
    links = [first]
    for n in range(1, 4):
        links.append(dependent(leases, n, links[-1]))
    shape = next(iter(leases._shapes.values()))
    assert list(shape.queue) == [leases._items[first]]
    lease = link(leases, socks, "w1")
    assert list(lease.sent) == links
    assert [m[-1] for m in (x.exec_msg(1) for x in lease.sent.values())][1:] == \
        [[t + "00"] for t in links[:-1]]  # each names the result made before it there
    # denied instead: all to the hub, in order
    second = submit(leases, 2)
    more = [second, dependent(leases, 5, second), dependent(leases, 6, second)]
    _, _, answered = backend.asked[-1]
    answered(False, "no")
    assert hub_submits(backend) == more


def test_cancelling_a_queued_link_cancels_those_behind_it(setup):
    backend, leases, _ = setup
    first = submit(leases, 1)
    middle = dependent(leases, 1, first)
    last = dependent(leases, 2, middle)
    other = dependent(leases, 3, first)
    with pytest.raises(AssertionError):
        dependent(leases, 4, first)  # a third waiting for one: the hub spreads them
    assert leases.cancel(middle, False)
    cancelled = {m[1] for m in backend.objects if m[2] == Kind.FAILED}
    assert cancelled == {middle + "00", last + "00"}
    assert set(leases._items) == {first, other}
    assert leases.cancel_pending([])  # cancel_futures: the rest, each once
    assert [m[1] for m in backend.objects if m[2] == Kind.FAILED][2:] == \
        [first + "00", other + "00"]
