"""Actors inside a Dask worker process: the lifetime task and the call wrapper.

An actor is one long-running Dask task, ``run_actor``, that builds the instance,
keeps it in this process (``_HOSTED``) and waits for a command (stop, restart)
until it is killed. It holds the actor's resources for its whole life (Dask
releases a task's resources only when it ends): its creation demand while
``__init__`` runs, then only the lifetime demand (the rest is lent back, as
Ray's default ``num_cpus=1`` while creating, 0 while alive). It secedes from the
thread pool, so an idle actor holds no task slot.

Each method call is a Dask task ``run_call(spec, previous_call, *dependency_values)``
pinned to the actor's worker. With ``max_concurrency == 1`` each caller chains
its calls (``previous_call`` is a Dask dependency on the caller's last call), so
they run in submission order; calls from different callers are serialised by
the actor's semaphore. A failed call stores :class:`Failed` instead of raising,
so the chain goes on.

Events on the actor's topic ``fedexec-actor-<id>`` (callers subscribe)::

    ready  {"g": generation, "a": worker address, "c": chain calls?,
            "r": restarts left, "t": max_task_retries}                (from here)
    died   {"cause": ...}   lost {"g": ...}                           (from the owner)

A call's small result also goes to its caller's own topic ("done"), as a task's.

State of one :class:`Host` (under ``cv``)::

    state     starting -> alive -> (restarting -> alive)* -> dead
    gen       bumped by every restart and by death: a call that started under an
              older generation fails with ActorDiedError
    started   keys of calls that have started (too late to cancel)
    cancelled keys of calls cancelled before they started
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
from typing import Any

import distributed
from distributed.worker import thread_state

from ... import serialization
from ..._context import TaskContext, resolving, running_task
from ...exceptions import ActorDiedError, TaskCancelledError
from .. import _execution as execution
from ._common import ActorSpec, Blob, CallSpec, Failed
from ._worker import (
    Running,
    _ArgFailed,
    adjust_resources,
    fill_deps,
    send_small,
    store,
    worker_backend,
)

__all__ = ["actor_topic", "cancel_call", "kill_host", "run_actor", "run_call"]

_HOSTED: dict[str, Host] = {}
_HOSTED_LOCK = threading.Lock()


def actor_topic(actor_id: str) -> str:
    """The Dask event topic of an actor."""
    return f"fedexec-actor-{actor_id}"


class ActorMissing(Exception):
    """A call reached a worker that does not host the actor (it moved or is gone)."""


class CallInterrupted(ActorDiedError):
    """The actor was killed or restarted while this call ran (``max_task_retries``
    may send it again)."""


class Host:
    """One actor instance living in this process (see the module docstring)."""

    def __init__(self, spec: ActorSpec, key: str):
        self.actor_id = spec.actor_id
        self.class_name = spec.class_name
        self.is_async = spec.is_async
        self.key = key
        self.cv = threading.Condition()
        self.state = "starting"
        self.gen = spec.gen
        self.cause = ""
        self.instance: Any = None
        self.restarts_left = spec.restarts_left
        self.commands: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.cancelled: set[str] = set()
        self.started: set[str] = set()
        self.sem = threading.Semaphore(spec.concurrency)
        self.concurrency = spec.concurrency
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: threading.Thread | None = None
        self.async_sem: asyncio.Semaphore | None = None

    def dead_error(self) -> ActorDiedError:
        return ActorDiedError(
            f"actor {self.class_name}({self.actor_id}) is dead"
            + (f": {self.cause}" if self.cause else ""))

    # ------------------------------------------------------------ lifecycle
    def construct(self, spec: ActorSpec, deps: tuple[Any, ...], st: Running) -> bool:
        """Run ``__init__`` (again, on a restart); False if it raised (now dead)."""
        backend = st.backend
        ctx = TaskContext(backend, backend.executor, backend.runtime_for(None, self.actor_id), st)
        with running_task(ctx):
            try:
                with resolving(backend):
                    cls = serialization.loads(spec.cls)
                    args, kwargs = serialization.loads(spec.call)
                args, kwargs = fill_deps(args, kwargs, deps, backend)
                instance = cls(*args, **kwargs)
            except BaseException as exc:
                if isinstance(exc, _ArgFailed):
                    exc = exc.error
                err = execution.wrap_exception(exc, f"{self.class_name}.__init__")
                self.die(f"its __init__ raised:\n{err}")
                return False
        if self.is_async and self.loop is None:
            self._start_loop()
        with self.cv:
            if self.state == "dead":
                return False
            self.instance = instance
            self.state = "alive"
            self.cv.notify_all()
        return True

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self.async_sem = asyncio.Semaphore(self.concurrency)
            ready.set()
            loop.run_forever()
            loop.close()

        self.loop = loop
        self.loop_thread = threading.Thread(
            target=run, daemon=True, name=f"fedexec-actor-{self.class_name}-{self.actor_id[-6:]}")
        self.loop_thread.start()
        ready.wait()

    def die(self, cause: str) -> None:
        with self.cv:
            if self.state != "dead":
                self.state = "dead"
                self.cause = cause
                self.gen += 1
                self.instance = None
                self.cv.notify_all()
        self.commands.put("stop")

    def close(self) -> None:
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            if self.loop_thread is not None:
                self.loop_thread.join(5.0)


def _publish(worker: distributed.Worker, host: Host, spec: ActorSpec) -> None:
    chain = spec.concurrency == 1 and not spec.is_async
    worker.log_event(actor_topic(host.actor_id),
                     {"e": "ready", "g": host.gen, "a": worker.address, "c": chain,
                      "r": host.restarts_left, "t": spec.task_retries})


def _owner_gone(worker: distributed.Worker, key: str) -> bool:
    ts = worker.state.tasks.get(key)
    return ts is None or ts.state in ("cancelled", "released", "forgotten")


def run_actor(spec: ActorSpec, *deps: Any) -> Any:
    """The lifetime task of an actor (see the module docstring)."""
    worker = distributed.get_worker()
    key = thread_state.key
    backend = worker_backend(spec.job)
    host = Host(spec, key)
    with _HOSTED_LOCK:
        _HOSTED[spec.actor_id] = host
    st = Running(key, worker, backend)
    lent = False
    try:
        if not host.construct(spec, deps, st):
            return Failed(host.dead_error())
        adjust_resources(worker, spec.lend, +1)  # alive: hold only the lifetime demand
        lent = True
        if not st.seceded:
            st.seceded = True
            distributed.secede()
        _publish(worker, host, spec)
        while True:
            try:
                command = host.commands.get(timeout=1.0)
            except queue.Empty:
                if _owner_gone(worker, key):  # the owner released the actor: fate-share
                    host.die("its owner went away")
                    break
                continue
            if command == "stop":
                break
            if command == "restart":
                if not host.construct(spec, deps, st):
                    break
                _publish(worker, host, spec)
        return Blob.of(None, "actor")[0]
    finally:
        if lent:
            adjust_resources(worker, spec.lend, -1)
        host.close()


def run_call(spec: CallSpec, previous: Any, *deps: Any) -> Any:
    """One actor-method call, on the actor's worker (see the module docstring)."""
    key = thread_state.key
    host = _HOSTED.get(spec.actor_id)
    if host is None:
        return Failed(ActorMissing(spec.actor_id))
    distributed.secede()  # calls hold no task slot of the worker
    with host.cv:
        if key in host.cancelled:
            host.cancelled.discard(key)
            return Failed(TaskCancelledError(f"actor call {spec.name!r} was cancelled"))
        host.started.add(key)
        while host.state in ("starting", "restarting"):
            host.cv.wait()
        if host.state == "dead":
            host.started.discard(key)
            return Failed(host.dead_error())
        gen, instance = host.gen, host.instance
    backend = worker_backend(spec.job)
    ctx = TaskContext(backend, backend.executor, backend.runtime_for(spec.task_id, spec.actor_id))
    try:
        with running_task(ctx):
            with resolving(backend):
                args, kwargs = serialization.loads(spec.call)
            args, kwargs = fill_deps(args, kwargs, deps, backend)
            method = getattr(instance, spec.method)
            if host.is_async:
                result = _call_async(host, ctx, method, args, kwargs)
            else:
                with host.sem:
                    result = method(*args, **kwargs)
            del args, kwargs
            out = store(result, spec.num_returns, spec.name, key)
    except _ArgFailed as exc:
        out = Failed(exc.error)
    except BaseException as exc:
        out = Failed(execution.wrap_exception(exc, spec.name))
    with host.cv:
        host.started.discard(key)
        if host.gen != gen:
            return Failed(CallInterrupted(
                f"actor {host.class_name}({host.actor_id}) was killed while "
                f"{spec.name!r} ran"))
    if not isinstance(out, Failed):
        send_small(distributed.get_worker(), spec.job.topic, key, out)
    return out


