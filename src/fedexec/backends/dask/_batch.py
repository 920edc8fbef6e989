"""Items from any thread, written on the event loop in batches and in order."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Batcher"]


class Batcher:
    """``add(item)`` from any thread; ``write(items)`` runs on ``loop`` with what was
    added since the last write: one loop wake-up per burst, one write at a time,
    items in the order they were added. After ``stop()``, items are dropped."""

    def __init__(self, loop: Any, write: Callable[[list[Any]], Awaitable[None]]):
        self._loop = loop  # a tornado IOLoop (Dask's)
        self._write = write
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._scheduled = False
        self._stopped = False
        self._writing: asyncio.Lock | None = None  # loop only

    def add(self, item: Any) -> bool:
        """Queue ``item``; False if stopped."""
        with self._lock:
            if self._stopped:
                return False
            self._items.append(item)
            if self._scheduled:
                return True
            self._scheduled = True
        try:
            self._loop.add_callback(self._flush)
        except Exception:  # the loop is gone (its client or worker closed)
            self.stop()
            return False
        return True

    def stop(self) -> None:
        """Drop what is queued and take no more."""
        with self._lock:
            self._stopped = True
            self._items = []

    async def _flush(self) -> None:
        if self._writing is None:
            self._writing = asyncio.Lock()
        async with self._writing:
            with self._lock:
                items, self._items = self._items, []
                self._scheduled = False
            if items:
                await self._write(items)
