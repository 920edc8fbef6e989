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

    channel ─ calls ─▶ _serve ─▶ Host.accept ─▶ Host.calls, the shared ActorHost
                                                 (its threads, or its event loop)
                                                   │ arguments (waiting for top-
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
    gen       bumped by every restart and by death
    calls     the ActorHost of the current incarnation: a restart closes it (calls
              running then fail with CallInterrupted, which max_task_retries may
              send again) and moves the calls not started to a new one
    cancelled keys of calls cancelled before they arrived here
    pending / results / released   direct calls accepted / their results until
              the caller drops its refs / dropped before they finished
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import distributed
from dask.context import thread_state  # distributed.worker's: it sets the task key there
from distributed.comm.core import CommClosedError
from distributed.protocol.serialize import to_serialize

from ... import serialization
from ..._runtime import TaskContext, resolving, running_task
from ...exceptions import ActorDiedError, ObjectLostError, TaskCancelledError
from .. import _execution as execution
from .._actor_host import ActorHost
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


class _Direct:
    """A direct call accepted from a channel."""

    __slots__ = ("backend", "key", "replies", "spec")

    def __init__(self, spec: CallSpec, key: str, replies: _Replies):
        self.spec = spec
        self.key = key
        self.replies = replies
        self.backend: Any = None  # the job's backend, found when the call runs


class Host:
    """One actor instance living in this process (see the module docstring); the
    runner of its calls."""

    def __init__(self, spec: ActorSpec, key: str):
        self.actor_id = spec.actor_id
        self.class_name = spec.class_name
        self.namespace = spec.namespace
        self.is_async = spec.is_async
        self.concurrency = spec.concurrency
        self.key = key
        self.cv = threading.Condition()
        self.state = "starting"
        self.gen = spec.gen
        self.cause = ""
        self.restarts_left = spec.restarts_left
        self.commands: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.cancelled: set[str] = set()
        self.worker: distributed.Worker | None = None  # set by run_actor, with
        self.client: distributed.Client | None = None  # the worker's client
        self.calls = self._new_calls()
        # Direct calls (under cv): accepted and not finished; finished results kept
        # until the caller drops its refs (an export reads them); keys the caller
        # dropped before the call finished.
        self.pending: set[str] = set()
        self.results: dict[str, Any] = {}
        self.released: set[str] = set()

    def _new_calls(self) -> ActorHost[_Direct]:
        return ActorHost(self, concurrency=self.concurrency, is_async=self.is_async,
                         name=f"{self.class_name}-{self.actor_id[-6:]}")

    def accept(self, spec: CallSpec, key: str, replies: _Replies) -> None:
        """A call from a channel: queue it on the actor's host (calls start in
        arrival order)."""
        refused: Failed | None = None
        with self.cv:
            if key in self.cancelled:
                self.cancelled.discard(key)
                refused = Failed(TaskCancelledError(f"actor call {spec.name!r} was cancelled"))
            elif self.state == "dead" or not self.calls.submit(key, _Direct(spec, key, replies)):
                refused = Failed(self.dead_error())
            else:
                self.pending.add(key)
        if refused is not None:
            replies.send(key, refused)

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

    def cancel(self, key: str) -> bool:
        """Cancel call ``key`` unless it is too late: True if it will not finish."""
        with self.cv:
            if self.state == "dead" or key in self.results:
                return False
            calls = self.calls
            if key not in self.pending:  # not here yet: refuse it when it comes
                self.cancelled.add(key)
                return True
        call = calls.cancel(key)
        if call is not None:
            self._reply(call, Failed(TaskCancelledError(
                f"actor call {call.spec.name!r} was cancelled")))
            return True
        return calls.interrupt(key)

    # ------------------------------------------------------ the host's runner
    @contextlib.contextmanager
    def context(self, call: _Direct) -> Iterator[None]:
        call.backend = backend = worker_backend(call.spec.job, self.worker, self.client)
        ctx = TaskContext(backend,
                          backend.runtime_for(call.spec.task_id, self.actor_id, self.namespace))
        with running_task(ctx):
            yield

    def waits_for(self, call: _Direct) -> Sequence[Any]:
        return ()  # top-level refs are waited for in arguments()

    def arguments(self, call: _Direct) -> tuple[str, Sequence[Any], Mapping[str, Any]]:
        with resolving(call.backend):
            args, kwargs = serialization.loads(call.spec.call)
        args, kwargs = fill_deps(args, kwargs, (), call.backend)
        return call.spec.method, args, kwargs

    def finish(self, call: _Direct, result: Any, error: BaseException | None) -> None:
        spec = call.spec
        if error is None:
            try:
                out = store(result, spec.num_returns, spec.name, call.key)
            except BaseException as exc:
                error = exc
        if isinstance(error, _ArgFailed):
            out = Failed(error.error)
        elif isinstance(error, TaskCancelledError) and error.__traceback__ is None:
            out = Failed(error)  # the host cancelled it
        elif error is not None:
            out = Failed(execution.wrap_exception(error, spec.name))
        self._reply(call, out)

    def _reply(self, call: _Direct, out: Any) -> None:
        key = call.key
        with self.cv:
            self.pending.discard(key)
            if key in self.released:
                self.released.discard(key)
            else:
                self.results[key] = out
            self.cv.notify_all()
        call.replies.send(key, out)

    # ------------------------------------------------------------ lifecycle
    def construct(self, spec: ActorSpec, deps: tuple[Any, ...], st: Running) -> bool:
        """Run ``__init__`` (again, on a restart) on the actor's host; False if it
        raised (now dead)."""
        backend = st.backend

        def build() -> Any:
            ctx = TaskContext(backend, backend.runtime_for(None, self.actor_id, self.namespace),
                              st)
            with running_task(ctx):
                with resolving(backend):
                    cls = serialization.loads(spec.cls)
                    args, kwargs = serialization.loads(spec.call)
                args, kwargs = fill_deps(args, kwargs, deps, backend)
                return cls(*args, **kwargs)

        with self.cv:
            calls = self.calls
        try:
            calls.start(build).result()
        except BaseException as exc:
            if isinstance(exc, _ArgFailed):
                exc = exc.error
            err = execution.wrap_exception(exc, f"{self.class_name}.__init__")
            self.die(f"its __init__ raised:\n{err}")
            return False
        with self.cv:
            if self.state == "dead":
                return False
            self.state = "alive"
            self.cv.notify_all()
        return True

    def restart(self) -> bool:
        """Kill the instance and build a new one (False: no restart is left)."""
        with self.cv:
            if self.state == "dead" or self.restarts_left == 0 or self.state == "starting":
                return False
            if self.restarts_left > 0:
                self.restarts_left -= 1
            self.gen += 1
            self.state = "restarting"
            queued, running = self.calls.close()
            self.calls = self._new_calls()
            for call in queued:
                self.calls.submit(call.key, call)
            self.commands.put("restart")
        for call in running:
            self._reply(call, Failed(CallInterrupted(
                f"actor {self.class_name}({self.actor_id}) was killed while "
                f"{call.spec.name!r} ran")))
        return True

    def die(self, cause: str) -> None:
        with self.cv:
            if self.state != "dead":
                self.state = "dead"
                self.cause = cause
                self.gen += 1
                self.cv.notify_all()
        self.close()
        self.commands.put("stop")

    def close(self) -> None:
        """No call runs any more: those not finished fail (the actor is dead)."""
        queued, running = self.calls.close()
        for call in queued + running:
            self._reply(call, Failed(self.dead_error()))


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
    # __init__ runs on the actor's own thread, where a secede (a get blocking in
    # it) cannot happen: leave the thread pool now.
    st.seceded = True
    distributed.secede()
    lent = False
    try:
        if not host.construct(spec, deps, st):
            return Failed(host.dead_error())
        adjust_resources(worker, spec.lend, +1)  # alive: hold only the lifetime demand
        lent = True
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


# --------------------------------------------------------------- called by client.run
def cancel_call(actor_id: str, key: str, dask_worker: distributed.Worker) -> bool:
    """Cancel call ``key``: True if it will not finish (it had not started, or it
    was a running call of an async actor, now cancelled)."""
    host = _HOSTED.get(actor_id)
    return host is not None and host.cancel(key)


def kill_host(actor_id: str, no_restart: bool, dask_worker: distributed.Worker) -> str:
    """Kill the actor (restart it if allowed): ``"restarting"``, ``"dead"`` or
    ``"missing"`` (not hosted here)."""
    host = _HOSTED.get(actor_id)
    if host is None:
        return "missing"
    if host.state == "dead":
        return "dead"
    if not no_restart and host.restart():
        return "restarting"
    host.die("it was killed")
    return "dead"
