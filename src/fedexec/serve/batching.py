"""``@serve.batch``: calls arriving together reach the method as one list.

Calls queue on the serve loop; a batch leaves when it has ``max_batch_size``
calls or ``batch_wait_timeout_s`` after its first call arrived, whichever is
first; the method gets the list of first arguments and returns a list of equal
length, whose items answer the calls in order. One batch runs at a time per
method and instance.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

from .exceptions import ServeError


class _Batcher:
    def __init__(self, fn: Callable[..., Any], max_batch_size: int, timeout_s: float) -> None:
        self.fn, self.max, self.timeout = fn, max_batch_size, timeout_s
        self.queue: list[tuple[Any, tuple[Any, ...], asyncio.Future[Any]]] = []
        self.wakeup: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None

    async def submit(self, owner: Any, arg: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((owner, arg, fut))
        if self.wakeup is None:
            self.wakeup = asyncio.Event()
        if len(self.queue) >= self.max:
            self.wakeup.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return await fut

    async def _run(self) -> None:
        assert self.wakeup is not None
        while self.queue:
            if len(self.queue) < self.max:
                try:
                    await asyncio.wait_for(self.wakeup.wait(), self.timeout)
                except asyncio.TimeoutError:
                    pass
            self.wakeup.clear()
            batch, self.queue = self.queue[:self.max], self.queue[self.max:]
            owner = batch[0][0]
            args = [b[1] for b in batch]
            try:
                out = self.fn(owner, args) if owner is not None else self.fn(args)
                if inspect.isawaitable(out):
                    out = await out
                out = list(out)
                if len(out) != len(batch):
                    raise ServeError(
                        f"@serve.batch method {self.fn.__name__} got {len(batch)} inputs and "
                        f"returned {len(out)} results; return one result per input")
                for (_, _, fut), value in zip(batch, out):
                    if not fut.done():
                        fut.set_result(value)
            except Exception as exc:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)


def batch(_fn: Callable[..., Any] | None = None, *, max_batch_size: int = 10,
          batch_wait_timeout_s: float = 0.01) -> Any:
    """Decorate an async method (or function) taking a list and returning a list."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if batch_wait_timeout_s < 0:
        raise ValueError(f"batch_wait_timeout_s must be >= 0, got {batch_wait_timeout_s}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@serve.batch needs an async function; make "
                            f"{fn.__name__} `async def`")
        params = list(inspect.signature(fn).parameters)
        is_method = bool(params) and params[0] == "self"
        attr = f"__fedexec_batcher_{fn.__name__}"
        shared: dict[str, _Batcher] = {}

        if is_method:
            @functools.wraps(fn)
            async def method(self: Any, arg: Any) -> Any:
                batcher = self.__dict__.get(attr)
                if batcher is None:
                    batcher = _Batcher(fn, max_batch_size, batch_wait_timeout_s)
                    self.__dict__[attr] = batcher
                return await batcher.submit(self, arg)

            return method

        @functools.wraps(fn)
        async def function(arg: Any) -> Any:
            batcher = shared.get("b")
            if batcher is None:
                batcher = shared["b"] = _Batcher(fn, max_batch_size, batch_wait_timeout_s)
            return await batcher.submit(None, arg)

        return function

    return decorate(_fn) if _fn is not None else decorate
