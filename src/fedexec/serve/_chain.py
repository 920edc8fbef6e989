"""Chaining: a response passed to another handle call skips the caller.

::

    caller ── CALL ──▶ upstream replica           (the call runs)
    caller ── HOLD rid [tokens] ──▶ upstream      "keep its value for these tokens"
           ◀── HOLDING rid ok ──                  (ok: it had not finished yet)
    caller ── CALL (args hold a Chained ref) ──▶ downstream replica
                          downstream ── FETCH token ──▶ upstream ──▶ RESULT | ERROR

The caller still learns that the upstream finished (a RESULT without a value)
and may ask for the value later (``DeploymentResponse.result``: a FETCH of its
own token). When the HOLD comes too late (the value is already on its way)
the value passes through the caller as before. An upstream error reaches the
downstream call as the upstream's exception; an upstream replica that died
fails it with :class:`ReplicaDiedError`.

A held value is dropped as soon as nobody can ask for it: a FETCH takes it,
and the caller sends ``RELEASE [tokens]`` for the downstream's token once the
downstream call answered (fetched or not) and for its own token when its
``DeploymentResponse`` is garbage collected unfetched. ``_holds.HOLD_TTL_S``
is only the backstop for a caller that died.

A streamed response (``DeploymentResponseGenerator``) passed on is chained the
same way: the HOLD ends the caller's stream, the items it had received and not
read go along in the reference (:class:`ChainedStream`), and the downstream
replica reads the rest from the upstream one as they come (one streamed FETCH).
The downstream call gets a ``DeploymentResponseGenerator`` (sync or async
iteration).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import fedexec
from fedexec.util.serialization import loads as safe_loads

from . import _loop
from ._wire import Op
from .exceptions import ServeError


class Chained:
    """A reference to a value held by replica ``replica_id`` of deployment ``key``."""

    __slots__ = ("key", "replica_id", "token")

    def __init__(self, key: str, replica_id: str, token: str) -> None:
        self.key, self.replica_id, self.token = key, replica_id, token

    def __reduce__(self) -> tuple[Any, ...]:
        return (Chained, (self.key, self.replica_id, self.token))


class ChainedStream:
    """The rest of a streamed response: ``prefix`` (items its caller had), then
    what replica ``replica_id`` keeps under ``token`` (none: ``error`` or the end)."""

    __slots__ = ("error", "key", "prefix", "replica_id", "token")

    def __init__(self, key: str, replica_id: str, token: str, prefix: list[Any],
                 error: BaseException | None = None) -> None:
        self.key, self.replica_id, self.token = key, replica_id, token
        self.prefix, self.error = prefix, error

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChainedStream, (self.key, self.replica_id, self.token, self.prefix,
                                self.error))


class Link:
    """Where a handle call went (set once its frame is written), for HOLDs;
    ``self_token``: the token its caller's own value is held under (if any)."""

    __slots__ = ("_sent", "key", "pending", "self_token")

    def __init__(self) -> None:
        self.key = ""
        self.pending: Any = None
        self.self_token = ""
        self._sent: asyncio.Event | None = None

    def bind(self, key: str, pending: Any) -> None:
        """The call was written (``pending``) or failed before (None)."""
        self.key, self.pending = key, pending
        if self._sent is None:
            self._sent = asyncio.Event()
        self._sent.set()

    async def sent(self) -> None:
        if self._sent is None:
            self._sent = asyncio.Event()
        await self._sent.wait()

    def drop(self) -> None:
        """The caller will not ask for its value: release it (any thread)."""
        token, self.self_token = self.self_token, ""
        if token and self.pending is not None:
            _loop.call_soon(release, self.pending.conn, [token])


def remote_error(frame: list[Any], what: str) -> BaseException:
    """The exception an ERROR frame carries (ServeError with its text if unpicklable)."""
    blob, text = frame[2], frame[3]
    cause: BaseException | None = None
    if blob is not None:
        try:
            cause = safe_loads(blob)
        except Exception:
            cause = None
    if cause is None:
        return ServeError(f"{what} failed:\n{text}")
    return fedexec.TaskError.from_exception(cause, text, what)


async def hold(link: Link) -> Chained | None:
    """Ask the upstream replica to keep the value of ``link``'s call for a
    downstream call; its reference, or None when the value comes here anyway."""
    await link.sent()
    pending = link.pending
    if pending is None or pending.first.done() or pending.conn is None:
        return None
    while pending.held is not None and not pending.held.done():
        await asyncio.wait({pending.held, pending.first}, return_when=asyncio.FIRST_COMPLETED)
        if pending.first.done():
            return None
    token = uuid.uuid4().hex
    tokens = [token]
    if not link.self_token:
        link.self_token = uuid.uuid4().hex
        tokens.append(link.self_token)
    pending.held = held = asyncio.get_running_loop().create_future()
    conn = pending.conn
    conn.writer.send([Op.HOLD, pending.frame[1], tokens])
    await asyncio.wait({held, pending.first}, return_when=asyncio.FIRST_COMPLETED)
    if not (held.done() and held.result()):
        return None
    return Chained(link.key, conn.replica_id, token)


