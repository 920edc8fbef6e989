"""How a backend that lets its tasks finish ends (the spark and dask backends).

``shutdown`` marks the backend closed (no new tasks) and cancels what it was
asked to; then :meth:`Closer.close` waits for the running tasks (``drain``) and
stops what the backend owns (``teardown``)::

    shutdown #1, wait=True   ── drain ──▶ teardown                (in the caller)
    shutdown #1, wait=False  ── closer thread: drain ──▶ teardown (returns at once)
    shutdown #2, #3, ...     ── wait=True: join the closer thread, unless called on it
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Closer"]


class Closer:
    """The end of a backend's ``shutdown`` (see the module docstring)."""

    def __init__(self, drain: Callable[[], None], teardown: Callable[[], None],
                 thread_name: str):
        self._drain = drain
        self._teardown = teardown
        self._thread_name = thread_name
        self._thread: threading.Thread | None = None

    def close(self, first: bool, wait: bool) -> None:
        """Drain, then tear down; ``first``: this ``shutdown`` call is the one that
        closed the backend (a later one only waits for the first one's thread)."""
        if not first:
            thread = self._thread
            if wait and thread is not None and thread is not threading.current_thread():
                thread.join()
            return
        if wait:
            self._drain()
            self._teardown()
            return
        self._thread = threading.Thread(target=self._drain_then_teardown, daemon=True,
                                        name=self._thread_name)
        self._thread.start()

    def _drain_then_teardown(self) -> None:
        try:
            self._drain()
        finally:
            self._teardown()
