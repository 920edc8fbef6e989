"""The driver's end of the leases' connections: a listener and one reader thread.

::

    accept thread ── Listener.accept() (HMAC challenge on the executor's key) ──┐
                                                                                 ▼
    channel thread ── multiprocessing.connection.wait(all peers + a wake pipe)
                      └─ recv() one message ─▶ handler.on_message(peer, msg)
                         EOF / error        ─▶ handler.on_disconnect(peer)

Replies and pushes are sent from any thread through :meth:`Peer.send` (one lock
per peer). Handlers run on the channel thread and must not block on other
peers' messages.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from multiprocessing.connection import Client, Connection, Listener, wait
from typing import Any, Protocol

__all__ = ["Channel", "Handler", "Peer"]


class Peer:
    """One lease's connection; ``lease`` is set by the handler on ``Hello``."""

    __slots__ = ("_lock", "closed", "conn", "lease")

    def __init__(self, conn: Connection):
        self.conn = conn
        self.lease: Any = None
        self.closed = False
        self._lock = threading.Lock()

    def send(self, msg: Any) -> bool:
        """Send ``msg``; False if the connection is gone."""
        with self._lock:
            if self.closed:
                return False
            try:
                self.conn.send(msg)
            except (OSError, EOFError, ValueError):
                self.closed = True
                return False
        return True

    def close(self) -> None:
        """Hang up: both ends see EOF (the channel thread then closes the handle, so
        it never waits on a closed one)."""
        with self._lock:
            self.closed = True
        with contextlib.suppress(OSError, ValueError):
            sock = socket.fromfd(self.conn.fileno(), socket.AF_INET, socket.SOCK_STREAM)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def dispose(self) -> None:
        """Close the handle (channel thread only)."""
        with self._lock:
            self.closed = True
        with contextlib.suppress(OSError):
            self.conn.close()


class Handler(Protocol):
    """What the channel calls, on its thread."""

    def on_message(self, peer: Peer, msg: Any) -> None: ...

    def on_disconnect(self, peer: Peer) -> None: ...


class Channel:
    """Accepts leases' connections on ``address`` and reads their messages."""

    def __init__(self, host: str, authkey: bytes, handler: Handler, name: str):
        self._authkey = authkey
        self._handler = handler
        self._listener = Listener((host, 0), authkey=authkey)
        self.address: tuple[str, int] = self._listener.address
        self._lock = threading.Lock()
        self._peers: dict[int, tuple[Connection, Peer]] = {}
        self._new: list[Peer] = []
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"{name}-accept")
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"{name}-channel")
        self._accepter.start()
        self._reader.start()

    # ------------------------------------------------------------------ threads
    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except Exception:  # a peer failed the challenge, or the listener closed
                if self._closed:
                    return
                continue
            if self._closed:
                conn.close()
                return
            with self._lock:
                self._new.append(Peer(conn))
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _read_loop(self) -> None:
        try:
            while not self._closed:
                with self._lock:
                    for peer in self._new:
                        self._peers[id(peer.conn)] = (peer.conn, peer)
                    self._new.clear()
                    conns = [c for c, _ in self._peers.values()]
                ready = wait([self._wake_r, *conns])
                for obj in ready:
                    if not isinstance(obj, Connection):  # the wake pipe
                        os.read(self._wake_r, 4096)
                        continue
                    self._read_one(obj)
        finally:
            for _, peer in list(self._peers.values()):
                peer.dispose()
                self._handler.on_disconnect(peer)
            self._peers.clear()

    def _read_one(self, conn: Connection) -> None:
        _, peer = self._peers[id(conn)]
        try:
            msg = conn.recv()
        except Exception:  # EOF, a reset, or a message that does not unpickle
            del self._peers[id(conn)]
            peer.dispose()
            self._handler.on_disconnect(peer)
            return
        self._handler.on_message(peer, msg)

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Stop accepting, close every connection and join the threads."""
        if self._closed:
            return
        self._closed = True
        # A blocked accept() does not notice close(): wake it with a connection.
        with contextlib.suppress(Exception):
            Client(self.address, authkey=self._authkey).close()
        self._listener.close()
        self._wake()
        me = threading.current_thread()
        for t in (self._accepter, self._reader):
            if t is not me:
                t.join(10)
        with self._lock:
            for peer in self._new:
                peer.dispose()
            self._new.clear()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
