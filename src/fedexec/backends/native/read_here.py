"""A thread that waits for one leased task's result reads that lease's link itself
(``read_until_done``), so the result does not cross from the poller's thread to
the waiting one (a wake-up on every round trip's critical path).

The link is taken from the poller for the wait (``Poller.detach``) and given back
after it (``Poller.attach``); whatever else arrives on it meanwhile is handled on
this thread, as the poller would (``TaskLeases``'s handlers take their lock and
queue what they send, see ``poller.io_thread``). A ref completed some other way (a
retry through the node manager, a cancel, the backend closing) wakes the wait
through a waiter installed on the ref, as ``concurrent.futures.wait`` installs
one. Not for a thread already reading links (a poller's, or inside a callback of
such a read).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Any

from .channel import Channel
from .poller import Poller, io_thread

__all__ = ["read_until_done"]


class _Kit:
    """One thread's epoll set and waker (kept for its next waits; closed with it)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.epoll.register(self.wake_r.fileno(), select.EPOLLIN)

    def __del__(self) -> None:
        for closable in (self.epoll, self.wake_r, self.wake_w):
            with contextlib.suppress(Exception):
                closable.close()


class _Wake:
    """Installed in the ref's ``_waiters`` (the interface ``concurrent.futures``
    calls on completion): wakes the reading thread when another thread completes
    the ref (its own completions need no wake-up)."""

    __slots__ = ("_ident", "_sock")

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._ident = threading.get_ident()

    def _poke(self, future: Any) -> None:
        if threading.get_ident() != self._ident:
            with contextlib.suppress(OSError):
                self._sock.send(b"\0")

    add_result = add_exception = add_cancelled = _poke


_local = threading.local()


def read_until_done(poller: Poller, channel: Channel, ref: Any,
                    timeout: float | None) -> None:
    """Read ``channel`` (a lease's link, polled by ``poller``) on this thread until
    ``ref`` is done or ``timeout`` passed; returns at once where it may not (then
    the caller waits as usual)."""
    if io_thread() or channel.closed or ref.done():
        return
    lent = poller.detach(channel.sock)
    if lent is None:
        return
    kit = getattr(_local, "kit", None)
    if kit is None:
        kit = _local.kit = _Kit()
    epoll, wake_fd = kit.epoll, kit.wake_r.fileno()
    waiter = _Wake(kit.wake_w)
    with ref._condition:
        ref._waiters.append(waiter)
    deadline = None if timeout is None else time.monotonic() + timeout
    epoll.register(lent.fd, select.EPOLLIN)
    try:
        while not ref.done():
            left = -1.0
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
            for fd, _ in epoll.poll(left):
                if fd == wake_fd:
                    with contextlib.suppress(OSError):
                        kit.wake_r.recv(4096)
                elif not lent.read():  # the link is over (its socket closed, and so
                    return             # gone from our epoll set)
    finally:
        if lent.open:
            with contextlib.suppress(OSError, ValueError):
                epoll.unregister(lent.fd)
            poller.attach(lent)
        with ref._condition, contextlib.suppress(ValueError):
            ref._waiters.remove(waiter)
