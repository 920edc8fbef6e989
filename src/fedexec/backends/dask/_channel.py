"""A direct link from this process to one Dask worker, for actor calls.

An actor call sent as a Dask task costs a trip through the scheduler both ways
(~10 ms). Like a Dask actor call, a call sent on a channel goes straight to the
worker hosting the actor, and its result comes straight back::

    caller thread ─ send(call) ─▶ pending ─(one loop wake-up per burst)─▶ comm.write
        {"calls": [(actor id, key, CallSpec), ...], "release": [(actor id, [keys])]}
                                        ▼ worker: ``_host._serve`` → Host.accept → the
                                          actor's threads, in arrival order
    on_reply(key, result) ◀─ our callback thread ◀─ reader ◀─ {"replies": [(key, result)]}

One channel per (runtime, worker address), opened on first use with the client's
connection arguments (Dask's own security settings). Messages on it keep their
order, so calls from one caller to one actor run in submission order. When the
connection drops (the worker died, or cannot be reached), ``on_lost`` is told
once and the channel takes no more calls.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Any

import distributed
from distributed.comm.core import connect
from distributed.protocol.serialize import to_serialize

from ._batch import Batcher
from ._host import CHANNEL_OP

__all__ = ["Channel"]


class Channel:
    """Sends actor calls to one worker and hands their replies back."""

    def __init__(self, client: distributed.Client, address: str,
                 on_reply: Callable[[str, Any], None], on_lost: Callable[[Channel], None],
                 run: Callable[[Callable[[], None]], None]):
        self.client = client
        self.address = address
        self._on_reply = on_reply
        self._on_lost = on_lost
        self._run = run  # runs a callable on the runtime's callback thread
        self._comm: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._batch = Batcher(client.loop, self._write)
        self._lost = threading.Event()

    @property
    def lost(self) -> bool:
        """The connection dropped (or the channel was closed): it takes no calls."""
        return self._lost.is_set()

    def send(self, actor_id: str, key: str, spec: Any) -> bool:
        """Queue a call; False if the channel is lost (the caller must not wait)."""
        return self._batch.add(("call", actor_id, key, spec))

    def release(self, actor_id: str, key: str) -> None:
        """The refs to a call's result are gone: the worker may drop it."""
        self._batch.add(("release", actor_id, key, None))

    async def _write(self, items: list[tuple[str, str, str, Any]]) -> None:  # on the loop
        calls = [(actor_id, key, spec) for kind, actor_id, key, spec in items
                 if kind == "call"]
        releases: dict[str, list[str]] = {}
        for kind, actor_id, key, _ in items:
            if kind == "release":
                releases.setdefault(actor_id, []).append(key)
        try:
            if self._comm is None:
                self._comm = await connect(self.address, **self.client.connection_args)
                await self._comm.write({"op": CHANNEL_OP, "reply": False})
                self._reader = asyncio.ensure_future(self._read())
            await self._comm.write(
                {"calls": to_serialize(calls), "release": list(releases.items())},
                serializers=("dask", "pickle"))
        except Exception:
            self._lose()

    async def _read(self) -> None:
        try:
            while True:
                msg = await self._comm.read()
                for key, out in msg.get("replies") or ():
                    self._run(functools.partial(self._on_reply, key, out))
        except Exception:  # closed: the worker died, or we closed it
            self._lose()

    def _lose(self) -> None:
        if self._lost.is_set():
            return
        self._lost.set()
        self._batch.stop()
        self._run(lambda: self._on_lost(self))

    def close(self) -> None:
        """Close the connection (the runtime is shutting down)."""
        self._lost.set()
        self._batch.stop()
        comm = self._comm
        if comm is not None:
            try:
                loop = self.client.loop
                if loop is not None:
                    loop.add_callback(comm.close)
            except Exception:  # the loop is gone, and the comm with it
                pass
