"""``Channel``: the blocking, thread-safe connection of a driver or worker to its
node manager.

Sending: ``send(msg)`` writes at once when no other thread is writing, and
otherwise leaves ``msg`` for that thread, which sends everything queued in one
frame; ``send_later`` only queues (a submit loop batches this way) and the owner
flushes soon after.

Reading: a daemon thread reads frames and calls ``on_frame(messages)`` for each,
in order, and ``on_close()`` at EOF; or, made with ``polled=True``, a ``Poller``
calls ``pump()`` whenever the socket is readable (no thread of its own). (Reading in the waiting thread instead, to
save the reader-to-waiter hand-off, was measured slower here: kicking the reader
out of its ``select`` costs another wake-up on the critical path.)
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from ...exceptions import ProtocolError
from .protocol import FrameReader, pack_frame

__all__ = ["Channel"]

_BATCH = 512  # messages a deferred send lets pile up before writing


class Channel:
    """See the module docstring. ``on_frame(messages)`` is called for each frame
    received, in order, by whichever thread reads; ``on_close()`` once at EOF."""

    def __init__(self, sock: socket.socket, on_frame: Callable[[list[Any]], None],
                 on_close: Callable[[], None], name: str,
                 before_send: Callable[[list[Any]], None] | None = None,
                 polled: bool = False):
        self._sock = sock
        self._name = name
        self._polled = polled
        self._frames = FrameReader()
        self._ended = False  # on_close has run
        self._before_send = before_send
        self._on_frame = on_frame
        self._on_close = on_close
        self._lock = threading.Lock()  # the outbox
        self._outbox: list[Any] = []
        self._sending = False
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, name=name, daemon=True)

    def start(self) -> None:
        """Start the background reader."""
        self._reader.start()

    # ------------------------------------------------------------------ send
    def send(self, msg: Any) -> None:
        """Queue ``msg`` (after whatever ``before_send`` adds) and write if idle."""
        with self._lock:
            if self._before_send is not None:
                self._before_send(self._outbox)
            self._outbox.append(msg)
            if self._sending:
                return
            self._sending = True
        self._flush()

    def send_later(self, msg: Any) -> bool:
        """Queue ``msg`` without writing; it goes out with the next ``send``/``flush``,
        or at once past ``_BATCH`` messages. True if the outbox was empty (the caller
        arranges a flush soon)."""
        with self._lock:
            was_empty = not self._outbox
            if self._before_send is not None:
                self._before_send(self._outbox)
            self._outbox.append(msg)
            if len(self._outbox) < _BATCH or self._sending:
                return was_empty
            self._sending = True
        self._flush()
        return False

    def enqueue(self, msg: Any) -> None:
        """Queue ``msg``, never writing here (safe under a caller's lock: a full
        socket never blocks it); a ``flush`` writes it."""
        with self._lock:
            self._outbox.append(msg)

    def flush(self) -> None:
        """Write what is queued, and what ``before_send`` has pending."""
        with self._lock:
            if self._before_send is not None:
                self._before_send(self._outbox)
            if self._sending or not self._outbox:
                return
            self._sending = True
        self._flush()

    def _flush(self) -> None:
        while True:
            with self._lock:
                batch = self._outbox
                if not batch or self._closed:
                    self._sending = False
                    return
                if len(batch) > _BATCH:  # (``enqueue`` piles up: frames stay bounded)
                    batch, self._outbox = batch[:_BATCH], batch[_BATCH:]
                else:
                    self._outbox = []
            try:
                self._sock.sendall(pack_frame(batch))
            except OSError:
                with self._lock:
                    self._sending = False
                    self._closed = True
                return

    # ------------------------------------------------------------------ read
    def _read_loop(self) -> None:
        while self.pump():
            pass

    def pump(self) -> bool:
        """Read once (blocking until something arrives; polled: only what is there)
        and hand on the frames completed; False once the connection is over
        (``on_close`` has run). A ``Poller`` calls this when the socket is readable
        (``polled=True``)."""
        try:
            data = self._sock.recv(1 << 20, 0 if not self._polled else socket.MSG_DONTWAIT)
            if data:
                for frame in self._frames.feed(data):
                    self._on_frame(frame)
                return True
        except BlockingIOError:  # (polled: a stale event, another thread read it)
            return True
        except OSError:
            pass
        except ProtocolError as exc:  # an oversized frame: the connection is unusable
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"fedexec: {self._name} closed its connection: {exc}\n")
        except Exception as exc:  # a bug in a frame handler: what follows cannot be
            with contextlib.suppress(OSError, ValueError):  # trusted; ``on_close`` runs
                sys.stderr.write(f"fedexec: {self._name} closed its connection after "
                                 f"an error handling a message: {exc!r}\n")
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            was_closed, self._closed = self._ended, True
            self._ended = True
        if not was_closed:
            self._on_close()
        return False

    @property
    def sock(self) -> socket.socket:
        """The connection's socket (a polled one's owner lends it: ``Poller.detach``)."""
        return self._sock

    @property
    def closed(self) -> bool:
        """True once the connection is closed (either side)."""
        return self._closed

    def close(self) -> None:
        """Close the connection; the reader stops (a polled one's socket is closed
        by its poller, once it has seen the end)."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        if not self._polled:
            self._sock.close()
