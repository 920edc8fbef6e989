"""One actor instance's calls: the ordered queue, the threads, the event loop.

Shared by the local, native and dask backends. A backend keeps the actor's
lifecycle (creation, resources, restarts, death, the caller-side refs) and hands
an :class:`ActorHost` its calls; the host runs them. One host serves one
incarnation of an actor: a restart closes it and opens a new one, moving the calls
that never started over (:meth:`ActorHost.close`).

The contract every backend gets from it (API.md "Actors")::

    start(construct)  construct() runs on the host's own thread (async actors:
                      inside the actor's event loop, so __init__ may make tasks on
                      it); calls submitted before then wait in the queue. If it
                      raises, no call runs and the backend closes the host.
                      ``here=True``: the calling thread is the host's first
                      thread (native: a worker's main thread, as a process that
                      lives for its actor).
    ordering          one FIFO queue: calls start in submission order, so calls
                      from one caller start in that caller's order.
    sync actor        max_concurrency threads take calls from the queue; with 1,
                      calls run strictly one after another.
    async actor       (any ``async def`` method) one event loop on one thread; a
                      call is admitted from the queue, in order, only while fewer
                      than max_concurrency calls are in flight. A sync method of
                      an async actor runs on the loop thread (it blocks the loop
                      while it runs) and counts as one call in flight.
    dependencies      a call first waits for runner.waits_for(call) (an async
                      actor awaits them, so its loop runs other calls meanwhile).
    outcome           runner.finish(call, result, error) exactly once for every
                      call that started and was not taken back by close(), on
                      the thread that ran it, inside runner.context(call).
                      ``error`` is what the method (or runner.arguments) raised,
                      or a TaskCancelledError (traceback-free) when the call was
                      interrupted; the backend turns it into the caller's error.
    cancel(key)       a call not started yet is removed and returned: it never
                      runs and finish is never called for it (the backend
                      reports the cancellation). interrupt(key) cancels a
                      running call of an async actor (its coroutine gets
                      CancelledError; finish gets TaskCancelledError); a running
                      sync call cannot be interrupted.
    close()           kill, restart or shutdown: no call starts afterwards;
                      returns (queued, running): the calls that never started and
                      those still running, whose outcome will be dropped (finish
                      is not called for them). The backend fails them with
                      ActorDiedError or sends them again (max_task_retries). A
                      submit after close is refused (False).
    drain(timeout)    wait until no call is queued or running and every finished
                      call's runner.finish has returned (graceful shutdown).
    idle(ready)       optional, for a sync actor with max_concurrency=1: its thread,
                      idle, calls it instead of waiting, and it returns once
                      ready() (a call is queued, or the host stopped serving) or at
                      once with False (then the thread waits as usual). Native
                      gives its worker's link reading (a call then starts with no
                      thread hand-off).

Where the three backends' copies disagreed before this module (each now covered
by a conformance test): native could not cancel a call queued behind busy threads
of a threaded actor (it ran anyway); local and dask could not cancel a running
async call; native and dask ran an async actor's ``__init__`` outside its loop.
Dask also fed an async actor's loop from a pool of max_concurrency threads (1000
by default), each blocked on one call.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..exceptions import TaskCancelledError

if TYPE_CHECKING:  # (imported where an async actor needs it: ~20 ms that a process of
    import asyncio  # tasks and sync actors, a node's forked workers, never pays)

__all__ = ["ActorHost", "CallRunner"]

C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)


class CallRunner(Protocol[C_contra]):
    """What a backend tells the host about its calls (its transport)."""

    def context(self, call: C_contra) -> AbstractContextManager[Any]:
        """Entered around running the call (the task context)."""

    def waits_for(self, call: C_contra) -> Sequence[cf.Future[Any]]:
        """Futures to wait for before :meth:`arguments` (may be empty)."""

    def arguments(self, call: C_contra) -> tuple[str, Sequence[Any], Mapping[str, Any]]:
        """The method name and arguments (raising fails the call with that error)."""

    def finish(self, call: C_contra, result: Any, error: BaseException | None) -> None:
        """Deliver the outcome (see the module docstring)."""


class ActorHost(Generic[C]):
    """Runs the calls of one actor incarnation (see the module docstring)."""

    def __init__(self, runner: CallRunner[C], *, concurrency: int, is_async: bool, name: str,
                 idle: Callable[[Callable[[], bool]], bool] | None = None):
        self.runner = runner
        #: A sync actor's only thread, idle, calls ``idle(ready)`` instead of waiting:
        #: it returns once ``ready()`` (a call is queued, or the host closes) or at
        #: once with False (it cannot: the thread then waits as usual). Native: its
        #: worker's main thread reads the worker's links meanwhile (worker.py).
        self._idle = idle if concurrency <= 1 and not is_async else None
        self.concurrency = max(1, concurrency)
        self.is_async = is_async
        self.name = name
        self._cv = threading.Condition()
        self._state = "pending"  # -> serving -> closed (or failed: construct raised)
        self._order: collections.deque[str] = collections.deque()
        self._queued: dict[str, C] = {}
        self._running: dict[str, C] = {}
        self._finishing = 0  # calls out of _running whose runner.finish has not returned
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._instance: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._poked = False
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ backend side
    def start(self, construct: Callable[[], Any], *, here: bool = False) -> cf.Future[Any]:
        """Build the instance on the host's thread, then serve calls: a future of
        the instance (or of what ``construct`` raised). ``here``: this thread is
        the host's first thread, and start returns only once the host is closed
        (or construct raised)."""
        built: cf.Future[Any] = cf.Future()
        target = self._async_main if self.is_async else self._sync_main
        if here:
            target(construct, built)
        else:
            self._spawn(target, construct, built)
        return built

    def submit(self, key: str, call: C) -> bool:
        """Queue a call; False (not queued) once the host is closed."""
        with self._cv:
            if self._state == "closed":
                return False
            self._order.append(key)
            self._queued[key] = call
            if self.is_async:
                self._poke_locked()
            else:
                self._cv.notify()
        return True

    def cancel(self, key: str) -> C | None:
        """Take back a call that has not started (None if it has, or is unknown)."""
        with self._cv:
            call = self._queued.pop(key, None)
            if call is not None:
                self._order.remove(key)
            return call

    def interrupt(self, key: str) -> bool:
        """Cancel a running call of an async actor; False if there is none."""
        with self._cv:
            task, loop = self._tasks.get(key), self._loop
        if task is None or loop is None:
            return False
        try:
            loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True

    def queued(self) -> int:
        """How many calls wait to start."""
        return len(self._order)

    def running(self) -> int:
        """How many calls run now (in ``finish``, not counting the one finishing)."""
        return len(self._running)

    def close(self) -> tuple[list[C], list[C]]:
        """Stop: (calls never started, calls running whose outcome is dropped)."""
        with self._cv:
            if self._state == "closed":
                return [], []
            self._state = "closed"
            queued = [self._queued[k] for k in self._order]
            running = list(self._running.values())
            self._order.clear()
            self._queued.clear()
            self._running.clear()
            self._instance = None
            self._cv.notify_all()
            if self.is_async:
                self._poke_locked()
        return queued, running

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no call is queued or running (True) or ``timeout`` passes."""
        with self._cv:
            return self._cv.wait_for(
                lambda: self._state in ("closed", "failed")
                or (not self._order and not self._running and not self._finishing), timeout)

    # ------------------------------------------------------------- internals
    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True,
                             name=f"fedexec-actor-{self.name}")
        self._threads.append(t)
        t.start()

    def _built(self, construct: Callable[[], Any], built: cf.Future[Any]) -> bool:
        try:
            instance = construct()
        except BaseException as exc:
            with self._cv:
                if self._state == "pending":
                    self._state = "failed"
                self._cv.notify_all()
            built.set_exception(exc)
            return False
        with self._cv:
            serving = self._state == "pending"
            if serving:
                self._state = "serving"
                self._instance = instance
        built.set_result(instance)
        return serving

    def _ready(self) -> bool:
        """A call waits to start, or the host stopped serving (a hint: no lock)."""
        return bool(self._order) or self._state != "serving"

    def _take(self) -> tuple[str, C] | None:
        """The next call to start (under the lock); None if none is queued."""
        if self._state != "serving" or not self._order:
            return None
        key = self._order.popleft()
        call = self._queued.pop(key)
        self._running[key] = call
        return key, call

    def _finish(self, key: str, call: C, result: Any, error: BaseException | None) -> None:
        with self._cv:
            if self._running.pop(key, None) is None:
                return  # taken back by close(): the backend has dealt with it
            self._finishing += 1
        try:
            self.runner.finish(call, result, error)
        finally:
            # drain() returns only after the caller's refs are complete: a shutdown
            # that drained must never leave a call's ref pending.
            with self._cv:
                self._finishing -= 1
                if not self._running and not self._order and not self._finishing:
                    self._cv.notify_all()

    def _cancelled(self, method: str) -> TaskCancelledError:
        return TaskCancelledError(f"actor call {self.name}.{method} was cancelled")

    # ----------------------------------------------------------- sync actors
    def _sync_main(self, construct: Callable[[], Any], built: cf.Future[Any]) -> None:
        if not self._built(construct, built):
            return
        for _ in range(self.concurrency - 1):
            self._spawn(self._sync_serve)
        self._sync_serve()

    def _sync_serve(self) -> None:
        while True:
            with self._cv:
                taken = self._take()
                while taken is None and self._state == "serving":
                    if self._idle is not None:
                        self._cv.release()
                        try:
                            read = self._idle(self._ready)
                        finally:
                            self._cv.acquire()
                        if read:
                            taken = self._take()
                            continue
                    self._cv.wait()
                    taken = self._take()
                if taken is None:
                    return
                instance = self._instance
            self._run_sync(instance, *taken)

    def _run_sync(self, instance: Any, key: str, call: C) -> None:
        runner = self.runner
        with runner.context(call):
            result: Any = None
            error: BaseException | None = None
            try:
                waits = runner.waits_for(call)
                if waits:
                    cf.wait(waits)
                method, args, kwargs = runner.arguments(call)
                result = getattr(instance, method)(*args, **kwargs)
            except BaseException as exc:
                result, error = None, exc
            self._finish(key, call, result, error)
            del result

    # ---------------------------------------------------------- async actors
    def _poke_locked(self) -> None:
        """Wake the loop's pump (once per burst of submits)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or self._poked:
            return
        self._poked = True
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop is closed: nothing is left to wake
            pass

    def _async_main(self, construct: Callable[[], Any], built: cf.Future[Any]) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._async_serve(loop, construct, built))
        finally:
            with self._cv:
                self._loop = None
            loop.close()

    async def _async_serve(self, loop: asyncio.AbstractEventLoop,
                           construct: Callable[[], Any], built: cf.Future[Any]) -> None:
        import asyncio

        wake = asyncio.Event()
        sem = asyncio.Semaphore(self.concurrency)
        if not self._built(construct, built):
            return
        with self._cv:
            self._loop, self._wake, self._poked = loop, wake, False
        wake.set()  # calls queued while __init__ ran
        while True:
            await wake.wait()
            wake.clear()
            with self._cv:
                self._poked = False
            while True:
                await sem.acquire()
                with self._cv:
                    taken = self._take()
                    if taken is not None:
                        key, call = taken
                        task = loop.create_task(self._run_async(self._instance, key, call, sem))
                        self._tasks[key] = task
                        continue
                    sem.release()
                    closed = self._state != "serving"
                    pending = list(self._tasks.values())
                if closed:
                    # Let the calls still suspended unwind here (their outcome is
                    # dropped): left alone, the garbage collector would finalize
                    # them later in another thread and context.
                    for t in pending:
                        t.cancel()
                    if pending:
                        await asyncio.gather(*pending, return_exceptions=True)
                    return
                break

    async def _run_async(self, instance: Any, key: str, call: C,
                         sem: asyncio.Semaphore) -> None:
        import asyncio

        runner = self.runner
        method = "?"
        try:
            with runner.context(call):
                result: Any = None
                error: BaseException | None = None
                try:
                    waits = [f for f in runner.waits_for(call) if not f.done()]
                    if waits:
                        await asyncio.wait([asyncio.wrap_future(f) for f in waits])
                    method, args, kwargs = runner.arguments(call)
                    result = getattr(instance, method)(*args, **kwargs)
                    if inspect.isawaitable(result):
                        result = await result
                except asyncio.CancelledError:
                    result, error = None, self._cancelled(method)
                except BaseException as exc:
                    result, error = None, exc
                self._finish(key, call, result, error)
                del result
        finally:
            sem.release()
            with self._cv:
                self._tasks.pop(key, None)
