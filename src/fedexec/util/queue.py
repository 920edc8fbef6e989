"""``Queue``: a FIFO queue held by an actor, usable from any task, actor or driver.

::

    caller (driver / task / actor)              queue actor (async, one event loop)
    q.put(x, timeout=t) ──put.remote((x,), t)──▶ await asyncio.Queue.put  (≤ t s)
                       ◀── True | False ────────  False: still full after t → Full
    q.get(timeout=t)    ──get.remote(t)────────▶ await asyncio.Queue.get  (≤ t s)
                       ◀── (True, x) | (False, None)                       → Empty

Blocking and timeouts happen in the actor: it is an async actor, so a ``get``
waiting on an empty queue is a suspended coroutine and never stops other
callers' ``put`` from running. Items travel inside a tuple or list, so an
``ObjectRef`` put into the queue comes out as the same ref (not its value).
A ``Queue`` pickles as its actor handle, so it can be passed to tasks and actors.
"""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from collections.abc import Iterable
from typing import Any

import fedexec

__all__ = ["Empty", "Full", "Queue"]


class Empty(_stdlib_queue.Empty):
    """``get`` found the queue empty (``block=False``, or still empty after ``timeout``)."""


class Full(_stdlib_queue.Full):
    """``put`` found the queue full (``block=False``, or still full after ``timeout``)."""


