"""The driver's side of the lease conversation (see ``_protocol``): what the
spark backend does with each message a lease sends, on the channel thread.

Handlers never wait for anything but a short lock: requests are answered at
once, and ``Ready`` for a watched ref is sent by the ref's done-callback. A lease
whose connection closes while it runs a task has lost its Python worker: the
task is retried (``max_retries``) or fails with ``WorkerCrashedError``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import cloudpickle

from ...exceptions import BrokenExecutorError, TaskCancelledError, WorkerCrashedError
from ...refs import ObjectRef
from .._execution import settle
from . import _cluster as cluster
from . import _protocol as msg
from ._channel import Peer
from ._leases import LeaseRecord, describe_error
from ._runtime import INLINE_MAX
from ._state import DriverState
from ._tasks import Task
from ._values import Stored, dump_error, dump_value, load_error

__all__ = ["LeaseHandlers"]

logger = logging.getLogger(__name__)

#: Leases that failed to start in a row before the waiting tasks fail.
MAX_LAUNCH_FAILURES = 3


class LeaseHandlers(DriverState):
    """Mixin of :class:`~._backend.SparkBackend`: the ``_channel.Handler`` part.
    It works on the backend's state (``_lock``, ``_tasks``, ``_leases``, ...) as
    declared in ``_state`` and described in ``_backend``'s docstring."""

    def on_message(self, peer: Peer, m: Any) -> None:
        """A lease's message (``_channel.Handler``)."""
        try:
            handler = self._HANDLERS.get(type(m))
            if handler is not None:
                handler(self, peer, m)
        except Exception:  # a bug: hang up rather than leave the lease waiting forever
            logger.exception("fedexec spark: handling %s failed; ending its lease",
                             type(m).__name__)
            peer.close()

    def on_disconnect(self, peer: Peer) -> None:
        """A lease's connection closed: the lease is over (``_channel.Handler``)."""
        if peer.lease is not None:
            self._end_lease(peer.lease)

    def _on_hello(self, peer: Peer, m: msg.Hello) -> None:
        with self._lock:
            lease = self._leases.get(m.lease_id)
            if (lease is not None and lease.state == "starting" and lease.peer is None
                    and not self._stopping):
                lease.peer = peer
                lease.state = "connected"
                peer.lease = lease
                self._launch_failures = 0
            else:  # unknown, connected already, or the executor is stopping
                lease = None
        if lease is None:
            peer.send(msg.Stop())
            peer.close()
            return
        peer.send(msg.Welcome(self.uid, self.job_id, self.config.namespace or "default",
                              self._node_for(m), self._initializer,
                              [p for p in sys.path if p]))

    def _on_idle(self, peer: Peer, m: msg.Idle) -> None:
        lease = peer.lease
        with self._lock:
            if lease is None or lease.state != "connected":
                return
            self._park(lease)
            sends = self._assign_idle()
        self._send_assignments(sends)

    def _on_done(self, peer: Peer, m: msg.Done) -> None:
        lease = peer.lease
        with self._lock:
            task = lease.task if lease is not None else None
            if task is None or task.id != m.task_id:
                return
            self._release(task)
            task.lend_depth = 0
            task.state = "ending"
            self._park(lease)
            cancelled = task.cancel_requested
            keep = [r for r in (self._refs.get(i) for i in m.contained) if r is not None]
        if cancelled:
            self._finish(task, error=TaskCancelledError(f"task {task.name!r} was cancelled"))
        elif m.error is not None:
            self._finish(task, error=load_error(m.error, task.name))
        else:
            self._finish(task, [Stored(v, self, keep) for v in m.values or ()])
        self._schedule()

    def _on_broken(self, peer: Peer, m: msg.Broken) -> None:
        with self._lock:
            if self._broken is None:
                self._broken = m.message
            doomed = [t for t in self._tasks.values()
                      if t.state in ("waiting", "queued", "unassigned")]
        err = BrokenExecutorError(self._broken_message())
        for task in doomed:
            self._finish(task, error=err)

    def _on_block(self, peer: Peer, m: msg.Block) -> None:
        with self._lock:
            task = self._tasks.get(m.task_id)
            if task is None or task.state != "running":
                return
            task.lend_depth += 1
            if task.lend_depth == 1:
                self._pool.release(task.demand)
        self._schedule()

    def _on_unblock(self, peer: Peer, m: msg.Unblock) -> None:
        with self._lock:
            task = self._tasks.get(m.task_id)
            if task is None or task.state != "running" or task.lend_depth == 0:
                return
            task.lend_depth -= 1
            if task.lend_depth == 0:
                self._pool.acquire(task.demand)

    def _on_submit(self, peer: Peer, m: msg.Submit) -> None:
        refs: list[ObjectRef[Any]] = []

        def submit() -> bool:
            options = cloudpickle.loads(m.options)
            self._check_submit(options, m.name)
            keep = [self._known_ref(i) for i in m.contained]
            deps = [self._known_ref(i) for i in m.deps]
            parent = self._tasks.get(m.parent)
            refs.extend(self._create_task(m.name, m.fn, m.call, deps, keep, options, parent,
                                          m.ref_ids))
            return True

        _reply(peer, m.req, submit)
        for r in refs:
            r.add_done_callback(functools.partial(self._push_ready, peer))

    def _on_put(self, peer: Peer, m: msg.Put) -> None:
        keep = [self._known_ref(i) for i in m.contained]
        ref: ObjectRef[Any] = ObjectRef(m.ref_id, self, "put")
        settle(ref, Stored(m.data, self, keep))
        self._refs[ref.id] = ref
        parent = self._tasks.get(m.parent)
        if parent is not None:
            parent.holds.append(ref)
        elif peer.lease is not None:  # put outside a task: alive while the lease is
            peer.lease.holds.append(ref)

    def _on_watch(self, peer: Peer, m: msg.Watch) -> None:
        for ref_id in m.ref_ids:
            ref = self._known_ref(ref_id)
            ref.add_done_callback(functools.partial(self._push_ready, peer))

    def _push_ready(self, peer: Peer, ref: ObjectRef[Any]) -> None:
        if peer.closed:
            return
        if ref.cancelled():
            error = TaskCancelledError(f"{ref!r} was cancelled")
            ready = msg.Ready(ref.id, error=dump_error(error))
        elif ref._exception is not None:
            ready = msg.Ready(ref.id, error=dump_error(ref._exception))
        else:
            try:
                data = self._data_of(ref)
            except BaseException as exc:
                ready = msg.Ready(ref.id, error=dump_error(exc))
            else:
                ready = (msg.Ready(ref.id, data) if len(data) <= INLINE_MAX
                         else msg.Ready(ref.id, lazy=True))
        peer.send(ready)

    def _data_of(self, ref: ObjectRef[Any]) -> bytes:
        value = ref._result
        if isinstance(value, Stored) and value.backend is self:
            return value.data
        return dump_value(ref.result(0), f"object {ref.id}")[0]

    def _on_fetch(self, peer: Peer, m: msg.Fetch) -> None:
        _reply(peer, m.req, lambda: self._data_of(self._known_ref(m.ref_id)))

    def _on_cancel(self, peer: Peer, m: msg.Cancel) -> None:
        def cancel() -> bool:
            ref = self._known_ref(m.ref_id)
            if m.pending_only:
                return self.cancel_pending(ref)
            return self.cancel(ref, force=m.force, recursive=m.recursive)

        _reply(peer, m.req, cancel)

    def _on_query(self, peer: Peer, m: msg.Query) -> None:
        queries = {"cluster_resources": self.cluster_resources,
                   "available_resources": self.available_resources,
                   "nodes": self.nodes}
        _reply(peer, m.req, lambda: queries[m.what]())

    _HANDLERS: dict[type, Callable[[LeaseHandlers, Peer, Any], None]] = {
        msg.Hello: _on_hello,
        msg.Idle: _on_idle,
        msg.Done: _on_done,
        msg.Broken: _on_broken,
        msg.Block: _on_block,
        msg.Unblock: _on_unblock,
        msg.Submit: _on_submit,
        msg.Put: _on_put,
        msg.Watch: _on_watch,
        msg.Fetch: _on_fetch,
        msg.Cancel: _on_cancel,
        msg.Query: _on_query,
    }

    def _end_lease(self, lease: LeaseRecord) -> None:
        """The lease is over (its connection closed or its job ended)."""
        outcome: BaseException | None = None
        with self._lock:
            if lease.state == "ended":
                return
            lease.state = "ended"
            lease.holds = []
            self._leases.pop(lease.id, None)
            with contextlib.suppress(ValueError):
                self._idle_leases.remove(lease)
            task, lease.task = lease.task, None
            if task is not None and task.state == "running":
                self._release(task)
                task.lend_depth = 0
                task.lease = None
                if task.cancel_requested:
                    task.state = "ending"
                    outcome = TaskCancelledError(f"task {task.name!r} was cancelled")
                elif task.retries_left != 0:
                    if task.retries_left > 0:
                        task.retries_left -= 1
                    task.state = "queued"
                    self._scheduler.enqueue(task, task.demand)
                else:
                    task.state = "ending"
                    outcome = WorkerCrashedError(
                        f"the Spark Python worker running task {task.name!r} died (it "
                        "exited, was killed, or its executor was lost) and its max_retries "
                        "are exhausted; raise max_retries if the crash was transient")
            self._want()
        if lease.peer is not None:
            lease.peer.close()
        if task is not None and outcome is not None:
            self._finish(task, error=outcome)
        self._schedule()

    def _on_job_end(self, lease: LeaseRecord, error: BaseException | None) -> None:
        """A lease's Spark job ended (a launcher thread)."""
        doomed: list[Task] = []
        with self._lock:
            never_connected = lease.peer is None and lease.state == "starting"
            if never_connected and not self._stopping:  # it never ran: a failed start
                self._launch_failures += 1
                if self._launch_failures >= MAX_LAUNCH_FAILURES:
                    self._launch_failures = 0
                    doomed = list(self._unassigned)
        self._end_lease(lease)
        if doomed:
            why = describe_error(error) if error else "it ended without connecting"
            err = WorkerCrashedError(
                f"the Spark jobs that were to run fedexec tasks failed {MAX_LAUNCH_FAILURES} "
                f"times in a row ({why}); is fedexec installed for the Python the Spark "
                f"executors run ({self.sc.pythonExec!r}, see PYSPARK_PYTHON), and can they "
                f"reach the driver ({self._address[0]})?")
            for task in doomed:
                self._finish(task, error=err)

    def _node_for(self, hello: msg.Hello) -> str:
        """The node id of the machine a lease runs on."""
        if self.local:
            return self.node_id
        mine = set(hello.addresses) | {hello.host}
        for node in self.nodes():
            if node["host"] in mine or cluster.resolve(node["host"]) in mine:
                return str(node["node_id"])
        return cluster.node_id(self.app_id, hello.host)


def _reply(peer: Peer, req: int, answer: Callable[[], Any]) -> None:
    """Answer request ``req`` with ``answer()``'s value, or with the error it raised."""
    try:
        value = answer()
    except BaseException as exc:
        peer.send(msg.Reply(req, error=dump_error(exc)))
        return
    peer.send(msg.Reply(req, value))
