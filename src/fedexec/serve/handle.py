"""Handles: calling a deployment from Python (drivers, tasks, actors, replicas).

``handle.remote(*a)`` / ``handle.method.remote(*a)`` send the call straight to a
replica over serve's direct connections (see ``_router``) and return a
:class:`DeploymentResponse` at once. A response passed as an argument of
another call is resolved by the downstream replica, fetched from the upstream
one (``_chain``), so neither the caller's thread nor its process handles it.
The classic handle (``Deployment.get_handle()``) returns fedexec ``ObjectRef``
s instead, made by an actor call on the chosen replica, so ``fedexec.get``
works on them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from collections.abc import AsyncIterator, Iterator
from typing import Any

import cloudpickle

import fedexec
from fedexec.util.serialization import loads as safe_loads

from . import _chain, _loop
from ._client import get_client
from ._wire import Op
from .exceptions import RequestTimeoutError, ServeError


async def _resolve(value: Any, held: list[tuple[Any, str]]) -> Any:
    """An argument as it is sent: a response becomes a reference the downstream
    replica fetches (see ``_chain``; its connection and token go to ``held``), or
    its value when that is here anyway."""
    if isinstance(value, DeploymentResponseGenerator):
        return await value._pass_on(held)
    if not isinstance(value, DeploymentResponse):
        return value
    link = value._link
    if link is not None:
        ref = await _chain.hold(link)
        if ref is not None:
            held.append((link.pending.conn, ref.token))
            return ref
    return await value


async def _call(key: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                stream: bool, items: asyncio.Queue[Any] | None,
                link: _chain.Link | None = None) -> Any:
    pending = None
    held: list[tuple[Any, str]] = []  # values held upstream for this call
    try:
        if args:
            args = tuple([await _resolve(a, held) for a in args])
        if kwargs:
            kwargs = {k: await _resolve(v, held) for k, v in kwargs.items()}
        router = await get_client().wait_for(key)
        payload = cloudpickle.dumps((args, kwargs))
        what = f"{key.partition('#')[2]}.{method}"
        pending = await router.send([Op.CALL, router.next_rid(), method, payload, stream])
    finally:
        if link is not None:
            link.bind(key, pending)
        if held and pending is None:  # never sent: nobody will fetch them
            _chain.release_all(held)
    assert pending is not None
    if held:  # fetched by the call by the time it answers, or never
        pending.first.add_done_callback(lambda _: _chain.release_all(held))
    frame = await pending.first
    if frame[0] == Op.RESULT:
        if frame[2] is None:  # held for a chained call: fetched only if asked for
            assert link is not None and pending.conn is not None
            return _chain.Chained(key, pending.conn.replica_id, link.self_token)
        return safe_loads(frame[2])
    if frame[0] == Op.ERROR:
        raise _chain.remote_error(frame, what)
    assert items is not None and pending.rest is not None
    while True:  # a stream: ITEM ... END | ERROR
        if frame[0] == Op.ITEM:
            items.put_nowait(("item", safe_loads(frame[2])))
        elif frame[0] == Op.ERROR:
            items.put_nowait(("error", _chain.remote_error(frame, what)))
            return None
        else:
            items.put_nowait(("end", None))
            return None
        frame = await pending.rest.get()


async def _stream(key: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                  items: asyncio.Queue[Any], link: _chain.Link) -> None:
    """A streamed call: every outcome, errors included, lands in ``items``."""
    try:
        await _call(key, method, args, kwargs, True, items, link)
    except BaseException as exc:
        items.put_nowait(("error", exc))
        if not isinstance(exc, Exception):
            raise


def _schedule(coro: Any) -> asyncio.Future[Any] | cf.Future[Any]:
    if _loop.on_loop():
        return asyncio.get_running_loop().create_task(coro)
    return _loop.submit(coro)


_NOTHING = object()


class DeploymentResponse:
    """The future result of a handle call: ``result(timeout_s=None)`` or ``await``."""

    def __init__(self, future: asyncio.Future[Any] | cf.Future[Any],
                 link: _chain.Link | None = None) -> None:
        self._future, self._link = future, link
        self._fetched: Any = _NOTHING

    def __del__(self) -> None:
        link = getattr(self, "_link", None)
        if link is not None and link.self_token:  # held upstream for us, never fetched
            link.drop()

    def result(self, timeout_s: float | None = None) -> Any:
        """Block until the call finishes; its value, or its error raised.

        Raises:
            RequestTimeoutError: not finished within ``timeout_s``.
            ServeError: called on the serve event loop (use ``await response``).
        """
        fut = self._future
        if not isinstance(fut, cf.Future):
            raise ServeError("DeploymentResponse.result() would block the event loop this "
                             "code runs on; use `await response` inside async code")
        try:
            value = fut.result(timeout_s)
            if isinstance(value, _chain.Chained):  # held upstream for a chained call
                if self._fetched is _NOTHING:
                    self._fetched = _loop.submit(_chain.fetch(value)).result(timeout_s)
                    self._fetched_own()
                value = self._fetched
            return value
        except cf.TimeoutError:
            raise RequestTimeoutError(
                f"the call did not finish within {timeout_s} s; pass a larger timeout_s "
                "or check serve.status() for unhealthy replicas") from None

    def __await__(self) -> Any:
        return self._value().__await__()

    async def _value(self) -> Any:
        fut = self._future
        value = await (asyncio.wrap_future(fut) if isinstance(fut, cf.Future) else fut)
        if isinstance(value, _chain.Chained):
            if self._fetched is _NOTHING:
                self._fetched = await _chain.fetch(value)
                self._fetched_own()
            value = self._fetched
        return value

    def _fetched_own(self) -> None:
        if self._link is not None:
            self._link.self_token = ""  # the FETCH took it: nothing left to release

    def cancel(self) -> None:
        self._future.cancel()


class DeploymentResponseGenerator:
    """The items of a streamed call, as a sync or an async iterator. Passed to
    another handle call, the rest of it streams there, replica to replica."""

    def __init__(self, items: asyncio.Queue[Any], future: Any,
                 link: _chain.Link | None = None) -> None:
        self._items, self._future, self._link = items, future, link
        self._done = False

    async def _pass_on(self, held: list[tuple[Any, str]]) -> Any:
        if self._done:
            raise ServeError("this streamed response was read to its end or passed on "
                             "already; pass a fresh one")
        self._done = True
        if self._link is None:  # not a call of ours (a chained stream itself)
            items = []
            while True:
                kind, value = await self._items.get()
                if kind != "item":
                    break
                items.append(value)
            return _chain.ChainedStream("", "", "", items,
                                        value if kind == "error" else None)
        return await _chain.hold_stream(self._link, self._items, self._future, held)

    def _take(self, entry: tuple[str, Any]) -> Any:
        kind, value = entry
        if kind == "item":
            return value
        self._done = True
        if kind == "error":
            raise value
        raise StopIteration

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        if _loop.on_loop():
            raise ServeError("iterate a streamed response with `async for` on an event loop")
        return self._take(_loop.submit(self._items.get()).result())

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        if _loop.on_loop():
            entry = await self._items.get()
        else:
            entry = await asyncio.wrap_future(_loop.submit(self._items.get()))
        try:
            return self._take(entry)
        except StopIteration:
            raise StopAsyncIteration from None


class DeploymentHandle:
    """Calls one deployment of one application (picklable; see the module docstring)."""

    def __init__(self, deployment_name: str, app_name: str = "default", *,
                 method_name: str = "__call__", stream: bool = False,
                 _classic: bool = False) -> None:
        self.deployment_name, self.app_name = deployment_name, app_name
        self._method, self._stream, self._classic = method_name, stream, _classic

    @property
    def _key(self) -> str:
        return f"{self.app_name}#{self.deployment_name}"

    def options(self, *, method_name: str | None = None, stream: bool | None = None,
                **_ignored: Any) -> DeploymentHandle:
        """A handle with other call options (``stream=True`` yields items)."""
        return DeploymentHandle(self.deployment_name, self.app_name,
                                method_name=method_name or self._method,
                                stream=self._stream if stream is None else stream,
                                _classic=self._classic)

    def __getattr__(self, name: str) -> DeploymentHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.options(method_name=name)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Call the deployment: a :class:`DeploymentResponse` (or a
        :class:`DeploymentResponseGenerator` with ``stream=True``; an ``ObjectRef``
        for the classic handle)."""
        if self._classic and not self._stream:
            return _classic_call(self._key, self._method, args, kwargs)
        if self._stream:
            items: asyncio.Queue[Any] = asyncio.Queue()
            link = _chain.Link()
            fut = _schedule(_stream(self._key, self._method, args, kwargs, items, link))
            return DeploymentResponseGenerator(items, fut, link)
        link = _chain.Link()
        return DeploymentResponse(_schedule(_call(self._key, self._method, args, kwargs,
                                                  False, None, link)), link)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.deployment_name, self.app_name, self._method, self._stream,
                           self._classic))

    def __repr__(self) -> str:
        return f"DeploymentHandle(deployment={self.deployment_name!r}, app={self.app_name!r})"


def _rebuild(name: str, app: str, method: str, stream: bool, classic: bool) -> DeploymentHandle:
    return DeploymentHandle(name, app, method_name=method, stream=stream, _classic=classic)


def _classic_call(key: str, method: str, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> fedexec.ObjectRef[Any]:
    """Pick a replica by the router's counts and call it as an actor."""
    client = get_client()
    router = _loop.submit(client.wait_for(key)).result()
    actor = client.replica_actor(key, router)
    return actor.call.remote(method, args, kwargs)
