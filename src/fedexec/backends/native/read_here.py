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
import threading
import time
from typing import Any

from .channel import Channel
from .poller import Poller, WakeableEpoll, io_thread

__all__ = ["read_until_done"]


class _Wake:
    """Installed in the ref's ``_waiters`` (the interface ``concurrent.futures``
    calls on completion): wakes the reading thread when another thread completes
    the ref (its own completions need no wake-up)."""

    __slots__ = ("_ident", "_kit")

    def __init__(self, kit: WakeableEpoll):
        self._kit = kit
        self._ident = threading.get_ident()

    def _poke(self, future: Any) -> None:
        if threading.get_ident() != self._ident:
            self._kit.wake()

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
    kit = getattr(_local, "kit", None)  # (this thread's, kept for its next waits)
    if kit is None:
        kit = _local.kit = WakeableEpoll()
    epoll = kit.epoll
    waiter = _Wake(kit)
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
            for _ in kit.poll(left):
                if not lent.read():  # the link is over (its socket closed, and so
                    return           # gone from our epoll set)
    finally:
        if lent.open:
            with contextlib.suppress(OSError, ValueError):
                epoll.unregister(lent.fd)
            poller.attach(lent)
        with ref._condition, contextlib.suppress(ValueError):
            ref._waiters.remove(waiter)