def release(conn: Any, tokens: list[str]) -> None:
    """Tell the replica behind ``conn`` to drop the values held for ``tokens``
    (on the serve loop; nothing if the connection is gone)."""
    if tokens and conn is not None and conn.writer is not None and conn.state != "closed":
        conn.writer.send([Op.RELEASE, 0, tokens])


def release_all(held: list[tuple[Any, str]]) -> None:
    """:func:`release` every (connection, token) of ``held``."""
    for conn, token in held:
        release(conn, [token])


async def hold_stream(link: Link, items: asyncio.Queue[Any], ended: Any,
                      held: list[tuple[Any, str]]) -> ChainedStream:
    """Pass a streamed call on (see the module docstring): its reference, with
    the items already here; ``ended``: the future of the caller's stream task."""
    await link.sent()
    pending, token = link.pending, ""
    if pending is not None and pending.conn is not None and not ended.done():
        token = uuid.uuid4().hex
        pending.held = answer = asyncio.get_running_loop().create_future()
        pending.conn.writer.send([Op.HOLD, pending.frame[1], [token]])
        await asyncio.wait({answer, asyncio.wrap_future(ended)
                            if not isinstance(ended, asyncio.Future) else ended},
                           return_when=asyncio.FIRST_COMPLETED)
        if answer.done() and answer.result():
            held.append((pending.conn, token))
        else:
            token = ""
    prefix, error = [], None
    while True:  # up to the end of what reached us (the HOLD ended it)
        kind, value = await items.get()
        if kind == "item":
            prefix.append(value)
            continue
        error = value if kind == "error" else None
        break
    replica_id = pending.conn.replica_id if token and pending is not None \
        and pending.conn is not None else ""
    return ChainedStream(link.key, replica_id, token, prefix, None if token else error)


async def _stream_into(ref: ChainedStream, items: asyncio.Queue[Any]) -> None:
    """Fill ``items`` as ``DeploymentResponseGenerator`` reads them: the prefix,
    then the upstream replica's items."""
    for item in ref.prefix:
        items.put_nowait(("item", item))
    if not ref.token:
        items.put_nowait(("error", ref.error) if ref.error is not None else ("end", None))
        return
    try:
        from ._client import get_client

        router = await get_client().wait_for(ref.key)
        conn = await router.connection(ref.replica_id)
        pending = router.direct(conn, [Op.FETCH, router.next_rid(), ref.token])
        frame = await pending.first
        while frame[0] == Op.ITEM:
            items.put_nowait(("item", safe_loads(frame[2])))
            assert pending.rest is not None
            frame = await pending.rest.get()
        if frame[0] == Op.ERROR:
            items.put_nowait(("error", remote_error(frame,
                                                    f"{ref.key.partition('#')[2]} (chained)")))
        else:
            items.put_nowait(("end", None))
    except Exception as exc:
        items.put_nowait(("error", exc))


def open_stream(ref: ChainedStream) -> Any:
    """A ``DeploymentResponseGenerator`` over a chained stream (on the serve loop)."""
    from .handle import DeploymentResponseGenerator

    items: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.get_running_loop().create_task(_stream_into(ref, items))
    return DeploymentResponseGenerator(items, task)


async def fetch(ref: Chained) -> Any:
    """The value ``ref`` names, fetched from the replica that holds it."""
    from ._client import get_client

    router = await get_client().wait_for(ref.key)
    conn = await router.connection(ref.replica_id)
    pending = router.direct(conn, [Op.FETCH, router.next_rid(), ref.token])
    frame = await pending.first
    if frame[0] == Op.RESULT:
        return safe_loads(frame[2])
    raise remote_error(frame, f"{ref.key.partition('#')[2]} (chained)")


async def _arg(value: Any) -> Any:
    if isinstance(value, Chained):
        return await fetch(value)
    if isinstance(value, ChainedStream):
        return open_stream(value)
    return value


_REFS = (Chained, ChainedStream)


async def resolve_args(args: tuple[Any, ...], kwargs: dict[str, Any]
                       ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``args``/``kwargs`` with every :class:`Chained` fetched and every
    :class:`ChainedStream` opened (a replica calls it)."""
    if any(isinstance(a, _REFS) for a in args):
        args = tuple([await _arg(a) for a in args])
    if any(isinstance(v, _REFS) for v in kwargs.values()):
        kwargs = {k: await _arg(v) for k, v in kwargs.items()}
    return args, kwargs