class _QueueActor:
    """The actor behind a :class:`Queue`: an ``asyncio.Queue`` and nothing else.

    Methods report "empty"/"full" as return values, never by raising, so the
    caller raises a clean :class:`Empty`/:class:`Full` of its own."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.busy = 0  # blocking put/get calls in progress

    async def qsize(self) -> int:
        return self.queue.qsize()

    async def empty(self) -> bool:
        return self.queue.empty()

    async def full(self) -> bool:
        return self.queue.full()

    async def put(self, boxed: tuple[Any], timeout: float | None) -> bool:
        self.busy += 1
        try:
            await asyncio.wait_for(self.queue.put(boxed[0]), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self.busy -= 1

    async def get(self, timeout: float | None) -> tuple[bool, Any]:
        self.busy += 1
        try:
            return True, await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return False, None
        finally:
            self.busy -= 1

    async def put_nowait(self, boxed: tuple[Any]) -> bool:
        try:
            self.queue.put_nowait(boxed[0])
            return True
        except asyncio.QueueFull:
            return False

    async def put_nowait_batch(self, items: list[Any]) -> bool:
        if self.maxsize > 0 and self.queue.qsize() + len(items) > self.maxsize:
            return False
        for item in items:
            self.queue.put_nowait(item)
        return True

    async def get_nowait(self) -> tuple[bool, Any]:
        try:
            return True, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return False, None

    async def get_nowait_batch(self, num_items: int) -> tuple[bool, list[Any]]:
        if num_items > self.queue.qsize():
            return False, []
        return True, [self.queue.get_nowait() for _ in range(num_items)]

    async def wait_idle(self) -> None:
        """Return once no blocking put/get is in progress."""
        while self.busy:
            await asyncio.sleep(0.01)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError(f"'timeout' must be None or a non-negative number, got {timeout!r}")


class Queue:
    """A first-in, first-out queue kept by an actor, as ``ray.util.queue.Queue``.

    Any number of drivers, tasks and actors may put and get concurrently; pass the
    ``Queue`` itself to them (it pickles). ``put``/``get`` block, or not, like the
    stdlib ``queue.Queue``; ``put_async``/``get_async`` are their awaitable forms.

    Args:
        maxsize: the most items the queue holds; 0 (or less) means unbounded.
        actor_options: options for the queue's actor (``num_cpus``, ``name``,
            ``resources``...), as for ``Executor.options``.
        executor: the executor to create the actor on; None uses the current one
            (inside a task or actor: its runtime; in a driver: the default executor).

    Raises:
        UnsupportedOnBackendError: the backend has no actors (or no async actors).
        ValueError: an invalid ``actor_options`` entry.
    """

    def __init__(
        self,
        maxsize: int = 0,
        actor_options: dict[str, Any] | None = None,
        *,
        executor: fedexec.Executor | None = None,
    ) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, got {maxsize!r}")
        self.maxsize = maxsize
        options = dict(actor_options or {})
        self._executor = executor  # not pickled: copies use their own runtime
        if executor is None:
            cls = fedexec.remote(_QueueActor)
            self.actor: fedexec.ActorHandle[Any] | None = (
                cls.options(**options) if options else cls).remote(maxsize)
        else:
            self.actor = executor.options(**options).actor(_QueueActor, maxsize)

    def __getstate__(self) -> dict[str, Any]:
        return {"maxsize": self.maxsize, "actor": self.actor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.maxsize = state["maxsize"]
        self.actor = state["actor"]
        self._executor = None

    def _handle(self) -> fedexec.ActorHandle[Any]:
        if self.actor is None:
            raise RuntimeError("this Queue was shut down; create a new Queue")
        return self.actor

    # -- size ------------------------------------------------------------------
    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue (same as :meth:`qsize`).

        Returns:
            The item count at the moment the actor answered.
        """
        return self.qsize()

    def qsize(self) -> int:
        """The number of items in the queue.

        Returns:
            The item count at the moment the actor answered.
        """
        return int(fedexec.get(self._handle().qsize.remote()))

    def empty(self) -> bool:
        """Whether the queue holds no items.

        Returns:
            True if it was empty when the actor answered.
        """
        return bool(fedexec.get(self._handle().empty.remote()))

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items (never true when unbounded).

        Returns:
            True if it was full when the actor answered.
        """
        return bool(fedexec.get(self._handle().full.remote()))

    # -- put -------------------------------------------------------------------
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item`` at the end of the queue.

        Args:
            item: any picklable value (an ``ObjectRef`` is stored as the ref).
            block: wait for room if the queue is full; False raises at once.
            timeout: with ``block``, the most seconds to wait (None: no limit).

        Raises:
            Full: no room (``block=False``), or still none after ``timeout``.
            ValueError: ``timeout`` is negative.
        """
        self._put_done(fedexec.get(self._put_call(item, block, timeout)), block, timeout)

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """:meth:`put` for asyncio code: ``await q.put_async(item)``.

        Args:
            item: any picklable value.
            block: wait for room if the queue is full; False raises at once.
            timeout: with ``block``, the most seconds to wait (None: no limit).

        Raises:
            Full: no room (``block=False``), or still none after ``timeout``.
            ValueError: ``timeout`` is negative.
        """
        self._put_done(await self._put_call(item, block, timeout), block, timeout)

    def _put_call(self, item: Any, block: bool, timeout: float | None
                  ) -> fedexec.ObjectRef[Any]:
        """The actor call a put makes (the item travels boxed: a ref stays a ref)."""
        if not block:
            return self._handle().put_nowait.remote((item,))
        _check_timeout(timeout)
        return self._handle().put.remote((item,), timeout)

    def _put_done(self, ok: bool, block: bool, timeout: float | None) -> None:
        if not ok:
            raise Full(self._full_message(block, timeout))

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``.

        Args:
            item: any picklable value.

        Raises:
            Full: the queue is full.
        """
        self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Add all ``items`` at once, in order, or none of them.

        Args:
            items: the values to add.

        Raises:
            Full: they do not all fit (nothing was added).
            TypeError: ``items`` is not iterable.
        """
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise TypeError(f"put_nowait_batch() takes an iterable of items, got {items!r}")
        batch = list(items)
        if not fedexec.get(self._handle().put_nowait_batch.remote(batch)):
            raise Full(
                f"cannot add {len(batch)} items to a queue of maxsize {self.maxsize}: "
                f"not enough room (nothing was added)"
            )

    def _full_message(self, block: bool, timeout: float | None) -> str:
        if not block:
            return f"the queue is full (maxsize {self.maxsize})"
        return f"the queue stayed full (maxsize {self.maxsize}) for {timeout} s"

    # -- get -------------------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the item at the front of the queue.

        Args:
            block: wait for an item if the queue is empty; False raises at once.
            timeout: with ``block``, the most seconds to wait (None: no limit).

        Returns:
            The oldest item.

        Raises:
            Empty: no item (``block=False``), or still none after ``timeout``.
            ValueError: ``timeout`` is negative.
        """
        return self._got(fedexec.get(self._get_call(block, timeout)), block, timeout)

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """:meth:`get` for asyncio code: ``item = await q.get_async()``.

        Args:
            block: wait for an item if the queue is empty; False raises at once.
            timeout: with ``block``, the most seconds to wait (None: no limit).

        Returns:
            The oldest item.

        Raises:
            Empty: no item (``block=False``), or still none after ``timeout``.
            ValueError: ``timeout`` is negative.
        """
        return self._got(await self._get_call(block, timeout), block, timeout)

    def _get_call(self, block: bool, timeout: float | None) -> fedexec.ObjectRef[Any]:
        """The actor call a get makes; it answers ``(ok, item)``."""
        if not block:
            return self._handle().get_nowait.remote()
        _check_timeout(timeout)
        return self._handle().get.remote(timeout)

    def _got(self, answer: tuple[bool, Any], block: bool, timeout: float | None) -> Any:
        ok, item = answer
        if not ok:
            raise Empty(self._empty_message(block, timeout))
        return item

    def get_nowait(self) -> Any:
        """``get(block=False)``.

        Returns:
            The oldest item.

        Raises:
            Empty: the queue is empty.
        """
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove and return the ``num_items`` oldest items, or none of them.

        Args:
            num_items: how many items to take (0 returns ``[]``).

        Returns:
            The items, oldest first.

        Raises:
            Empty: fewer than ``num_items`` are in the queue (nothing was taken).
            TypeError: ``num_items`` is not an int.
            ValueError: ``num_items`` is negative.
        """
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError(f"num_items must be an int, got {num_items!r}")
        if num_items < 0:
            raise ValueError(f"num_items must be >= 0, got {num_items}")
        ok, items = fedexec.get(self._handle().get_nowait_batch.remote(num_items))
        if not ok:
            raise Empty(f"cannot get {num_items} items: the queue holds fewer (nothing was taken)")
        return list(items)

    @staticmethod
    def _empty_message(block: bool, timeout: float | None) -> str:
        return "the queue is empty" if not block else f"the queue stayed empty for {timeout} s"

    # -- lifetime --------------------------------------------------------------
    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """Stop the queue's actor, releasing its resources; the items are lost.

        Calls blocked in ``put``/``get`` (here or in other processes) then fail
        with ``ActorDiedError``; this ``Queue`` object raises ``RuntimeError``
        on further use. Calling it again does nothing.

        Args:
            force: kill the actor at once. Otherwise wait up to ``grace_period_s``
                for blocked ``put``/``get`` calls to finish first.
            grace_period_s: how long a graceful shutdown waits before killing.
        """
        actor, self.actor = self.actor, None
        if actor is None:
            return
        if not force:
            fedexec.wait([actor.wait_idle.remote()], timeout=grace_period_s)
        if self._executor is not None:
            self._executor.kill(actor)
        else:
            fedexec.kill(actor)
