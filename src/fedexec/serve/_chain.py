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
the value passes through the caller as before. A held value not fetched within
``HOLD_TTL_S`` is dropped; an upstream error reaches the downstream call as
the upstream's exception; an upstream replica that died fails it with
:class:`ReplicaDiedError`.
"""

from __future__ import annotations

import asyncio
import pickle
import uuid
from typing import Any

import fedexec

from ._wire import Op
from .exceptions import ServeError

HOLD_TTL_S = 120.0


class Chained:
    """A reference to a value held by replica ``replica_id`` of deployment ``key``."""

    __slots__ = ("key", "replica_id", "token")

    def __init__(self, key: str, replica_id: str, token: str) -> None:
        self.key, self.replica_id, self.token = key, replica_id, token

    def __reduce__(self) -> tuple[Any, ...]:
        return (Chained, (self.key, self.replica_id, self.token))


class Link:
    """Where a handle call went (set once its frame is written), for HOLDs."""

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


def remote_error(frame: list[Any], what: str) -> BaseException:
    """The exception an ERROR frame carries (ServeError with its text if unpicklable)."""
    blob, text = frame[2], frame[3]
    cause: BaseException | None = None
    if blob is not None:
        try:
            cause = pickle.loads(blob)
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


async def fetch(ref: Chained) -> Any:
    """The value ``ref`` names, fetched from the replica that holds it."""
    from ._client import get_client

    router = await get_client().wait_for(ref.key)
    conn = await router.connection(ref.replica_id)
    pending = router.direct(conn, [Op.FETCH, router.next_rid(), ref.token])
    frame = await pending.first
    if frame[0] == Op.RESULT:
        return pickle.loads(frame[2])
    raise remote_error(frame, f"{ref.key.partition('#')[2]} (chained)")


async def resolve_args(args: tuple[Any, ...], kwargs: dict[str, Any]
                       ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``args``/``kwargs`` with every :class:`Chained` fetched (a replica calls it)."""
    if any(isinstance(a, Chained) for a in args):
        args = tuple([await fetch(a) if isinstance(a, Chained) else a for a in args])
    if any(isinstance(v, Chained) for v in kwargs.values()):
        kwargs = {k: await fetch(v) if isinstance(v, Chained) else v for k, v in kwargs.items()}
    return args, kwargs
