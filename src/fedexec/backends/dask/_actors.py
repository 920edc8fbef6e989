"""Actors as seen by a caller: creating them, sending calls, killing them.

Every process that calls an actor (the driver, a task, another actor) keeps a
:class:`Proxy` for it: where the actor lives now and the calls it sent. The
process that created the actor owns it: its proxy also watches the actor's
lifetime task (``_host.run_actor``) and restarts it when its worker dies.

Data flow (the worker side is in ``_host``)::

    create ─▶ outbox: run_actor, creation resources ══ runs for the actor's life
                  │ __init__ done: event "ready" (address, generation) on the actor topic
                  ▼
    call ───▶ Proxy ── buffered until ready ──▶ Channel to that worker (``_channel``)
                                                    ─▶ reply ─▶ ObjectRef (its value kept
                                                       here, not in Dask)

A call's ref gets a Dask key only when one is needed (it is passed to a task, or
pickled into another process): ``_export`` submits ``_host.export`` on the actor's
worker, which reads the result the worker keeps until the caller's refs are gone
(a :class:`_Lease` held by them sends the release).

Proxy state (under its ``lock``)::

    state    pending (no address yet) -> alive -> dead; back to pending while the
             owner restarts an actor whose worker died
    buffer   calls waiting for the address, in submission order
    calls    {key: _Call} sent and not finished

A proxy learns where its actor is from the actor's event topic (``_host``): a
non-owner subscribes, replays the past events, and looks again until "ready"
or "died" (its subscription and the replay travel separately). Calls lost with
the actor (its worker died, or it was restarted under them) are sent again
after the restart while ``max_task_retries`` allows, else fail with
``ActorDiedError``.

Named actors: ``{"id", "class_name", "methods"}`` under the scheduler metadata key
``("fedexec", "names", namespace, name)``, claimed atomically on the scheduler's
event loop; a name whose actor's topic says "died" is free again.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import distributed

from ... import serialization
from ..._ids import new_id
from ...actors import ActorHandle, is_async_class, public_methods
from ...exceptions import ActorDiedError
from ...options import ActorOptions, MethodOptions
from ...refs import ObjectRef
from . import _host as host_side
from ._channel import Channel
from ._common import (
    ActorSpec,
    CallSpec,
    DaskRef,
    DaskValue,
    Failed,
    cancel_ref,
    dask_key,
    serialize_call,
    settle,
)

if TYPE_CHECKING:
    from ._backend import DaskBackend

__all__ = ["ActorManager"]

logger = logging.getLogger(__name__)

#: How long a command to an actor's worker (kill, cancel) waits for its answer: a
#: worker that does not answer is taken as gone.
RUN_TIMEOUT_S = 30.0
#: How long shutdown waits for the actor calls still running (``drain``) before it
#: fails them, and how often it says what it waits for meanwhile (at WARNING).
DRAIN_LIMIT_S = 300.0
DRAIN_REPORT_S = 30.0

_TOPICS_LOCK = threading.Lock()
_TOPICS: dict[tuple[str, str], list[weakref.ref[Proxy]]] = {}


def _subscribe(client: distributed.Client, topic: str, proxy: Proxy) -> None:
    """One Dask handler per (client, topic) in this process, fanning out to proxies
    (several runtimes in one worker process share the worker's client)."""
    key = (client.id, topic)
    with _TOPICS_LOCK:
        listeners = _TOPICS.get(key)
        if listeners is None:
            listeners = _TOPICS[key] = []
            client.subscribe_topic(topic, functools.partial(_dispatch, key))
        listeners.append(weakref.ref(proxy))


def _unsubscribe(client: distributed.Client, topic: str, proxy: Proxy) -> None:
    key = (client.id, topic)
    with _TOPICS_LOCK:
        listeners = [r for r in _TOPICS.get(key, []) if r() not in (None, proxy)]
        if listeners:
            _TOPICS[key] = listeners
            return
        _TOPICS.pop(key, None)
    try:
        client.unsubscribe_topic(topic)
    except Exception:  # the client is closing
        pass


def _dispatch(key: tuple[str, str], event: tuple[float, dict[str, Any]]) -> None:
    for r in list(_TOPICS.get(key, [])):
        proxy = r()
        if proxy is not None:
            proxy.manager.post(proxy, event[1])


class _Call:
    __slots__ = ("address", "attempt", "base_keys", "keep", "key", "lease", "name", "proxy",
                 "refs", "retries_left", "seq", "spec")

    def __init__(self, proxy: Proxy, spec: CallSpec, key: str, refs: list[DaskRef],
                 keep: list[Any], seq: int):
        self.proxy = proxy
        self.spec = spec
        self.name = spec.name
        self.key = key
        self.refs = refs
        self.keep = keep  # refs and handles in the arguments: borrowed until done
        self.seq = seq  # submission order, for calls sent again
        self.base_keys = [key] + [r.key for r in refs]
        self.address: str | None = None
        self.attempt = 0
        self.retries_left = proxy.task_retries
        self.lease: _Lease | None = None

    def rekey(self) -> None:
        """New Dask keys for sending the call again (the old ones may linger)."""
        self.attempt += 1
        suffix = f"-r{self.attempt}"
        self.key = self.base_keys[0] + suffix
        for r, key in zip(self.refs, self.base_keys[1:]):
            r._key = key + suffix


class _Lease:
    """Held by the refs of one sent call: when the last of them goes, the worker
    may drop the call's result (it keeps it for exports until then)."""

    __slots__ = ("__weakref__",)


class Proxy:
    """How this process reaches one actor (see the module docstring)."""

    def __init__(self, manager: ActorManager, actor_id: str, class_name: str,
                 methods: dict[str, bool], name: str | None, namespace: str | None,
                 owner: bool):
        self.manager = manager
        self.actor_id = actor_id
        self.class_name = class_name
        self.methods = methods
        self.name = name
        self.namespace = namespace
        self.owner = owner
        self.topic = host_side.actor_topic(actor_id)
        self.lock = threading.RLock()
        self.state = "pending"
        self.address: str | None = None
        self.gen = -1
        self.cause = ""
        self.buffer: list[_Call] = []
        self.calls: dict[str, _Call] = {}
        self.restarts_left = 0
        self.task_retries = 0
        self.settled = threading.Event()  # set while alive or dead (not pending)
        self.lost: tuple[int, str | None] = (-1, None)  # (generation, address) gone
        # owner only
        self.spec: ActorSpec | None = None
        self.placement: dict[str, Any] = {}
        self.deps: list[DaskRef] = []
        self.keep: list[Any] = []
        self.lifetime: distributed.Future[Any] | None = None
        self.detached = False

    def handle(self) -> ActorHandle[Any]:
        return ActorHandle(self.actor_id, self.manager.backend, self.class_name, self.methods,
                           self.name, self.namespace)

    def died(self) -> ActorDiedError:
        return ActorDiedError(f"actor {self.class_name}({self.actor_id}) is dead"
                              + (f": {self.cause}" if self.cause else ""))


class ActorManager:
    """The actors of one runtime (see the module docstring)."""

    def __init__(self, backend: DaskBackend):
        self.backend = backend
        self.client = backend.client
        self.proxies: dict[str, Proxy] = {}
        self.by_ref: dict[str, _Call] = {}
        self.by_key: dict[str, _Call] = {}  # calls sent, by their Dask key
        self.lock = threading.RLock()
        self._pool: ThreadPoolExecutor | None = None
        self._seq = itertools.count()
        self.channels: dict[str, Channel] = {}

    # ----------------------------------------------------------------- events
    def post(self, proxy: Proxy, msg: dict[str, Any]) -> None:
        """An event for ``proxy`` (on the client's event loop): handle it on our thread."""
        pool = self._events_pool()
        try:
            pool.submit(self._on_event, proxy, msg)
        except RuntimeError:  # shut down
            pass

    def on_event(self, msg: dict[str, Any]) -> None:
        """An actor event on the runtime's own topic (none are sent there today)."""

    def _events_pool(self) -> ThreadPoolExecutor:
        with self.lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    1, thread_name_prefix=f"fedexec-dask-actors-{self.backend.uid}")
            return self._pool

    def _on_event(self, proxy: Proxy, msg: dict[str, Any]) -> None:
        kind = msg.get("e")
        if kind == "ready":
            with proxy.lock:
                if proxy.state == "dead" or msg["g"] < proxy.gen or (
                        msg["g"], msg["a"]) == proxy.lost:
                    return
                moved = proxy.address is not None and proxy.address != msg["a"]
                proxy.address = msg["a"]
                proxy.gen = msg["g"]
                proxy.restarts_left = int(msg.get("r", 0))
                proxy.task_retries = int(msg.get("t", 0))
                proxy.state = "alive"
                proxy.settled.set()
                lost = self._take_calls(proxy) if moved else []
                self._lose_calls(lost, ActorDiedError(
                    f"actor {proxy.class_name}({proxy.actor_id}) was restarted on another "
                    "worker"))
                buffered, proxy.buffer = proxy.buffer, []
                for call in buffered:
                    self._send(proxy, call)
        elif kind == "died":
            self._mark_dead(proxy, str(msg.get("cause", "")), publish=False)
        elif kind == "lost":
            with proxy.lock:
                if proxy.state == "dead":
                    return
                proxy.state = "pending"
                proxy.settled.clear()
                proxy.address = None
                lost = self._take_calls(proxy)
            self._lose_calls(lost, ActorDiedError(
                f"the worker of actor {proxy.class_name}({proxy.actor_id}) died"))

    def _take_calls(self, proxy: Proxy) -> list[_Call]:
        calls = list(proxy.calls.values())
        proxy.calls.clear()
        return calls

    def _lose_calls(self, calls: list[_Call], error: BaseException) -> None:
        """Calls the actor lost (it died or moved): sent again when it is back if
        ``max_task_retries`` allows, else they fail with ``error``."""
        self._fail_calls([c for c in calls if not self._requeue(c)], error)

    def _requeue(self, call: _Call) -> bool:
        """Put a lost call back in its actor's buffer (True), if it may retry."""
        proxy = call.proxy
        with proxy.lock:
            if (proxy.state == "dead" or call.retries_left == 0
                    or all(r.done() for r in call.refs)):
                return False
            if call.retries_left > 0:
                call.retries_left -= 1
            proxy.calls.pop(call.key, None)
            with self.lock:
                self.by_key.pop(call.key, None)
            call.address = None
            call.rekey()
            if proxy.address is not None and proxy.state == "alive":
                self._send(proxy, call)
            else:
                proxy.buffer.append(call)
                proxy.buffer.sort(key=lambda c: c.seq)
        return True

    def _fail_calls(self, calls: list[_Call], error: BaseException) -> None:
        for call in calls:
            for r in call.refs:
                settle(r, error=error)
            self._forget(call)

    # --------------------------------------------------------------- creation
    def create(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any],
               options: ActorOptions) -> ActorHandle[Any]:
        backend = self.backend
        namespace = options.namespace or backend.job.namespace
        methods = public_methods(cls)
        is_async = is_async_class(methods)
        concurrency = options.concurrency(is_async)
        create = options.demand(1.0)
        placement = backend.placement(options, create, f"actor {cls.__name__!r}")
        alive = options.demand(0.0)
        lend = {k: v - alive.get(k, 0.0) for k, v in (placement["resources"] or {}).items()
                if v - alive.get(k, 0.0) > 1e-12}
        cls_blob = serialization.dumps(cls, what=f"actor class {cls.__qualname__!r}",
                                       out_of_band=False)
        deps, args, kwargs = backend.split_deps(args, kwargs)
        _, call_blob = serialize_call(cls, args, kwargs)
        actor_id = new_id()
        proxy = Proxy(self, actor_id, cls.__name__, methods, options.name, namespace, owner=True)
        proxy.restarts_left = options.max_restarts
        proxy.task_retries = options.max_task_retries
        proxy.detached = options.lifetime == "detached"
        proxy.placement = placement
        proxy.deps = deps
        proxy.keep = call_blob.contained + cls_blob.contained
        proxy.spec = ActorSpec(actor_id, cls_blob.data, call_blob.data, cls.__name__, is_async,
                               concurrency, options.max_restarts, lend, 0, backend.job,
                               options.max_task_retries, namespace)
        if options.name is not None:
            existing = self._claim_name(proxy, options.get_if_exists)
            if existing is not None:
                return existing
        self._register(proxy)
        self._launch(proxy)
        return proxy.handle()

    def _register(self, proxy: Proxy) -> None:
        with self.lock:
            self.proxies[proxy.actor_id] = proxy
        _subscribe(self.client, proxy.topic, proxy)

    def _launch(self, proxy: Proxy) -> None:
        spec = proxy.spec
        assert spec is not None
        key = dask_key(f"{spec.class_name}.actor", f"{proxy.actor_id}{spec.gen:04x}")
        outbox = self.backend.outbox
        fut = outbox.submit(host_side.run_actor, [spec, *[d._dask for d in proxy.deps]], key,
                            proxy.placement, forget=proxy.detached,
                            failed=functools.partial(self._not_sent, proxy))
        proxy.lifetime = fut
        outbox.watch(fut, functools.partial(self._lifetime_done, proxy, spec.gen))

    def _lifetime_done(self, proxy: Proxy, gen: int, fut: distributed.Future[Any]) -> None:
        """The actor's lifetime task ended (on the runtime's callback thread)."""
        spec = proxy.spec
        if spec is None or spec.gen != gen or proxy.state == "dead":
            return
        status = fut.status
        cause = "it was killed"
        if status == "cancelled":
            cause = "the executor that owned it was shut down"
        elif status == "finished":
            try:
                value = fut.result()
            except Exception as exc:
                value = None
                cause = f"its state could not be read: {exc}"
            if isinstance(value, Failed):
                cause = str(value.error).split(": ", 1)[-1]
        else:
            error = fut.exception()
            if isinstance(error, distributed.KilledWorker):
                if proxy.restarts_left != 0:
                    self._restart_elsewhere(proxy)
                    return
                cause = "its worker process died"
            else:
                cause = f"its lifetime task failed: {error!r}"
        self._mark_dead(proxy, cause, publish=True)

    def _restart_elsewhere(self, proxy: Proxy) -> None:
        """The owner rebuilds an actor whose worker process died (``max_restarts``)."""
        spec = proxy.spec
        assert spec is not None
        with proxy.lock:
            if proxy.restarts_left > 0:
                proxy.restarts_left -= 1
            proxy.state = "pending"
            proxy.settled.clear()
            proxy.address = None
            lost = self._take_calls(proxy)
            proxy.spec = ActorSpec(spec.actor_id, spec.cls, spec.call, spec.class_name,
                                   spec.is_async, spec.concurrency, proxy.restarts_left,
                                   spec.lend, spec.gen + 1, spec.job, spec.task_retries,
                                   spec.namespace)
        self._publish(proxy, {"e": "lost", "g": spec.gen})
        self._lose_calls(lost, ActorDiedError(
            f"the worker of actor {proxy.class_name}({proxy.actor_id}) died; it restarts"))
        self._launch(proxy)

    def _publish(self, proxy: Proxy, msg: dict[str, Any]) -> None:
        try:
            self.client.log_event(proxy.topic, msg)
        except Exception:  # the cluster is going away: nobody left to tell
            pass

    def _mark_dead(self, proxy: Proxy, cause: str, publish: bool) -> None:
        with proxy.lock:
            if proxy.state == "dead":
                return
            proxy.state = "dead"
            proxy.settled.set()
            proxy.cause = cause
            calls = self._take_calls(proxy) + proxy.buffer
            proxy.buffer = []
            proxy.lifetime = None
            proxy.deps = []
            proxy.keep = []
        if publish:
            self._publish(proxy, {"e": "died", "cause": cause})
        self._fail_calls(calls, proxy.died())

    # ------------------------------------------------------------------ names
    def _name_key(self, namespace: str, name: str) -> list[str]:
        return ["fedexec", "names", namespace, name]

    def _alive(self, actor_id: str) -> bool:
        proxy = self.proxies.get(actor_id)
        if proxy is not None:
            return proxy.state != "dead"
        events = self.client.get_events(host_side.actor_topic(actor_id))
        kinds = [e[1].get("e") for e in events]
        return not kinds or kinds[-1] != "died"

    def _claim_name(self, proxy: Proxy, get_if_exists: bool) -> ActorHandle[Any] | None:
        """Take ``proxy``'s name atomically (on the scheduler's event loop); the
        existing actor's handle with ``get_if_exists``."""
        namespace, name = proxy.namespace or "default", proxy.name or ""
        entry = {"id": proxy.actor_id, "class_name": proxy.class_name,
                 "methods": proxy.methods}

        def claim(keys: list[str], entry: dict[str, Any], dask_scheduler: Any = None) -> Any:
            # Runs on the scheduler: builtins only (it is pickled by value).
            current = dask_scheduler.get_metadata(keys, None)
            if current is not None:
                events = dask_scheduler.get_events("fedexec-actor-" + current["id"])
                if not events or events[-1][1].get("e") != "died":
                    return current
            dask_scheduler.set_metadata(keys, entry)
            return None

        existing = self.client.run_on_scheduler(claim, self._name_key(namespace, name), entry)
        if existing is None:
            return None
        if get_if_exists:
            return self._handle_of(existing, namespace, name)
        raise ValueError(
            f"an actor named {name!r} already exists in namespace {namespace!r}; "
            "use get_actor(), or get_if_exists=True")

    def _handle_of(self, entry: dict[str, Any], namespace: str, name: str) -> ActorHandle[Any]:
        return ActorHandle(entry["id"], self.backend, entry["class_name"],
                           dict(entry["methods"]), name, namespace)

    def get_named(self, name: str, namespace: str) -> ActorHandle[Any]:
        """The handle of the live actor named ``name``; ``ValueError`` if none."""
        entry = self.client.get_metadata(self._name_key(namespace, name), None)
        if entry is None or not self._alive(entry["id"]):
            raise ValueError(f"no actor named {name!r} in namespace {namespace!r}")
        return self._handle_of(entry, namespace, name)

    # ------------------------------------------------------------------ calls
    def _proxy(self, handle: ActorHandle[Any]) -> Proxy:
        proxy = self.proxies.get(handle.actor_id)
        if proxy is not None:
            return proxy
        with self.lock:
            proxy = self.proxies.get(handle.actor_id)
            if proxy is not None:
                return proxy
            proxy = Proxy(self, handle.actor_id, handle._class_name, handle._methods,
                          handle._name, handle._namespace, owner=False)
            self._register(proxy)
        self._catch_up(proxy)
        if not proxy.settled.is_set():
            self._watch_in_background(proxy)
        return proxy

    def _watch_in_background(self, proxy: Proxy) -> None:
        threading.Thread(target=self._watch_pending, args=(proxy,), daemon=True,
                         name=f"fedexec-dask-actor-wait-{proxy.actor_id[-8:]}").start()

    def _catch_up(self, proxy: Proxy) -> None:
        """Replay the actor's past events (those before we subscribed)."""
        try:
            events = self.client.get_events(proxy.topic)
        except Exception:  # the cluster is going away
            return
        for _, msg in events:
            self._on_event(proxy, msg)

    def _watch_pending(self, proxy: Proxy) -> None:
        """Our subscription may reach the scheduler after the actor said "ready" (the
        subscription and the catch-up travel separately): look again until it has."""
        delay = 0.02
        while not proxy.settled.wait(delay) and not self.backend._teardown_done.is_set():
            self._catch_up(proxy)
            delay = min(1.0, delay * 2)

    def call(self, handle: ActorHandle[Any], method: str, args: tuple[Any, ...],
             kwargs: dict[str, Any], options: MethodOptions) -> list[ObjectRef[Any]]:
        """Send a method call; its refs."""
        backend = self.backend
        proxy = self._proxy(handle)
        name = f"{proxy.class_name}.{method}"
        n = options.num_returns
        ids = [new_id() for _ in range(n)]
        task_id = ids[0] if n == 1 else new_id()
        refs = [DaskRef(rid, backend, name, dask_key(name, rid)) for rid in ids]
        for r in refs:
            backend._refs[r.id] = r
        args, kwargs = backend.bind_args(args, kwargs)
        _, blob = serialize_call(method, args, kwargs)
        spec = CallSpec(proxy.actor_id, method, blob.data, name, task_id, n, backend.job)
        call = _Call(proxy, spec, refs[0].key if n == 1 else dask_key(name, task_id), refs,
                     blob.contained, next(self._seq))
        with proxy.lock:
            if proxy.state != "dead":
                with self.lock:
                    for r in refs:
                        self.by_ref[r.id] = call
                if proxy.address is None:
                    proxy.buffer.append(call)
                else:
                    self._send(proxy, call)
                return list(refs)
        for r in refs:
            settle(r, error=proxy.died())
        return list(refs)

    def _send(self, proxy: Proxy, call: _Call) -> None:
        """Send ``call`` to the actor's worker (under ``proxy.lock``, in order)."""
        address = proxy.address
        assert address is not None
        channel = self._channel(address)
        call.address = address
        proxy.calls[call.key] = call
        self.by_key[call.key] = call
        lease = call.lease = _Lease()
        weakref.finalize(lease, channel.release, proxy.actor_id, call.key)
        for i, r in enumerate(call.refs):
            r._keep = [lease]
            r._export = functools.partial(self._export, proxy.actor_id, call.key, i, address)
        if not channel.send(proxy.actor_id, call.key, call.spec):
            self._run_later(functools.partial(self._channel_lost, channel))

    def _channel(self, address: str) -> Channel:
        with self.lock:
            channel = self.channels.get(address)
            if channel is None or channel.lost:
                channel = self.channels[address] = Channel(
                    self.client, address, self._on_reply, self._channel_lost, self._run_later)
            return channel

    def _run_later(self, fn: Any) -> None:
        self.backend.outbox.run(fn)

    def _export(self, actor_id: str, key: str, index: int, address: str, ref: DaskRef
                ) -> distributed.Future[Any]:
        """A Dask key for a direct call's result (a task on the actor's worker that
        reads it), so the ref can be a Dask dependency or go to another process."""
        return self.backend.outbox.submit(host_side.export, [actor_id, key, index], ref.key,
                                          {"workers": [address]})

    def _on_reply(self, key: str, out: Any) -> None:
        """A call's result came back on its channel (on our callback thread)."""
        call = self.by_key.get(key)
        if call is None:  # cancelled, or sent again under another key
            return
        if isinstance(out, Failed):
            error = out.error
            if isinstance(error, host_side.ActorMissing):
                self._worker_lost(call)
                error = ActorDiedError(
                    f"actor {call.proxy.class_name}({call.proxy.actor_id}) is not on its "
                    "worker any more (the worker restarted)")
                if self._requeue(call):
                    return
            elif isinstance(error, host_side.CallInterrupted) and self._requeue(call):
                return
            for r in call.refs:
                settle(r, error=error)
        else:
            blobs = [out] if len(call.refs) == 1 else list(out)
            for r, blob in zip(call.refs, blobs):
                settle(r, DaskValue(self.backend, None, blob))
        self._forget(call)

    def _channel_lost(self, channel: Channel) -> None:
        """The connection to a worker dropped: it died (or cannot be reached)."""
        with self.lock:
            if self.channels.get(channel.address) is channel:
                del self.channels[channel.address]
            calls = [c for c in self.by_key.values() if c.address == channel.address]
        for call in calls:
            if all(r.done() for r in call.refs):
                continue
            self._worker_lost(call)
            if self._requeue(call):
                continue
            for r in call.refs:
                settle(r, error=ActorDiedError(
                    f"the worker of actor {call.proxy.class_name}({call.proxy.actor_id}) "
                    f"died while {call.name!r} ran"))
            self._forget(call)

    def _not_sent(self, proxy: Proxy, exc: BaseException) -> None:
        """The actor's lifetime task could not be sent to the scheduler."""
        self._mark_dead(proxy, f"it could not be sent to the Dask scheduler: {exc!r}",
                        publish=False)

    def _worker_lost(self, call: _Call) -> None:
        """A call found the actor's worker dead: send no more calls there; later ones
        wait for the actor's next "ready" (its owner restarts it) or "died"."""
        proxy = call.proxy
        with proxy.lock:
            if proxy.state != "alive" or proxy.address != call.address:
                return
            proxy.lost = (proxy.gen, proxy.address)
            proxy.state = "pending"
            proxy.settled.clear()
            proxy.address = None
        if not proxy.owner:
            self._watch_in_background(proxy)

    def _forget(self, call: _Call) -> None:
        with self.lock:
            for r in call.refs:
                self.by_ref.pop(r.id, None)
            self.by_key.pop(call.key, None)
        with call.proxy.lock:
            call.proxy.calls.pop(call.key, None)
        call.keep = []

    def cancel_call(self, ref: ObjectRef[Any], running_too: bool, force: bool = False) -> bool:
        """Cancel an actor call that has not started (a running one goes on)."""
        call = self.by_ref.get(ref.id)
        if call is None:
            return False
        if force:
            raise ValueError(
                "force-cancelling an actor call is not allowed; kill the actor instead")
        if ref.done():
            return False
        proxy = call.proxy
        with proxy.lock:
            if call in proxy.buffer:
                proxy.buffer.remove(call)
                address = None
            else:
                address = call.address
        if address is not None:
            try:
                ok = self.client.run(host_side.cancel_call, proxy.actor_id, call.key,
                                     workers=[address], callback_timeout=RUN_TIMEOUT_S
                                     ).get(address, False)
            except Exception:
                ok = False
            if not ok:
                return False
        for r in call.refs:
            cancel_ref(r)
        self._forget(call)
        return True

    # ---------------------------------------------------------------- killing
    def kill(self, handle: ActorHandle[Any], *, no_restart: bool) -> None:
        """Kill the actor; with ``no_restart=False`` it restarts if it may."""
        proxy = self._proxy(handle)
        if proxy.state == "dead":
            return
        proxy.settled.wait(60)  # being created: kill it once it is (or gave up)
        address = proxy.address
        outcome = "missing"
        if address is not None:
            try:
                outcome = self.client.run(host_side.kill_host, proxy.actor_id, no_restart,
                                          workers=[address], callback_timeout=RUN_TIMEOUT_S
                                          ).get(address, "missing")
            except Exception as exc:
                logger.warning("fedexec dask backend: killing actor %s(%s): its worker %s did "
                               "not answer (%r); taking it as dead", proxy.class_name,
                               proxy.actor_id, address, exc)
                outcome = "missing"
        if outcome == "restarting":
            return
        lifetime = proxy.lifetime
        self._mark_dead(proxy, "it was killed", publish=True)
        if address is None and lifetime is not None:  # still waiting to be created
            self.backend.cancel_futures([lifetime])

    # --------------------------------------------------------------- shutdown
    def drain(self, limit: float | None = None) -> None:
        """Wait until the calls this runtime sent have finished, at most ``limit``
        seconds (default ``DRAIN_LIMIT_S``): then those still unfinished fail with
        ``ActorDiedError`` (their actor's worker may be frozen or unreachable), and
        a warning says which. Says what it waits for every ``DRAIN_REPORT_S``."""
        start = time.monotonic()
        deadline = start + (DRAIN_LIMIT_S if limit is None else limit)
        next_report = start + DRAIN_REPORT_S
        while True:
            with self.lock:
                pending = [c for c in self.by_ref.values()
                           if c.proxy.state != "dead" and not all(r.done() for r in c.refs)]
            if not pending:
                return
            now = time.monotonic()
            shown = ", ".join(f"{c.name!r} on {c.address or 'no worker yet'}"
                              for c in pending[:5]) + (" ..." if len(pending) > 5 else "")
            if now >= deadline:
                logger.warning("fedexec dask backend: shutdown waited %.0f s for %d actor "
                               "call(s) to finish; failing them: %s", now - start,
                               len(pending), shown)
                self._fail_calls(pending, ActorDiedError(
                    f"the executor shut down and its actor calls were still unfinished "
                    f"after {now - start:.0f} s (the actor's worker did not answer); "
                    "finish actor calls before shutdown, or kill the actor"))
                return
            if now >= next_report:
                next_report = now + DRAIN_REPORT_S
                logger.warning("fedexec dask backend: shutdown(wait=True) still waits for %d "
                               "actor call(s) to finish: %s", len(pending), shown)
            time.sleep(0.02)

    def shutdown(self) -> None:
        """The runtime stops: its actors die with it (detached ones live on)."""
        for proxy in list(self.proxies.values()):
            if proxy.owner and not proxy.detached and proxy.state != "dead":
                if proxy.address is not None and not self.backend.embedded:
                    try:
                        self.client.run(host_side.kill_host, proxy.actor_id, True,
                                        workers=[proxy.address],
                                        callback_timeout=RUN_TIMEOUT_S)
                    except Exception:
                        pass
                self._mark_dead(proxy, "the executor that owned it was shut down",
                                publish=not self.backend.embedded)
            _unsubscribe(self.client, proxy.topic, proxy)
        with self.lock:
            channels = list(self.channels.values())
            self.channels.clear()
            pool, self._pool = self._pool, None
        for channel in channels:
            channel.close()
        if pool is not None:
            pool.shutdown(wait=True)
