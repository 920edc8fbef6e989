"""The native runtime's ``Poller``: one thread reading many sockets, and lending one
to another thread for a while (``detach`` / ``Detached.read`` / ``attach``), as a
leased worker's idle main thread does (worker.py ``_read_links``)."""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

import pytest

from fedexec.backends.native.channel import Channel
from fedexec.backends.native.poller import Poller, WakeableEpoll
from fedexec.backends.native.protocol import pack_frame

pytestmark = pytest.mark.timeout(60)


class _Link:
    """A polled channel over a socketpair: what it got, and on which thread."""

    def __init__(self, poller: Poller):
        self.ours, self.peer = socket.socketpair()
        self.got: list[tuple[Any, str]] = []
        self.closed = threading.Event()
        self.cv = threading.Condition()
        self.channel = Channel(self.ours, self._on_frame, self.closed.set, "test", polled=True)
        poller.add(self.ours, self.channel.pump)

    def _on_frame(self, frame: list[Any]) -> None:
        with self.cv:
            self.got.extend((m, threading.current_thread().name) for m in frame)
            self.cv.notify_all()

    def send(self, *msgs: Any) -> None:
        self.peer.sendall(pack_frame(list(msgs)))

    def wait_for(self, n: int, timeout: float = 10.0) -> list[tuple[Any, str]]:
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.got) >= n, timeout), self.got
            return list(self.got)


@pytest.fixture
def polled() -> Any:
    """A poller and one polled channel over a socketpair (closed after)."""
    poller = Poller("test-poller")
    yield poller, _Link(poller)
    poller.close()


def _read_until(lent: Any, link: _Link, n: int) -> None:
    ep = select.epoll()
    ep.register(lent.fd, select.EPOLLIN)
    deadline = time.monotonic() + 10
    try:
        while len(link.got) < n and time.monotonic() < deadline:
            if ep.poll(0.5):
                assert lent.read()
    finally:
        ep.close()


def test_a_detached_socket_is_read_by_its_borrower_only_and_polled_again_once_attached(polled):
    poller, link = polled
    link.send(["a"])
    assert link.wait_for(1)[0] == (["a"], "test-poller")

    lent = poller.detach(link.ours)
    assert lent is not None
    assert poller.detach(link.ours) is None  # lent once
    link.send(["b"], ["c"])
    time.sleep(0.2)
    assert len(link.got) == 1  # the poller no longer reads it
    _read_until(lent, link, 3)
    assert [(m, t) for m, t in link.got[1:]] == [
        (["b"], threading.current_thread().name), (["c"], threading.current_thread().name)]

    link.send(["d"])  # waiting in the socket when it goes back: the poller reads it
    poller.attach(lent)
    assert link.wait_for(4)[3] == (["d"], "test-poller")
    link.send(["e"])
    assert link.wait_for(5)[4] == (["e"], "test-poller")


def test_a_lent_socket_whose_peer_closes_ends_on_its_borrower_and_is_closed(polled):
    poller, link = polled
    link.send(["a"])
    link.wait_for(1)
    lent = poller.detach(link.ours)
    assert lent is not None
    link.peer.close()
    ep = select.epoll()
    ep.register(lent.fd, select.EPOLLIN)
    assert ep.poll(5)
    assert lent.read() is False  # the connection is over
    ep.close()
    assert link.closed.is_set()
    assert link.ours.fileno() == -1  # closed by the poller's rules, once
    assert not lent.open
    poller.attach(lent)  # (a no-op: nothing to poll)
    other = _Link(poller)  # the poller goes on with the others
    other.send(["x"])
    assert other.wait_for(1)[0] == (["x"], "test-poller")


def test_a_polled_channel_read_when_nothing_is_there_does_not_block(polled):
    """A stale readiness event (another thread read the bytes since) must not
    block the poller's thread in ``recv``."""
    poller, link = polled
    lent = poller.detach(link.ours)
    assert lent is not None
    t0 = time.monotonic()
    assert lent.read() is True  # nothing there: returns at once, still open
    assert time.monotonic() - t0 < 1.0
    assert not link.closed.is_set()


def test_lending_races_the_poller_without_losing_or_reordering_a_message(polled):
    """Detach and attach in a tight loop while the peer sends: every message is read
    once, in order, by one thread or the other."""
    poller, link = polled
    n = 3000
    stop = threading.Event()

    def sender() -> None:
        for i in range(n):
            link.send([i])
            if i % 50 == 0:
                time.sleep(0.001)
        stop.set()

    thread = threading.Thread(target=sender)
    thread.start()
    ep = select.epoll()
    try:
        turn = 0
        while not stop.is_set() or len(link.got) < n:
            turn += 1
            if turn % 2:  # the poller's turn
                time.sleep(0.002)
                continue
            lent = poller.detach(link.ours)
            if lent is None:
                continue
            ep.register(lent.fd, select.EPOLLIN)
            if ep.poll(0.001):
                assert lent.read()
            ep.unregister(lent.fd)
            poller.attach(lent)
            if stop.is_set():
                link.wait_for(n)
        thread.join()
        got = link.wait_for(n)
        assert [m[0] for m, _ in got] == list(range(n))
        assert {t for _, t in got} == {"test-poller", threading.current_thread().name}
    finally:
        ep.close()


def test_a_frame_handler_that_raises_ends_the_connection_with_its_on_close(capfd, polled):
    """(Dropping the socket without ``on_close`` would leave whatever waits on that
    connection, a leased task's caller, waiting forever.)"""
    _, link = polled
    link.send(["fine"])
    link.wait_for(1)

    def broken(frame: list[Any]) -> None:
        raise RuntimeError("a bug")

    link.channel._on_frame = broken
    link.send(["boom"])
    assert link.closed.wait(10)
    link.peer.settimeout(10)
    assert link.peer.recv(1) == b""  # our end is closed
    assert "a bug" in capfd.readouterr().err


def test_a_wakeable_epoll_returns_for_a_wake_with_its_own_event_left_out():
    ready = WakeableEpoll()
    a, b = socket.socketpair()
    try:
        ready.epoll.register(a.fileno(), select.EPOLLIN)
        assert ready.poll(0) == []
        threading.Timer(0.05, ready.wake).start()
        t0 = time.monotonic()
        assert ready.poll(10) == []  # woken: nothing of ours is ready
        assert time.monotonic() - t0 < 5
        assert ready.poll(0) == []  # (the wake-up was drained)
        b.sendall(b"x")
        ready.wake()
        assert ready.poll(10) == [a.fileno()]
    finally:
        ready.close()
        a.close()
        b.close()
