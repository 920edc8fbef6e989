"""How a runtime hands its Dask tasks and completion callbacks to the client's
event loop: in batches, one loop wake-up per burst instead of one per call.

``client.submit`` costs the calling thread ~150-300 µs (a graph of one task,
serialized and sent on its own) and ``Future.add_done_callback`` one more
event-loop wake-up per future: together they were most of what a fedexec
submit cost on this backend. A batch of tasks sent with one ``client.map``
costs ~5-25 µs per task. So::

    submitting thread ─ submit(fn, args, key) ─▶ pending ──(first of a burst wakes
       │  returns a Future for ``key`` at once      │      the loop: _flush)
       └─ watch(future, fn) ──────────────────────▶ │
    loop: _flush ─ runs of tasks with one placement ─▶ client.map(_apply, ...) ─▶ scheduler
                 ─ one done_callback coroutine per watched future ─▶ done: our
                   callback thread runs fn(future) (never the loop: fn completes
                   refs, whose own callbacks are user code)

Order is kept: pending items are sent in the order they were added, so a task
always reaches the scheduler after the tasks it depends on. A task withdrawn
before its batch left (:meth:`Outbox.withdraw`, used by cancel) is never sent;
:meth:`Outbox.deliver` sends what is pending at once (used by shutdown).
The Futures handed out are made before their graph is sent (Dask's client does
the same); they only count a reference, they send nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import distributed
from distributed.client import done_callback

from ...exceptions import ClusterUnreachableError

if TYPE_CHECKING:
    from dask.typing import Key

__all__ = ["Outbox"]

logger = logging.getLogger(__name__)


def _apply(fn: Callable[..., Any], args: list[Any]) -> Any:
    """The Dask task of a batched call: ``fn(*args)`` (Dask has resolved the futures
    in ``args`` to their values)."""
    return fn(*args)


#: A call added within BURST_GAP seconds of the last flush is part of a burst: its
#: batch leaves BURST_WAIT seconds later, so that the calls behind it join it. A
#: call after a quiet spell (a round trip, the first of a burst) leaves at once.
BURST_GAP = 0.002
BURST_WAIT = 0.001


class _Send:
    __slots__ = ("args", "failed", "fn", "forget", "future", "group", "placement")

    def __init__(self, fn: Callable[..., Any], args: list[Any], future: distributed.Future[Any],
                 placement: dict[str, Any], failed: Callable[[BaseException], None] | None,
                 forget: bool):
        self.fn = fn
        self.args = args
        self.future = future
        self.placement = placement
        self.failed = failed
        self.forget = forget
        resources = placement.get("resources")
        workers = placement.get("workers")
        self.group = (frozenset(resources.items()) if resources else None,
                      tuple(workers) if workers else None,
                      bool(placement.get("allow_other_workers")))


class _Watch:
    __slots__ = ("fn", "future")

    def __init__(self, future: distributed.Future[Any], fn: Callable[[Any], None]):
        self.future = future
        self.fn = fn


class Outbox:
    """Sends one runtime's Dask tasks and registers its completion callbacks in
    batches (see the module docstring)."""

    def __init__(self, client: distributed.Client, name: str):
        self._client = client
        self._lock = threading.Lock()
        self._pending: list[_Send | _Watch] = []
        self._scheduled = False
        self._last_flush = 0.0
        self._waiting: set[asyncio.Task[None]] = set()  # loop only
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)

    def submit(self, fn: Callable[..., Any], args: Iterable[Any], key: str,
               placement: dict[str, Any] | None = None, *,
               failed: Callable[[BaseException], None] | None = None,
               forget: bool = False) -> distributed.Future[Any]:
        """Run ``fn(*args)`` as Dask task ``key`` (Futures in ``args`` are its
        dependencies); ``placement``: ``resources``/``workers``/``allow_other_workers``
        as ``client.submit`` takes them. ``failed(exc)`` is called if the task could
        not be sent; ``forget`` keeps it running with no reference (fire and forget)."""
        if self._client.status in ("closing", "closed"):
            raise ClusterUnreachableError(
                f"the Dask client of this executor is {self._client.status}; "
                "create a new executor")
        future: distributed.Future[Any] = distributed.Future(key, self._client)
        self._add(_Send(fn, list(args), future, placement or {}, failed, forget))
        return future

    def watch(self, future: distributed.Future[Any], fn: Callable[[Any], None]) -> None:
        """Call ``fn(future)`` on the callback thread once ``future`` is done
        (finished, failed, cancelled or lost)."""
        self._add(_Watch(future, fn))

    def withdraw(self, groups: Iterable[Sequence[Key]]) -> set[Key]:
        """Take back the tasks not sent yet (they never run); the keys taken.

        Each group is a task and the tasks that read it (a ``num_returns > 1`` call
        and its picks), taken whole or not at all: only if its first task has not
        left. Its picks may wait for the next batch after the call left; taking them
        alone would leave the call's refs waiting forever for values never sent.
        The completion callbacks stay: cancelling the Futures fires them (a task
        may have left already while its callback has not been registered yet)."""
        groups = [list(g) for g in groups]
        with self._lock:
            pending = {item.future.key for item in self._pending if isinstance(item, _Send)}
            taken = {k for g in groups if g and g[0] in pending for k in g if k in pending}
            if taken:
                self._pending = [item for item in self._pending if not (
                    isinstance(item, _Send) and item.future.key in taken)]
        return taken

    def deliver(self, timeout: float) -> bool:
        """Send the tasks added so far now, without waiting for their burst (shutdown
        lets the workers take them before it cancels the rest); False if the event
        loop did not get to it within ``timeout`` s (they stay pending)."""
        sent = threading.Event()

        def flush() -> None:  # on the event loop
            try:
                self._flush()
            finally:
                sent.set()

        loop = self._client.loop
        if loop is None:  # the client is closed
            return False
        try:
            loop.add_callback(flush)
        except RuntimeError:  # the event loop is closed
            return False
        return sent.wait(timeout)

    def _add(self, item: _Send | _Watch) -> None:
        with self._lock:
            self._pending.append(item)
            if self._scheduled:
                return
            self._scheduled = True
            burst = time.monotonic() - self._last_flush < BURST_GAP
        loop = self._client.loop
        assert loop is not None  # a started client has one (Dask types it optional)
        loop.add_callback(self._flush_later if burst else self._flush)

    async def _flush_later(self) -> None:
        await asyncio.sleep(BURST_WAIT)
        self._flush()

    def _flush(self) -> None:  # on the event loop
        with self._lock:
            items, self._pending = self._pending, []
            self._scheduled = False
            self._last_flush = time.monotonic()
        sends = [item for item in items if isinstance(item, _Send)]
        i = 0
        while i < len(sends):  # runs of tasks with one placement: one graph each
            j = i + 1
            while j < len(sends) and sends[j].group == sends[i].group:
                j += 1
            self._send(sends[i:j])
            i = j
        for item in items:
            if isinstance(item, _Watch):
                self._watch_now(item)

    def _send(self, batch: list[_Send]) -> None:
        try:
            self._client.map(_apply, [s.fn for s in batch], [s.args for s in batch],
                             key=[s.future.key for s in batch], pure=False, retries=0,
                             **batch[0].placement)
        except Exception as exc:  # the client is closing, or a graph Dask refused
            for s in batch:
                if s.failed is not None:
                    self.run(functools.partial(s.failed, exc))
            return
        for s in batch:
            if s.forget:
                distributed.fire_and_forget(s.future)

    def _watch_now(self, item: _Watch) -> None:
        fn = functools.partial(self._done, item.fn)
        if item.future.status == "pending":
            task = asyncio.ensure_future(done_callback(item.future, fn))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
        else:
            fn(item.future)

    def _done(self, fn: Callable[[Any], None], future: distributed.Future[Any]) -> None:
        self.run(functools.partial(fn, future))

    def run(self, call: Callable[[], None]) -> None:
        """Call ``call()`` on the runtime's callback thread (after those queued)."""
        try:
            self._pool.submit(_call, call)
        except RuntimeError:  # the runtime shut down (never on the loop: it may block)
            threading.Thread(target=_call, args=(call,), daemon=True,
                             name="fedexec-dask-late-callback").start()

    def close(self) -> None:
        """Stop the callback thread once the callbacks queued so far have run."""
        self._pool.shutdown(wait=False)


def _call(call: Callable[[], None]) -> None:
    try:
        call()
    except Exception:
        logger.exception("fedexec: error in a dask backend callback %s", call)
