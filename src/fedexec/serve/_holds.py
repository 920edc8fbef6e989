"""The replica's side of chaining (see ``_chain``): values kept for downstream
calls, and streams passed on to one.

State, by the (connection, rid) of each handle call running here::

    calls      -> the tokens its value is held for (None: not held)
    held       token -> the answer frame, until fetched or released
    fetching   token -> FETCHes waiting for a value not ready yet
    streams    token -> a streamed call passed on: its items from the HOLD on

A HOLD of a streamed call ends the stream for the caller (END: it has every item
sent before) and sends the items after it to the token's fetcher, buffered
until that FETCH comes. Values and streams are dropped when fetched, released
(``RELEASE``), or after ``HOLD_TTL_S`` (a caller that died).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._wire import Op, Writer

HOLD_TTL_S = 120.0
_LAST = (Op.END, Op.ERROR)


class _Stream:
    __slots__ = ("buffer", "done", "fetcher")

    def __init__(self) -> None:
        self.buffer: list[list[Any]] = []
        self.fetcher: tuple[Writer, int] | None = None
        self.done = False


class Holds:
    """See the module docstring; every method runs on the serve loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, replica_id: str) -> None:
        self.loop, self.replica_id = loop, replica_id
        self.calls: dict[tuple[int, int], list[str] | None] = {}
        self.streaming: set[tuple[int, int]] = set()
        self.held: dict[str, list[Any]] = {}
        self.fetching: dict[str, list[tuple[Writer, int]]] = {}
        self.streams: dict[str, _Stream] = {}

    def count(self) -> int:
        """Values and streams kept (or reserved for a call still running)."""
        return len(self.held) + len(self.fetching) + len(self.streams)

    # ------------------------------------------------------------ a call's life
    def begin(self, writer: Writer, frame: list[Any]) -> None:
        """A CALL frame arrived (``frame[4]``: streamed)."""
        key = (id(writer), frame[1])
        self.calls[key] = None
        if frame[4]:
            self.streaming.add(key)

    def forget(self, writer: Writer, rid: int) -> None:
        """The call was dropped before it ran (its caller is gone)."""
        self.calls.pop((id(writer), rid), None)
        self.streaming.discard((id(writer), rid))

    def answer(self, writer: Writer, frame: list[Any]) -> None:
        """Send a call's answer; a held value goes to its fetchers instead."""
        tokens = self.calls.pop((id(writer), frame[1]), None)
        if not tokens:
            writer.send(frame)
            return
        for token in tokens:
            if token not in self.fetching:
                continue  # released before the value came
            fetchers = self.fetching.pop(token)
            for w, rid in fetchers:
                w.send([frame[0], rid, *frame[2:]])
            if not fetchers:
                self.held[token] = frame
                self.loop.call_later(HOLD_TTL_S, self.held.pop, token, None)
        writer.send([Op.RESULT, frame[1], None] if frame[0] == Op.RESULT else frame)

    def emit(self, writer: Writer, frame: list[Any]) -> None:
        """Send a frame of a streamed call (ITEM, END or ERROR): to its caller,
        or, once passed on, to the stream's fetcher (buffered until it asks)."""
        key = (id(writer), frame[1])
        last = frame[0] in _LAST
        tokens = self.calls.get(key)
        if last:
            self.calls.pop(key, None)
            self.streaming.discard(key)
        if not tokens:
            writer.send(frame)
            return
        stream = self.streams.get(tokens[0])
        if stream is None:
            return  # released: nobody will read it
        stream.done = last
        if stream.fetcher is None:
            stream.buffer.append(frame)
            return
        w, rid = stream.fetcher
        w.send([frame[0], rid, *frame[2:]])
        if last:
            del self.streams[tokens[0]]

    # ------------------------------------------------------------ HOLD, FETCH, RELEASE
    def hold(self, frame: list[Any], writer: Writer) -> None:
        _, rid, tokens = frame
        key = (id(writer), rid)
        ok = key in self.calls
        if ok and key in self.streaming:
            token = tokens[0]
            self.calls[key] = [token]
            self.streams[token] = _Stream()
            self.loop.call_later(HOLD_TTL_S, self._expire_stream, token)
            writer.send([Op.HOLDING, rid, True])
            writer.send([Op.END, rid])  # the caller has what came before
            return
        if ok:
            self.calls[key] = (self.calls[key] or []) + list(tokens)
            for token in tokens:
                self.fetching.setdefault(token, [])
        writer.send([Op.HOLDING, rid, ok])

    def fetch(self, frame: list[Any], writer: Writer) -> None:
        _, rid, token = frame
        stream = self.streams.get(token)
        if stream is not None:
            if stream.fetcher is not None:
                writer.send([Op.ERROR, rid, None, "this chained stream is read already"])
                return
            for f in stream.buffer:
                writer.send([f[0], rid, *f[2:]])
            stream.buffer = []
            if stream.done:
                del self.streams[token]
            else:
                stream.fetcher = (writer, rid)
            return
        answer = self.held.pop(token, None)
        if answer is not None:
            writer.send([answer[0], rid, *answer[2:]])
        elif token in self.fetching:
            self.fetching[token].append((writer, rid))
        else:
            writer.send([Op.ERROR, rid, None, (
                f"replica {self.replica_id} holds no value for this chained call (fetched "
                f"already, released, or dropped after {HOLD_TTL_S} s); call again")])

    def release(self, tokens: list[str]) -> None:
        """Nobody will fetch these: drop their values (held, or still to come)."""
        for token in tokens:
            self.held.pop(token, None)
            if token in self.fetching and not self.fetching[token]:
                del self.fetching[token]
            stream = self.streams.get(token)
            if stream is not None and stream.fetcher is None:
                del self.streams[token]

    def _expire_stream(self, token: str) -> None:
        stream = self.streams.get(token)
        if stream is not None and stream.fetcher is None:
            del self.streams[token]
