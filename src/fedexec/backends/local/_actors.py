"""Actors of the ``local`` backend: an :class:`ActorHost` (its threads, or its event
loop for async actors) runs the calls of one instance in this process.

State of a :class:`LocalActor` (under ``_cv``)::

    state       pending -> alive -> (restarting -> alive)* -> dead
    host        runs the calls of the current incarnation (a restart opens a new one)
    generation  bumped by kill/restart: a constructor of an old generation is void
    held        the resources the actor holds now (creation demand, then lifetime)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ... import serialization
from ..._runtime import RuntimeContext, TaskContext, resolving, running_task
from ...actors import ActorHandle, is_async_class, public_methods
from ...exceptions import ActorDiedError, TaskCancelledError, TaskError
from ...options import ActorOptions, MethodOptions
from ...refs import ObjectRef
from .. import _execution as execution
from .._actor_host import ActorHost

if TYPE_CHECKING:
    from ._backend import LocalBackend

__all__ = ["LocalActor"]


class _Call:
    __slots__ = ("blob", "deps", "key", "method", "options", "refs", "retries_left")

    def __init__(self, method: str, blob: Any, deps: list[ObjectRef[Any]],
                 options: MethodOptions, refs: list[ObjectRef[Any]], retries: int):
        self.method = method
        self.blob = blob
        self.deps = deps
        self.options = options
        self.refs = refs
        self.key = refs[0].id
        self.retries_left = retries


class LocalActor:
    """One actor of the local backend (see the module docstring); the runner of
    its host's calls."""

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
        self._calls: dict[str, _Call] = {}
        self.generation = 0
        self.restarts_left = options.max_restarts
        self.held: dict[str, float] = options.demand(1.0)  # acquired by the scheduler
        self.death_cause = ""
        self.host = self._new_host()

    def _new_host(self) -> ActorHost[_Call]:
        return ActorHost(self, concurrency=self.concurrency, is_async=self.is_async,
                         name=f"{self.class_name}-{self.actor_id[-6:]}")

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
        """Build the instance on its host (the scheduler granted its creation resources)."""
        with self._cv:
            if self.state == "dead":
                return
            gen, host = self.generation, self.host
        host.start(lambda: self._construct(gen))

    def _context(self, task_id: str | None) -> TaskContext:
        runtime = self.backend._runtime_for(task_id, self.actor_id, self.namespace)
        return TaskContext(self.backend, runtime, self)

    def _construct(self, gen: int) -> Any:
        """Run ``__init__`` (on the host's thread); the actor dies if it raises."""
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
                raise
        with self._cv:
            if gen != self.generation:
                raise ActorDiedError(f"actor {self.class_name}({self.actor_id}) was killed")
            self.state = "alive"
        lifetime = self.options.demand(0.0)
        self.backend.actor_resources(self.held, lifetime)
        self.held = lifetime
        return instance

    # ------------------------------------------------------ the host's runner
    def context(self, call: _Call) -> contextlib.AbstractContextManager[Any]:
        return running_task(self._context(call.key))

    def waits_for(self, call: _Call) -> Sequence[ObjectRef[Any]]:
        return call.deps

    def arguments(self, call: _Call) -> tuple[str, Sequence[Any], Mapping[str, Any]]:
        for r in call.refs:
            r.set_running_or_notify_cancel()
        with resolving(self.backend):
            args, kwargs = serialization.loads(call.blob.data, call.blob.buffers)
        for d in call.deps:
            if d.cancelled() or d._exception is not None:
                d.result(0)
        args, kwargs = execution.resolve_args(args, kwargs)
        return call.method, args, kwargs

    def finish(self, call: _Call, result: Any, error: BaseException | None) -> None:
        name = f"{self.class_name}.{call.method}"
        values: list[Any] = []
        if error is None:
            try:
                values = [_store(v, self.backend, name)
                          for v in execution.split_returns(result, call.options.num_returns, name)]
            except BaseException as exc:
                error = exc
        if isinstance(error, TaskCancelledError) and error.__traceback__ is None:
            pass  # the host cancelled it: as it is
        elif isinstance(error, TaskError):  # a failed argument: its error, unchanged
            error = error if error.__traceback__ is None else execution.wrap_exception(error, name)
        elif error is not None:
            error = execution.wrap_exception(error, name)
        with self._cv:
            for r in call.refs:
                self._calls.pop(r.id, None)
        for i, r in enumerate(call.refs):
            if not r.done():
                if r._state == "PENDING":
                    r.set_running_or_notify_cancel()
                if error is not None:
                    r.set_exception(error)
                else:
                    r.set_result(values[i])

    # ------------------------------------------------------------- calls
    def submit(self, method: str, blob: Any, deps: list[ObjectRef[Any]],
               options: MethodOptions, refs: list[ObjectRef[Any]]) -> None:
        call = _Call(method, blob, deps, options, refs, self.options.max_task_retries)
        with self._cv:
            accepted = self.state != "dead" and self.host.submit(call.key, call)
            if accepted:
                for r in refs:
                    self._calls[r.id] = call
        if not accepted:
            self._fail(call)

    def cancel_call(self, ref: ObjectRef[Any]) -> bool:
        with self._cv:
            call = self._calls.get(ref.id)
            host = self.host
        if call is None:
            return False
        if host.cancel(call.key) is None:
            return host.interrupt(call.key)
        with self._cv:
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
            queued, running = self.host.close()
            self._calls.clear()
        for call in queued + running:
            self._fail(call)
        self.backend.actor_resources(self.held, {})
        self.held = {}
        self.backend.actor_gone(self)

    def kill(self, no_restart: bool) -> None:
        """Kill the actor; restart it if allowed (``no_restart=False``)."""
        with self._cv:
            if self.state == "dead":
                return
            restart = not no_restart and self.restarts_left != 0 and self.state != "pending"
            gen = self.generation
            if restart:
                if self.restarts_left > 0:
                    self.restarts_left -= 1
                self.generation += 1
                self.state = "restarting"
                queued, in_flight = self.host.close()
                retry = [c for c in in_flight if c.retries_left != 0]
                for c in retry:
                    c.retries_left -= 1 if c.retries_left > 0 else 0
                lost = [c for c in in_flight if c not in retry]
                for c in lost:
                    for r in c.refs:
                        self._calls.pop(r.id, None)
                self.host = self._new_host()
                for c in retry + queued:
                    self.host.submit(c.key, c)
        if not restart:
            self._die("it was killed", gen)
            return
        self.death_cause = "it was killed and is restarting"
        for c in lost:
            self._fail(c)
        self.death_cause = ""
        self.start()

    def stop(self, wait: bool) -> None:
        """At shutdown: finish queued calls (``wait``) or fail them; then end."""
        if wait:
            self.host.drain(_DRAIN_S)
        self._die("the executor was shut down", self.generation)


#: How long a graceful shutdown waits for an actor's queued and running calls.
_DRAIN_S = 5.0


def _store(value: Any, backend: LocalBackend, name: str) -> Any:
    from ._backend import store

    return store(value, backend, f"return value of {name!r}")


def runtime_of(ctx: TaskContext) -> RuntimeContext:
    return ctx.runtime
