"""Actors of the ``local`` backend: each is a thread (or ``max_concurrency``
threads, or one event-loop thread for async actors) owning one instance.

State of a :class:`LocalActor` (under ``_cv``)::

    state       pending -> alive -> (restarting -> alive)* -> dead
    queue       calls not started, in submission order
    running     calls started and not finished
    generation  bumped by kill/restart: threads of an old generation stop, and
                results they produce afterwards are dropped
    held        the resources the actor holds now (creation demand, then lifetime)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import threading
from typing import TYPE_CHECKING, Any

from ... import serialization
from ..._runtime import RuntimeContext, TaskContext, resolving, running_task
from ...actors import ActorHandle, is_async_class, public_methods
from ...exceptions import ActorDiedError, TaskError
from ...options import ActorOptions, MethodOptions
from ...refs import ObjectRef
from .. import _execution as execution

if TYPE_CHECKING:
    from ._backend import LocalBackend

__all__ = ["LocalActor"]


class _Call:
    __slots__ = ("blob", "deps", "method", "options", "refs", "retries_left")

    def __init__(self, method: str, blob: Any, deps: list[ObjectRef[Any]],
                 options: MethodOptions, refs: list[ObjectRef[Any]], retries: int):
        self.method = method
        self.blob = blob
        self.deps = deps
        self.options = options
        self.refs = refs
        self.retries_left = retries


class LocalActor:
    """One actor of the local backend (see the module docstring)."""

    def __init__(self, backend: LocalBackend, actor_id: str, cls: type, cls_blob: Any,
                 init_blob: Any, init_deps: list[ObjectRef[Any]], options: ActorOptions,
                 namespace: str):
        self.backend = backend
        self.actor_id = actor_id
        self.class_name = cls.__name__
        self.methods = public_methods(cls)
        self.is_async = is_async_class(self.methods)
        self.concurrency = options.concurrency(self.is_async)
        self.options = options
        self.namespace = namespace
        self._cls_blob = cls_blob
        self._init_blob = init_blob
        self._init_deps = init_deps
        self._cv = threading.Condition()
        self.state = "pending"
        self.queue: collections.deque[_Call] = collections.deque()
        self.running: set[_Call] = set()
        self._calls: dict[str, _Call] = {}
        self.generation = 0
        self.restarts_left = options.max_restarts
        self.held: dict[str, float] = options.demand(1.0)  # acquired by the scheduler
        self.death_cause = ""
        self._stopping = False
        self._instance: Any = None
        self._wakeup: Any = None  # async actors: a callable waking the loop
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ handles
    def handle(self) -> ActorHandle[Any]:
        return ActorHandle(self.actor_id, self.backend, self.class_name, self.methods,
                           self.options.name, self.namespace)

    def alive_or_pending(self) -> bool:
        return self.state != "dead"

    def owns_call(self, ref: ObjectRef[Any]) -> bool:
        return ref.id in self._calls

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the actor's threads (the scheduler granted its creation resources)."""
        with self._cv:
            if self.state == "dead":
                return
            gen = self.generation
        target = self._async_main if self.is_async else self._sync_main
        t = threading.Thread(target=target, args=(gen, True), daemon=True,
                             name=f"fedexec-actor-{self.class_name}-{self.actor_id[-6:]}")
        self._threads.append(t)
        t.start()

    def _context(self, task_id: str | None) -> TaskContext:
        runtime = self.backend._runtime_for(task_id, self.actor_id, self.namespace)
        return TaskContext(self.backend, runtime, self)

    def _construct(self, gen: int) -> bool:
        """Run ``__init__``; False if the actor died instead."""
        with running_task(self._context(None)):
            try:
                with resolving(self.backend):
                    cls = serialization.loads(self._cls_blob.data, self._cls_blob.buffers)
                    args, kwargs = serialization.loads(self._init_blob.data,
                                                       self._init_blob.buffers)
                for d in self._init_deps:
                    d.result()
                args, kwargs = execution.resolve_args(args, kwargs)
                instance = cls(*args, **kwargs)
            except BaseException as exc:
                err = execution.wrap_exception(exc, f"{self.class_name}.__init__")
                self._die(f"its __init__ raised:\n{err}", gen)
                return False
        with self._cv:
            if gen != self.generation:
                return False
            self._instance = instance
            self.state = "alive"
            self._cv.notify_all()
        lifetime = self.options.demand(0.0)
        self.backend.actor_resources(self.held, lifetime)
        self.held = lifetime
        return True

    def _sync_main(self, gen: int, first: bool) -> None:
        if first:
            if not self._construct(gen):
                return
            for _ in range(self.concurrency - 1):
                t = threading.Thread(target=self._sync_main, args=(gen, False), daemon=True,
                                     name=f"fedexec-actor-{self.class_name}-{self.actor_id[-6:]}")
                self._threads.append(t)
                t.start()
        while True:
            call = self._next_call(gen)
            if call is None:
                return
            self._run_call(call, gen)

    def _next_call(self, gen: int) -> _Call | None:
        with self._cv:
            while not self.queue and gen == self.generation and not self._stopping:
                self._cv.wait()
            if gen != self.generation or not self.queue:
                return None
            call = self.queue.popleft()
            self.running.add(call)
            return call

    def _async_main(self, gen: int, first: bool) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._async_serve(gen, loop))
        finally:
            with self._cv:
                self._wakeup = None
            _unwind_pending(loop)
            loop.close()

    async def _async_serve(self, gen: int, loop: asyncio.AbstractEventLoop) -> None:
        if not self._construct(gen):
            return
        wake = asyncio.Event()
        sem = asyncio.Semaphore(self.concurrency)
        with self._cv:
            self._wakeup = lambda: loop.call_soon_threadsafe(wake.set)
        wake.set()  # calls submitted while __init__ ran are already queued
        tasks: set[asyncio.Task[None]] = set()
        while True:
            await wake.wait()
            wake.clear()
            while True:
                with self._cv:
                    if gen != self.generation:
                        return
                    if not self.queue:
                        if self._stopping:
                            if tasks:
                                await asyncio.gather(*tasks, return_exceptions=True)
                            return
                        break
                    call = self.queue.popleft()
                    self.running.add(call)
                await sem.acquire()
                t = loop.create_task(self._run_async_call(call, gen, sem))
                tasks.add(t)
                t.add_done_callback(tasks.discard)

    async def _run_async_call(self, call: _Call, gen: int, sem: asyncio.Semaphore) -> None:
        try:
            for d in call.deps:
                if not d.done():
                    await asyncio.wrap_future(d)
            await self._invoke(call, gen)
        finally:
            sem.release()

    def _run_call(self, call: _Call, gen: int) -> None:
        for d in call.deps:
            try:
                d.exception()
            except BaseException:
                pass
        coro = self._invoke(call, gen)
        try:
            coro.send(None)
        except StopIteration:
            pass

    async def _invoke(self, call: _Call, gen: int) -> None:
        """Run one call (awaiting it if it is a coroutine) and complete its refs."""
        for r in call.refs:
            r.set_running_or_notify_cancel()
        name = f"{self.class_name}.{call.method}"
        values: list[Any] = []
        error: BaseException | None = None
        with running_task(self._context(call.refs[0].id)):
            try:
                with resolving(self.backend):
                    args, kwargs = serialization.loads(call.blob.data, call.blob.buffers)
                for d in call.deps:
                    if d.cancelled() or d._exception is not None:
                        d.result(0)
                args, kwargs = execution.resolve_args(args, kwargs)
                result = getattr(self._instance, call.method)(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
                values = [
                    _store(v, self.backend, name)
                    for v in execution.split_returns(result, call.options.num_returns, name)
                ]
            except TaskError as exc:  # a failed argument: its error, unchanged
                error = exc if exc.__traceback__ is None else execution.wrap_exception(exc, name)
            except BaseException as exc:
                error = execution.wrap_exception(exc, name)
        self._complete(call, gen, values, error)

    def _complete(self, call: _Call, gen: int, values: list[Any],
                  error: BaseException | None) -> None:
        with self._cv:
            self.running.discard(call)
            if gen != self.generation:
                return  # killed meanwhile: the call was failed or re-queued already
            for r in call.refs:
                self._calls.pop(r.id, None)
        for i, r in enumerate(call.refs):
            if not r.done():
                if error is not None:
                    r.set_exception(error)
                else:
                    r.set_result(values[i])

    # ------------------------------------------------------------- calls
    def submit(self, method: str, blob: Any, deps: list[ObjectRef[Any]],
               options: MethodOptions, refs: list[ObjectRef[Any]]) -> None:
        call = _Call(method, blob, deps, options, refs, self.options.max_task_retries)
        accepted = False
        with self._cv:
            if self.state != "dead":
                self.queue.append(call)
                for r in refs:
                    self._calls[r.id] = call
                self._cv.notify()
                wake = self._wakeup
                accepted = True
        if not accepted:
            self._fail(call)
        elif wake is not None:
            with contextlib.suppress(RuntimeError):
                wake()

    def cancel_call(self, ref: ObjectRef[Any]) -> bool:
        with self._cv:
            call = self._calls.get(ref.id)
            if call is None or call not in self.queue:
                return False
            self.queue.remove(call)
            for r in call.refs:
                self._calls.pop(r.id, None)
        for r in call.refs:
            r._cancel_now()
        return True

    def _fail(self, call: _Call) -> None:
        err = ActorDiedError(
            f"actor {self.class_name}({self.actor_id}) is dead"
            + (f": {self.death_cause}" if self.death_cause else "")
        )
        for r in call.refs:
            if not r.done():
                if r._state == "PENDING":
                    r.set_running_or_notify_cancel()
                r.set_exception(err)

    def _die(self, cause: str, gen: int) -> None:
        with self._cv:
            if gen != self.generation or self.state == "dead":
                return
            self.state = "dead"
            self.generation += 1
            self.death_cause = cause
            doomed = list(self.queue) + list(self.running)
            self.queue.clear()
            self.running.clear()
            self._calls.clear()
            wake, self._wakeup = self._wakeup, None
            self._cv.notify_all()
        for call in doomed:
            self._fail(call)
        if wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closing
                wake()
        self.backend.actor_resources(self.held, {})
        self.held = {}
        self.backend.actor_gone(self)

    def kill(self, no_restart: bool) -> None:
        """Kill the actor; restart it if allowed (``no_restart=False``)."""
        with self._cv:
            if self.state == "dead":
                return
            restart = not no_restart and self.restarts_left != 0 and self.state != "pending"
            if not restart:
                gen = self.generation
            else:
                if self.restarts_left > 0:
                    self.restarts_left -= 1
                self.generation += 1
                self.state = "restarting"
                in_flight = list(self.running)
                self.running.clear()
                retry = [c for c in in_flight if c.retries_left != 0]
                for c in retry:
                    c.retries_left -= 1 if c.retries_left > 0 else 0
                self.queue.extendleft(reversed(retry))
                lost = [c for c in in_flight if c not in retry]
                for c in lost:
                    for r in c.refs:
                        self._calls.pop(r.id, None)
                wake, self._wakeup = self._wakeup, None
                self._cv.notify_all()
        if not restart:
            self._die("it was killed", gen)
            return
        if wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closing
                wake()
            wake = None
        self.death_cause = "it was killed and is restarting"
        for c in lost:
            self._fail(c)
        self.death_cause = ""
        if wake is not None:
            wake()
        self.start()

    def stop(self, wait: bool) -> None:
        """At shutdown: finish queued calls (``wait``) or fail them; then end."""
        with self._cv:
            self._stopping = True
            wake = self._wakeup
            self._cv.notify_all()
        if wake is not None:
            with contextlib.suppress(RuntimeError):
                wake()
        if wait:
            for t in list(self._threads):
                if t is not threading.current_thread():
                    t.join(5.0)
        self._die("the executor was shut down", self.generation)


def _store(value: Any, backend: LocalBackend, name: str) -> Any:
    from ._backend import store

    return store(value, backend, f"return value of {name!r}")


def runtime_of(ctx: TaskContext) -> RuntimeContext:
    return ctx.runtime


def _unwind_pending(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the calls still suspended on a killed actor's loop and let them unwind
    in this thread (their results are dropped: the kill already failed them). Left
    suspended, each would be finalized later by the garbage collector, in another
    thread and context, where leaving its task context raises."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
