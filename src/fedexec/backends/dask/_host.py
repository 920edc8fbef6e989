"""Actors inside a Dask worker process: the lifetime task and the calls.

An actor is one long-running Dask task, ``run_actor``, that builds the instance,
keeps it in this process (``_HOSTED``) and waits for a command (stop, restart)
until it is killed. It holds the actor's resources for its whole life (Dask
releases a task's resources only when it ends): its creation demand while
``__init__`` runs, then only the lifetime demand (the rest is lent back, as
Ray's default ``num_cpus=1`` while creating, 0 while alive). It secedes from the
thread pool, so an idle actor holds no task slot.

Method calls do not go through the scheduler. Each caller holds a direct
channel to this worker (``_channel``; the worker's handler ``CHANNEL_OP``,
installed by ``run_actor``)::

    channel ─ calls ─▶ _serve ─▶ Host.accept ─▶ the actor's threads (one when
                                                 max_concurrency == 1: arrival order)
                                                   │ _execute: args (waiting for top-
                                                   │ level refs), method, store result
    channel ◀─ replies (batched) ◀─────────────────┘   result kept in Host.results
    export(actor, key) ─ a Dask task pinned here ─▶ Host.results[key] (a ref that
                                                     must become a Dask key)
    channel ─ release ─▶ Host.release (the caller dropped its refs)

A failed call returns :class:`Failed` (the error to raise in the caller).

Events on the actor's topic ``fedexec-actor-<id>`` (callers subscribe)::

    ready  {"g": generation, "a": worker address,
            "r": restarts left, "t": max_task_retries}                (from here)
    died   {"cause": ...}   lost {"g": ...}                           (from the owner)

State of one :class:`Host` (under ``cv``)::

    state     starting -> alive -> (restarting -> alive)* -> dead
    gen       bumped by every restart and by death: a call that started under an
              older generation fails with ActorDiedError
    started   keys of calls that have started (too late to cancel)
    cancelled keys of calls cancelled before they started
    pending / results / released   direct calls accepted / their results until
              the caller drops its refs / dropped before they finished
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import distributed
from dask.context import thread_state  # distributed.worker's: it sets the task key there
from distributed.comm.core import CommClosedError
from distributed.protocol.serialize import to_serialize

from ... import serialization
from ..._runtime import TaskContext, resolving, running_task
from ...exceptions import ActorDiedError, ObjectLostError, TaskCancelledError
from .. import _execution as execution
from ._batch import Batcher
from ._common import ActorSpec, Blob, CallSpec, Failed
from ._worker import (
    Running,
    _ArgFailed,
    adjust_resources,
    fill_deps,
    store,
    worker_backend,
)

__all__ = ["CHANNEL_OP", "actor_topic", "cancel_call", "export", "install_channel",
           "kill_host", "run_actor"]

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
        self.namespace = spec.namespace
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
        self.worker: distributed.Worker | None = None  # set by run_actor, with
        self.client: distributed.Client | None = None  # the worker's client
        # Direct calls (under cv): accepted and not finished; finished results kept
        # until the caller drops its refs (an export reads them); keys the caller
        # dropped before the call finished.
        self.pending: set[str] = set()
        self.results: dict[str, Any] = {}
        self.released: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def accept(self, spec: CallSpec, key: str, replies: _Replies) -> None:
        """A call from a channel: run it on the actor's threads, in arrival order
        (one thread when ``max_concurrency == 1``)."""
        if self.state == "dead":
            replies.send(key, Failed(self.dead_error()))
            return
        with self.cv:
            self.pending.add(key)
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.concurrency, thread_name_prefix=f"fedexec-actor-{self.actor_id[-6:]}")
            pool = self._pool
        pool.submit(_run_direct, self, spec, key, replies)

    def release(self, keys: list[str]) -> None:
        """The caller dropped its refs to these results."""
        with self.cv:
            for key in keys:
                if self.results.pop(key, None) is None and key in self.pending:
                    self.released.add(key)

    def dead_error(self) -> ActorDiedError:
        return ActorDiedError(
            f"actor {self.class_name}({self.actor_id}) is dead"
            + (f": {self.cause}" if self.cause else ""))

    # ------------------------------------------------------------ lifecycle
    def construct(self, spec: ActorSpec, deps: tuple[Any, ...], st: Running) -> bool:
        """Run ``__init__`` (again, on a restart); False if it raised (now dead)."""
        backend = st.backend
        ctx = TaskContext(backend, backend.runtime_for(None, self.actor_id, self.namespace), st)
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
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            if self.loop_thread is not None:
                self.loop_thread.join(5.0)


def _publish(worker: distributed.Worker, host: Host, spec: ActorSpec) -> None:
    worker.log_event(actor_topic(host.actor_id),
                     {"e": "ready", "g": host.gen, "a": worker.address,
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
    host.worker, host.client = worker, distributed.get_client()
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
        install_channel(worker)
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


def _execute(host: Host, spec: CallSpec, key: str) -> Any:
    """Run one call on this thread: its stored result (a Blob, a tuple of them, or
    :class:`Failed`). Top-level refs in its arguments are waited for here."""
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
    try:
        backend = worker_backend(spec.job, host.worker, host.client)
        ctx = TaskContext(backend,
                          backend.runtime_for(spec.task_id, spec.actor_id, host.namespace))
        with running_task(ctx):
            with resolving(backend):
                args, kwargs = serialization.loads(spec.call)
            args, kwargs = fill_deps(args, kwargs, (), backend)
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
    return out


def _run_direct(host: Host, spec: CallSpec, key: str, replies: _Replies) -> None:
    out = _execute(host, spec, key)
    with host.cv:
        host.pending.discard(key)
        if key in host.released:
            host.released.discard(key)
        else:
            host.results[key] = out
        host.cv.notify_all()
    replies.send(key, out)


# ------------------------------------------------------------ the direct channel
CHANNEL_OP = "fedexec_actor_calls"

#: How long an export waits for a call it has not seen arrive on a channel.
EXPORT_GRACE_S = 30.0


def install_channel(worker: distributed.Worker) -> None:
    """Let callers open direct channels to this worker (see ``_channel``)."""
    if CHANNEL_OP not in worker.handlers:

        def fedexec_actor_calls(comm: Any) -> Any:  # Dask passes the comm first
            return _serve(comm, worker)

        worker.handlers[CHANNEL_OP] = fedexec_actor_calls


async def _serve(comm: Any, worker: distributed.Worker) -> None:
    """One caller's channel: calls in, replies out, until the caller closes it."""
    replies = _Replies(comm, worker)
    try:
        while True:
            msg = await comm.read()
            for actor_id, key, spec in msg.get("calls") or ():
                host = _HOSTED.get(actor_id)
                if host is None:
                    replies.send(key, Failed(ActorMissing(actor_id)))
                else:
                    host.accept(spec, key, replies)
            for actor_id, keys in msg.get("release") or ():
                host = _HOSTED.get(actor_id)
                if host is not None:
                    host.release(keys)
    except (CommClosedError, OSError):
        pass
    finally:
        replies.close()


