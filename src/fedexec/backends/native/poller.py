"""``Poller``: one daemon thread that reads many sockets (epoll), so a process
holds one reader thread for all its direct links however many there are (see
direct.py), instead of one per connection.

Each socket comes with ``on_readable() -> bool``, called whenever the socket is
readable; it reads once, without blocking (``MSG_DONTWAIT``: the socket may stay
blocking for writers, and an event may be stale: another thread read it since),
and returns False when the connection is over: the socket is then dropped and
closed. Nothing else closes a polled socket (a ``Channel`` made with
``polled=True`` only shuts it down, which the poller sees as EOF), so a file
descriptor is never reused while an epoll set still holds it.

Lending. Another thread may take a socket over for a while (``detach``: the
poller no longer reads it, and a read it had started has ended when ``detach``
returns), read it itself (``Detached.read``), then hand it back (``attach``). A
worker's main thread does so for its leased tasks' links while it is idle: a
task then reaches it with no thread hand-off (see worker.py).
"""

from __future__ import annotations

import contextlib
import select
import socket
import sys
import threading
from collections.abc import Callable

__all__ = ["Detached", "Poller", "WakeableEpoll", "io_thread"]

_io = threading.local()


def io_thread() -> bool:
    """True on a poller's thread, or while a thread reads a socket it detached
    (inside its callbacks): it must not block writing to a peer, which may itself
    be blocked writing to us (the callbacks queue what they send, for a flusher)."""
    return getattr(_io, "on", False)


class WakeableEpoll:
    """An epoll set with a waker registered in it: ``wake()`` (any thread) makes a
    ``poll`` return; ``poll`` leaves the waker's event out (it drains it)."""

    __slots__ = ("_wake_r", "_wake_w", "epoll", "wake_fd")

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.wake_fd = self._wake_r.fileno()
        self.epoll.register(self.wake_fd, select.EPOLLIN)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def poll(self, timeout: float = -1.0) -> list[int]:
        """The ready file descriptors, the waker's left out (woken: maybe none)."""
        ready = []
        for fd, _ in self.epoll.poll(timeout):
            if fd == self.wake_fd:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            else:
                ready.append(fd)
        return ready

    def close(self) -> None:
        for name in ("epoll", "_wake_r", "_wake_w"):
            closable = getattr(self, name, None)  # (None: __init__ failed part way)
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()

    def __del__(self) -> None:  # (a thread's, ended with it: read_here.py)
        self.close()


class _Entry:
    __slots__ = ("fd", "lock", "on_readable", "polled", "sock")

    def __init__(self, sock: socket.socket, on_readable: Callable[[], bool]):
        self.sock = sock
        self.fd = sock.fileno()
        self.on_readable = on_readable
        self.lock = threading.Lock()  # held while it is read (by whichever thread)
        self.polled = True  # read by the poller's thread (False: detached)


class Detached:
    """A socket taken from a ``Poller`` by ``Poller.detach``: ``read()`` it when it
    is readable; it goes back with ``Poller.attach``."""

    __slots__ = ("_entry", "_poller", "fd", "open")

    def __init__(self, poller: Poller, entry: _Entry):
        self._poller = poller
        self._entry = entry
        self.fd = entry.fd
        self.open = True

    def read(self) -> bool:
        """Read once (its ``on_readable``); False once the connection is over (the
        socket is then closed: do not attach it)."""
        _io.on = True
        try:
            keep = self._entry.on_readable()
        except Exception as exc:  # a bug in a callback: drop that connection only
            self._poller._report(exc)
            keep = False
        finally:
            _io.on = False
        if not keep:
            self.open = False
            self._poller._drop(self._entry)
        return keep


class Poller:
    """See the module docstring. The thread starts with the first ``add``."""

    def __init__(self, name: str):
        self._name = name
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}  # fd -> its socket (polled or detached)
        self._set: WakeableEpoll | None = None
        self._epoll: select.epoll | None = None  # (the set's)
        self._closed = False

    def add(self, sock: socket.socket, on_readable: Callable[[], bool]) -> None:
        """Poll ``sock`` from now on (any thread); after ``close`` it is closed."""
        entry = _Entry(sock, on_readable)
        with self._lock:
            if self._closed:
                sock.close()
                return
            if self._epoll is None:
                self._start()
            assert self._epoll is not None
            self._entries[entry.fd] = entry
            try:
                self._epoll.register(entry.fd, select.EPOLLIN)
            except (ValueError, OSError):  # closed meanwhile
                del self._entries[entry.fd]
                sock.close()

    def detach(self, sock: socket.socket) -> Detached | None:
        """Stop reading ``sock`` here (any thread but the poller's): the caller
        reads it from now on (None: it is not polled here, or closed)."""
        entry = self._entries.get(sock.fileno())
        if entry is None or entry.sock is not sock:
            return None
        with entry.lock:  # (a read in progress on the poller's thread ends first)
            if not entry.polled or self._closed or self._epoll is None:
                return None
            try:
                self._epoll.unregister(entry.fd)
            except (ValueError, OSError):
                return None
            entry.polled = False
        return Detached(self, entry)

    def attach(self, detached: Detached) -> None:
        """Read a detached socket here again (unless its connection is over)."""
        entry = detached._entry
        if not detached.open:
            return
        with entry.lock:
            if self._closed or self._epoll is None:
                return
            entry.polled = True
            try:
                self._epoll.register(entry.fd, select.EPOLLIN)
            except (ValueError, OSError):  # (the poller closed meanwhile)
                entry.polled = False

    def close(self) -> None:
        """Stop polling: every socket still here is closed (without its callback)."""
        with self._lock:
            self._closed = True
        self._wake()

    def _start(self) -> None:
        self._set = WakeableEpoll()
        self._epoll = self._set.epoll
        threading.Thread(target=self._loop, args=(self._set,), daemon=True,
                         name=self._name).start()

    def _wake(self) -> None:
        if self._set is not None:
            self._set.wake()

    def _report(self, exc: BaseException) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"fedexec: {self._name} dropped a connection: {exc!r}\n")

    def _drop(self, entry: _Entry) -> None:
        """The connection is over: forget and close its socket (its lock held)."""
        if self._entries.get(entry.fd) is entry:
            del self._entries[entry.fd]
        if entry.polled and self._epoll is not None:
            with contextlib.suppress(ValueError, OSError):
                self._epoll.unregister(entry.fd)
        entry.polled = False
        entry.sock.close()

    def _loop(self, ready: WakeableEpoll) -> None:
        _io.on = True
        entries = self._entries
        while not self._closed:
            try:
                fds = ready.poll()
            except InterruptedError:
                continue
            for fd in fds:
                entry = entries.get(fd)
                if entry is None:
                    continue
                with entry.lock:
                    if not entry.polled:  # detached meanwhile
                        continue
                    try:
                        keep = entry.on_readable()
                    except Exception as exc:  # a bug in a callback: drop that one only
                        self._report(exc)
                        keep = False
                    if not keep:
                        self._drop(entry)
        with self._lock:
            for entry in list(entries.values()):
                with contextlib.suppress(OSError):
                    entry.sock.close()
            entries.clear()
            ready.close()
