"""``ActorPool``: spread calls over a fixed set of actors, one call per actor at a time.

State (all on the caller's side; the pool sends nothing to the actors itself)::

    idle      actors with no call in flight (the next submit takes the last one)
    backlog   (fn, value) submitted while no actor was idle, FIFO
    running   {ref: (index, actor)}  calls in flight, ``index`` = submission order
    by_index  {index: ref}           the same calls, for ordered retrieval
    next_index / next_return         the next index to give out / to return in order

A call leaves ``running`` when its result is taken (``get_next*``), which puts its
actor back in ``idle`` and starts the oldest backlog entry on it. The pool is not
thread-safe: use it from one thread, as ``ray.util.ActorPool``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import fedexec

__all__ = ["ActorPool"]

V = TypeVar("V")

#: ``fn(actor, value)``: submits one call on ``actor`` and returns its ObjectRef.
SubmitFn = Callable[[Any, Any], "fedexec.ObjectRef[Any]"]


class ActorPool:
    """Run ``fn(actor, value)`` calls on a pool of actors, as ``ray.util.ActorPool``.

    Each actor runs at most one of the pool's calls at a time; work submitted while
    every actor is busy waits in the pool and starts when a result is taken.

    Args:
        actors: the actor handles to use (the pool owns them until ``pop_idle``).

    Example::

        pool = ActorPool([Worker.remote(), Worker.remote()])
        list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3]))  # [2, 4, 6]
    """

    def __init__(self, actors: Iterable[fedexec.ActorHandle[Any]]) -> None:
        self._idle: list[fedexec.ActorHandle[Any]] = list(actors)
        self._backlog: deque[tuple[SubmitFn, Any]] = deque()
        self._running: dict[fedexec.ObjectRef[Any], tuple[int, fedexec.ActorHandle[Any]]] = {}
        self._by_index: dict[int, fedexec.ObjectRef[Any]] = {}
        self._next_index = 0
        self._next_return = 0

    # -- bulk ------------------------------------------------------------------
    def map(self, fn: SubmitFn, values: Iterable[Any]) -> Iterator[Any]:
        """Submit ``fn(actor, v)`` for every ``v``; iterate over the results in order.

        Earlier submissions whose results were not taken are dropped first (as in
        Ray): queued ones never run, running ones finish but are not returned.

        Args:
            fn: called as ``fn(actor, value)``; must return the call's ``ObjectRef``.
            values: the values to process.

        Returns:
            An iterator of the results, in the order of ``values``; it raises the
            error of a call that failed when that result is reached.
        """
        self._discard_pending()
        for v in values:
            self.submit(fn, v)
        return self._drain(self.get_next)

    def map_unordered(self, fn: SubmitFn, values: Iterable[Any]) -> Iterator[Any]:
        """Like :meth:`map`, but results come as soon as they are ready.

        Args:
            fn: called as ``fn(actor, value)``; must return the call's ``ObjectRef``.
            values: the values to process.

        Returns:
            An iterator of the results in completion order.
        """
        self._discard_pending()
        for v in values:
            self.submit(fn, v)
        return self._drain(self.get_next_unordered)

    def _drain(self, take: Callable[[], Any]) -> Iterator[Any]:
        while self.has_next():
            yield take()

    def _discard_pending(self) -> None:
        """Drop earlier work whose results were not taken: queued calls never run,
        running ones finish on their actors (which queue new calls behind them)."""
        self._backlog.clear()
        for _, actor in self._running.values():
            self._idle.append(actor)
        self._running.clear()
        self._by_index.clear()
        self._next_return = self._next_index

    # -- one at a time ---------------------------------------------------------
    def submit(self, fn: SubmitFn, value: Any) -> None:
        """Run ``fn(actor, value)`` on an idle actor, or queue it until one is free.

        Args:
            fn: called as ``fn(actor, value)``; must return the call's ``ObjectRef``.
            value: the value to pass.

        Raises:
            TypeError: ``fn`` did not return an ``ObjectRef`` (the actor stays idle).
        """
        if not self._idle:
            self._backlog.append((fn, value))
            return
        actor = self._idle.pop()
        try:
            ref = fn(actor, value)
        except BaseException:
            self._idle.append(actor)
            raise
        if not isinstance(ref, fedexec.ObjectRef):
            self._idle.append(actor)
            raise TypeError(
                f"ActorPool: fn(actor, value) must return the ObjectRef of an actor call "
                f"(e.g. lambda a, v: a.method.remote(v)), got {type(ref).__name__}"
            )
        self._running[ref] = (self._next_index, actor)
        self._by_index[self._next_index] = ref
        self._next_index += 1

    def has_next(self) -> bool:
        """True if some submitted call's result has not been taken yet.

        Returns:
            Whether :meth:`get_next` / :meth:`get_next_unordered` have a result to give.
        """
        return bool(self._running)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The result of the oldest call not yet returned (submission order).

        Args:
            timeout: seconds to wait for it; None waits as long as it takes.
            ignore_if_timedout: on timeout, drop that call (its actor returns to the
                pool and its result is never returned) instead of keeping it as next.

        Returns:
            The call's value.

        Raises:
            StopIteration: no call is pending.
            ValueError: called after :meth:`get_next_unordered` took the oldest result.
            TimeoutError: (a :class:`fedexec.GetTimeoutError`) not ready within
                ``timeout``; unless ``ignore_if_timedout``, a later ``get_next``
                returns the same result.
            Exception: the call's own error (its actor is back in the pool).
        """
        if not self.has_next():
            raise StopIteration("ActorPool has no pending results; submit() work first")
        ref = self._by_index.get(self._next_return)
        if ref is None:
            raise ValueError(
                "ActorPool.get_next() cannot follow get_next_unordered(): the next result "
                "in order was already taken; keep using get_next_unordered()"
            )
        timed_out = timeout is not None and not fedexec.wait([ref], timeout=timeout)[0]
        if timed_out and not ignore_if_timedout:
            raise fedexec.GetTimeoutError(
                f"ActorPool.get_next(): the next result was not ready within {timeout} s; "
                f"call get_next() again to keep waiting for it"
            )
        del self._by_index[self._next_return]
        self._next_return += 1
        self._release(ref)
        if timed_out:
            raise fedexec.GetTimeoutError(
                f"ActorPool.get_next(): the next result was not ready within {timeout} s "
                f"and was dropped (ignore_if_timedout=True)"
            )
        return fedexec.get(ref)

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """The result of whichever pending call finishes first.

        Args:
            timeout: seconds to wait; None waits as long as it takes.
            ignore_if_timedout: accepted for symmetry with :meth:`get_next`; on
                timeout no call is chosen, so nothing is dropped either way.

        Returns:
            The call's value.

        Raises:
            StopIteration: no call is pending.
            TimeoutError: (a :class:`fedexec.GetTimeoutError`) none was ready within
                ``timeout``; the pending calls stay pending.
            Exception: the call's own error (its actor is back in the pool).
        """
        if not self.has_next():
            raise StopIteration("ActorPool has no pending results; submit() work first")
        ready, _ = fedexec.wait(list(self._running), num_returns=1, timeout=timeout)
        if not ready:
            raise fedexec.GetTimeoutError(
                f"ActorPool.get_next_unordered(): no result was ready within {timeout} s"
            )
        ref = ready[0]
        index = self._release(ref)
        del self._by_index[index]
        self._next_return = max(self._next_return, index + 1)
        return fedexec.get(ref)

    def _release(self, ref: fedexec.ObjectRef[Any]) -> int:
        """Forget the call behind ``ref`` and return its actor to the pool; its index."""
        index, actor = self._running.pop(ref)
        self._return_actor(actor)
        return index

    def _return_actor(self, actor: fedexec.ActorHandle[Any]) -> None:
        self._idle.append(actor)
        if self._backlog:
            self.submit(*self._backlog.popleft())

    # -- membership ------------------------------------------------------------
    def has_free(self) -> bool:
        """True if an actor is idle and no submitted work is waiting for one.

        Returns:
            Whether :meth:`pop_idle` would return an actor.
        """
        return bool(self._idle) and not self._backlog

    def pop_idle(self) -> fedexec.ActorHandle[Any] | None:
        """Take an idle actor out of the pool.

        Returns:
            The actor, or None if none is free (see :meth:`has_free`).
        """
        return self._idle.pop() if self.has_free() else None

    def push(self, actor: fedexec.ActorHandle[Any]) -> None:
        """Add ``actor`` to the pool (it starts the oldest queued work, if any).

        Args:
            actor: an actor handle not already in this pool.

        Raises:
            ValueError: ``actor`` already belongs to this pool (idle or busy).
        """
        busy = [a for _, a in self._running.values()]
        if actor in self._idle or actor in busy:
            raise ValueError(f"{actor!r} already belongs to this ActorPool")
        self._return_actor(actor)
