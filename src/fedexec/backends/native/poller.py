"""``Poller``: one daemon thread that reads many sockets (a selector), so a process
holds one reader thread for all its direct links however many there are (see
direct.py), instead of one per connection.

Each socket comes with ``on_readable() -> bool``, called on the poller's thread
whenever the socket is readable; it reads (once, so the socket may stay blocking
for writers) and returns False when the connection is over: the poller then drops
the socket and closes it. Nothing else closes a polled socket (a ``Channel`` made
with ``polled=True`` only shuts it down, which the poller sees as EOF), so a file
descriptor is never reused while the selector still holds it.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys
import threading
from collections.abc import Callable

__all__ = ["Poller"]


class Poller:
    """See the module docstring. The thread starts with the first ``add``."""

    def __init__(self, name: str):
        self._name = name
        self._lock = threading.Lock()
        self._adding: list[tuple[socket.socket, Callable[[], bool]]] = []
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._closed = False

    def add(self, sock: socket.socket, on_readable: Callable[[], bool]) -> None:
        """Poll ``sock`` from now on (any thread); after ``close`` it is closed."""
        with self._lock:
            if self._closed:
                sock.close()
                return
            if self._selector is None:
                self._start()
            self._adding.append((sock, on_readable))
        self._wake()

    def close(self) -> None:
        """Stop polling: every socket still here is closed (without its callback)."""
        with self._lock:
            self._closed = True
        self._wake()

    def _start(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        threading.Thread(target=self._loop, args=(self._selector,), daemon=True,
                         name=self._name).start()

    def _wake(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self._wake_w.send(b"\0")  # type: ignore[union-attr]

    def _loop(self, selector: selectors.BaseSelector) -> None:
        while not self._closed:
            for key, _ in selector.select():
                if key.data is None:
                    self._take_new(selector)
                    continue
                try:
                    keep = key.data()
                except Exception as exc:  # a bug in a callback: drop that connection only
                    with contextlib.suppress(OSError, ValueError):
                        sys.stderr.write(f"fedexec: {self._name} dropped a connection: "
                                         f"{exc!r}\n")
                    keep = False
                if not keep:
                    selector.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()
        with self._lock:
            adding, self._adding = self._adding, []
        for sock, _ in adding:
            sock.close()
        self._wake_w.close()  # type: ignore[union-attr]

    def _take_new(self, selector: selectors.BaseSelector) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(4096)  # type: ignore[union-attr]
        with self._lock:
            adding, self._adding = self._adding, []
        for sock, on_readable in adding:
            try:
                selector.register(sock, selectors.EVENT_READ, on_readable)
            except (ValueError, OSError):  # closed meanwhile
                sock.close()