def _call_async(host: Host, ctx: TaskContext, method: Any, args: Any, kwargs: Any) -> Any:
    async def invoke() -> Any:
        assert host.async_sem is not None
        async with host.async_sem:
            with running_task(ctx):
                result = method(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
                return result

    assert host.loop is not None
    return asyncio.run_coroutine_threadsafe(invoke(), host.loop).result()


# --------------------------------------------------------------- called by client.run
def cancel_call(actor_id: str, key: str, dask_worker: distributed.Worker) -> bool:
    """Cancel call ``key`` if it has not started: True if it never will."""
    host = _HOSTED.get(actor_id)
    if host is None:
        return False
    with host.cv:
        if key in host.started or host.state == "dead":
            return False
        host.cancelled.add(key)
        return True


def kill_host(actor_id: str, no_restart: bool, dask_worker: distributed.Worker) -> str:
    """Kill the actor (restart it if allowed): ``"restarting"``, ``"dead"`` or
    ``"missing"`` (not hosted here)."""
    host = _HOSTED.get(actor_id)
    if host is None:
        return "missing"
    with host.cv:
        if host.state == "dead":
            return "dead"
        if not no_restart and host.restarts_left != 0 and host.state != "starting":
            if host.restarts_left > 0:
                host.restarts_left -= 1
            host.gen += 1
            host.state = "restarting"
            host.instance = None
            host.cv.notify_all()
            host.commands.put("restart")
            return "restarting"
    host.die("it was killed")
    return "dead"
