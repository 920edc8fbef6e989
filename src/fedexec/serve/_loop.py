"""The one event loop per process that serve's hot path runs on.

Replica servers, routers (the proxy's and the handles'), uvicorn in the proxy
and the user's async handlers all share it, so a handle call made inside a
replica is an ordinary coroutine on the same loop. It runs in a daemon thread
started with a copy of the starter's context variables, so fedexec calls made
from it reach the runtime of the actor that started it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def get_loop() -> asyncio.AbstractEventLoop:
    """This process's serve loop, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or not _thread or not _thread.is_alive():
            loop = _new_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            ctx = contextvars.copy_context()
            _thread = threading.Thread(target=ctx.run, args=(run,), daemon=True,
                                       name="fedexec-serve-loop")
            _thread.start()
            ready.wait()
            _loop = loop
        return _loop


def on_loop() -> bool:
    """True when called from the serve loop's thread."""
    return _thread is not None and threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> Future[T]:
    """Run ``coro`` on the serve loop; a concurrent future of its result."""
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


def call_soon(fn: Any, *args: Any) -> None:
    """Run ``fn(*args)`` on the serve loop soon, from any thread; nothing when the
    loop is not running (a finalizer may call it during shutdown)."""
    loop = _loop
    if loop is None or loop.is_closed():
        return
    try:
        if on_loop():
            loop.call_soon(fn, *args)
        else:
            loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # closed meanwhile
        pass


def stop() -> None:
    """Stop this process's serve loop (a driver calls it at ``serve.shutdown``)."""
    global _loop, _thread
    with _lock:
        loop, thread, _loop, _thread = _loop, _thread, None, None
    if loop is None or thread is None:
        return
    if threading.current_thread() is thread:
        loop.call_soon(loop.stop)
        return

    async def finish() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        loop.stop()

    asyncio.run_coroutine_threadsafe(finish(), loop)
    thread.join(10)
    if not thread.is_alive():
        loop.close()