class _Replies:
    """The results going back on one channel (one write per burst)."""

    def __init__(self, comm: Any, worker: distributed.Worker):
        self.comm = comm
        self.batch = Batcher(worker.loop, self._write)

    def send(self, key: str, out: Any) -> None:
        self.batch.add((key, out))

    def close(self) -> None:
        self.batch.stop()

    async def _write(self, replies: list[tuple[str, Any]]) -> None:
        try:
            await self.comm.write({"replies": to_serialize(replies)},
                                  serializers=("dask", "pickle"))
        except Exception:  # the caller went away
            self.batch.stop()


def export(actor_id: str, key: str, index: int) -> Any:
    """A Dask task on the actor's worker: the result of direct call ``key`` (item
    ``index`` of it for ``num_returns > 1``), so that a ref to it can be a Dask
    dependency or travel to another process."""
    host = _HOSTED.get(actor_id)
    if host is None:
        return Failed(ObjectLostError(f"the result of actor call {key!r} was lost with "
                                      "its actor's worker"))
    distributed.secede()
    with host.cv:
        deadline = time.monotonic() + EXPORT_GRACE_S
        while key not in host.results:
            # Not here yet, and not running: the call may still be on its way (the
            # export came through the scheduler), or its result was dropped.
            if key in host.released or (key not in host.pending
                                        and time.monotonic() > deadline):
                return Failed(ObjectLostError(
                    f"the result of actor call {key!r} is not on its actor's worker"))
            host.cv.wait(0.1)
        out = host.results[key]
    if isinstance(out, Failed) or not isinstance(out, tuple):
        return out
    return out[index]


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
