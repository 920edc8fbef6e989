"""The runtime that tasks see inside a lease: ``fedexec.*`` called by a task
running on a Spark executor goes to the driver over the lease's connection.

State (one per lease, under ``_lock``):
    _refs     {ref id: ObjectRef}  (weak)   refs known here; the driver sends
                                             ``Ready`` when a pending one is done
    _replies  {request id: Future}           requests waiting for their ``Reply``
    _closed   the connection is gone: requests fail at once

Refs made here (``submit``, ``put``) are owned by the driver: it keeps them alive
while the task that made them runs, and afterwards while a result holds them.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..._ids import new_id
from ..._runtime import RuntimeContext, current_task
from ...config import RuntimeConfig
from ...exceptions import ObjectLostError
from ...options import TaskOptions
from ...refs import ObjectRef
from .. import _execution as execution
from .._execution import settle
from .._net import node_ip
from . import _protocol as msg
from ._base import SparkBase
from ._values import Fetched, Stored, dump_value, load_error, serialize_call

if TYPE_CHECKING:
    from ._worker import Lease

__all__ = ["LeaseRuntime"]

_PENDING = cf._base.PENDING

#: Ready values up to this size travel with the Ready message; larger ones are
#: fetched when the task reads them.
INLINE_MAX = 1 << 20


class LeaseRuntime(SparkBase):
    """The Backend of code running inside a lease (see the module docstring)."""

    def __init__(self, lease: Lease, welcome: msg.Welcome):
        super().__init__(RuntimeConfig(namespace=welcome.namespace))

        self._lease = lease
        self.welcome = welcome
        self._lock = threading.Lock()
        self._refs: weakref.WeakValueDictionary[str, ObjectRef[Any]] = (
            weakref.WeakValueDictionary())
        self._replies: dict[int, cf.Future[Any]] = {}
        self._counter = itertools.count(1)
        self._closed = False
        self.worker_id = f"{lease.host}:{lease.pid}"

    # ------------------------------------------------------------------ plumbing
    def request(self, make: Callable[[int], Any]) -> Any:
        """Send ``make(request id)`` and wait for the driver's answer."""
        fut: cf.Future[Any] = cf.Future()
        with self._lease.shielded():  # a cancel interrupts the wait, not the bookkeeping
            with self._lock:
                if self._closed:
                    raise ObjectLostError("the connection to the fedexec driver is closed")
                req = next(self._counter)
                self._replies[req] = fut
            if not self._lease.send(make(req)):
                with self._lock:
                    self._replies.pop(req, None)
                raise ObjectLostError("the connection to the fedexec driver is closed")
        return fut.result()

    def on_reply(self, reply: msg.Reply) -> None:
        """A Reply arrived (reader thread)."""
        with self._lock:
            fut = self._replies.pop(reply.req, None)
        if fut is None:
            return
        if reply.error is not None:
            fut.set_exception(load_error(reply.error, "request"))
        else:
            fut.set_result(reply.value)

    def on_ready(self, ready: msg.Ready) -> None:
        """A watched ref is done (reader thread)."""
        ref = self._refs.get(ready.ref_id)
        if ref is None or ref.done():
            return
        if ready.error is not None:
            settle(ref, error=load_error(ready.error, ref._task_name or ready.ref_id))
        elif ready.lazy:
            settle(ref, Fetched(self, ready.ref_id))
        else:
            settle(ref, Stored(ready.data or b"", self))

    def on_closed(self) -> None:
        """The connection is gone: fail what waits on it."""
        with self._lock:
            self._closed = True
            waiting, self._replies = list(self._replies.values()), {}
        err = ObjectLostError("the connection to the fedexec driver was lost")
        for fut in waiting:
            with contextlib.suppress(cf.InvalidStateError):
                fut.set_exception(err)
        for ref in list(self._refs.values()):
            if not ref.done():
                settle(ref, error=err)

    def fetch(self, ref_id: str) -> bytes:
        """The pickled value of a large object (kept on the driver until read)."""
        data: bytes = self.request(lambda req: msg.Fetch(req, ref_id))
        return data

    def preload(self, deps: dict[str, bytes | int], broadcasts: dict[int, Any]
                ) -> list[ObjectRef[Any]]:
        """Completed refs for a task's direct arguments (before its call unpickles)."""
        from ._values import Broadcasted

        made = []
        for ref_id, payload in deps.items():
            ref: ObjectRef[Any] = ObjectRef(ref_id, self)
            if isinstance(payload, int):
                settle(ref, Broadcasted(self, broadcasts[payload]))
            else:
                settle(ref, Stored(payload, self))
            self._refs[ref_id] = ref
            made.append(ref)
        return made

    def _current_task_id(self) -> str:
        ctx = current_task()
        if ctx is not None and ctx.backend is self and ctx.runtime.task_id:
            return ctx.runtime.task_id
        return self._lease.current_task_id() or ""

    # ------------------------------------------------------------------ Backend
    def submit(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
               options: TaskOptions) -> list[ObjectRef[Any]]:
        name = options.name or getattr(fn, "__qualname__", None) or repr(fn)
        fn_data, call = serialize_call(fn, args, kwargs)
        deps = [r.id for r in execution.top_level_refs(args, kwargs)]
        contained = [r.id for r in call.contained if isinstance(r, ObjectRef)]
        refs: list[ObjectRef[Any]] = [ObjectRef(new_id(), self, name)
                                      for _ in range(options.num_returns)]
        for ref in refs:  # before asking: the driver may answer Ready at once
            self._refs[ref.id] = ref
        submit = msg.Submit(0, self._current_task_id(), [r.id for r in refs], name, fn_data,
                            call.data, deps, contained, cloudpickle.dumps(options))

        def make(req: int) -> msg.Submit:
            submit.req = req
            return submit

        self.request(make)
        return refs

    def put(self, value: Any) -> ObjectRef[Any]:
        data, contained = dump_value(value, "the value passed to put()")
        ref: ObjectRef[Any] = ObjectRef(new_id(), self, "put")
        ids = [r.id for r in contained if isinstance(r, ObjectRef)]
        if not self._lease.send(msg.Put(ref.id, self._current_task_id(), data, ids)):
            raise ObjectLostError("the connection to the fedexec driver is closed")
        settle(ref, Stored(data, self, list(contained)))
        self._refs[ref.id] = ref
        return ref

    def resolve_ref(self, ref_id: str) -> ObjectRef[Any]:
        ref = self._refs.get(ref_id)
        if ref is not None:
            return ref
        with self._lease.shielded():
            with self._lock:
                ref = self._refs.get(ref_id)
                if ref is None:
                    ref = ObjectRef(ref_id, self)
                    self._refs[ref_id] = ref
                    watch = True
                else:
                    watch = False
            if watch and not self._lease.send(msg.Watch([ref_id])):
                settle(ref, error=ObjectLostError("the connection to the fedexec driver is closed"))
        return ref

    @contextlib.contextmanager
    def blocked(self, refs: Sequence[ObjectRef[Any]] = (), timeout: float | None = None,
                done: Callable[[], bool] | None = None) -> Iterator[None]:
        """A task waiting in ``get`` lends its resources to the tasks it waits for."""
        task_id = self._lease.lend_begin()
        try:
            yield
        finally:
            if task_id:
                self._lease.lend_end(task_id)

    def cancel(self, ref: ObjectRef[Any], *, force: bool, recursive: bool) -> bool:
        return bool(self.request(lambda req: msg.Cancel(req, ref.id, force, recursive)))

    def cancel_pending(self, ref: ObjectRef[Any]) -> bool:
        if self.request(lambda req: msg.Cancel(req, ref.id, False, False, True)):
            if ref._state == _PENDING:
                ref._cancel_now()
            return True
        return False

    def cluster_resources(self) -> dict[str, float]:
        resources: dict[str, float] = self.request(lambda req: msg.Query(req, "cluster_resources"))
        return resources

    def available_resources(self) -> dict[str, float]:
        resources: dict[str, float] = self.request(lambda req: msg.Query(req, "available_resources"))
        return resources

    def nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self.request(lambda req: msg.Query(req, "nodes"))
        return nodes

    def runtime_for(self, task_id: str | None) -> RuntimeContext:
        """The runtime context of a task running in this lease."""
        w = self.welcome
        return RuntimeContext(w.node_id, self.worker_id, w.job_id, task_id, None, self.name,
                              node_ip(self._lease.host), (), w.namespace)

    def runtime_context(self) -> RuntimeContext:
        return self.runtime_for(None)

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """The lease's runtime is not the user's to stop: nothing to do."""
