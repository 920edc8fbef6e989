"""HTTP on the replica side: an ASGI scope from a request frame, and the
handler's result turned into response frames.

A result becomes one ``RESPONSE`` frame when it is a plain value (dict/list →
JSON, str → text, bytes → octet-stream); a starlette ``Response`` (streaming
ones included) and an ASGI app (FastAPI ingress) run against a ``send`` that
turns ASGI messages into ``RESPONSE`` or ``START``/``CHUNK``/``END`` frames.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._wire import Op, Writer

JSON = [(b"content-type", b"application/json")]
TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
OCTETS = [(b"content-type", b"application/octet-stream")]

Receive = Callable[[], Awaitable[dict[str, Any]]]


def make_scope(method: str, path: str, query: bytes, headers: list[list[bytes]],
               root_path: str) -> dict[str, Any]:
    """The ASGI HTTP scope of a forwarded request."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": query, "root_path": root_path,
        "headers": [(k, v) for k, v in headers], "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }


def make_receive(body: bytes) -> Receive:
    """An ASGI ``receive`` that gives ``body`` once, then a disconnect."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    raise TypeError(
        f"a handler returned a {type(obj).__name__}, which is not JSON serializable; return "
        "a str, bytes, dict, list or a starlette Response")


def encode_value(value: Any) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(headers, body) of a plain handler result."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return OCTETS, bytes(value)
    if isinstance(value, str):
        return TEXT, value.encode()
    return JSON, json.dumps(value, default=_json_default).encode()


def encode_chunk(value: Any) -> bytes:
    """The bytes of one streamed item."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, default=_json_default).encode()


class FrameSend:
    """An ASGI ``send`` writing one request's response as frames."""

    __slots__ = ("_rid", "_start", "_writer", "done", "started")

    def __init__(self, rid: int, writer: Writer) -> None:
        self._rid, self._writer = rid, writer
        self._start: MutableMapping[str, Any] | None = None
        self.done = self.started = False

    async def __call__(self, msg: MutableMapping[str, Any]) -> None:
        kind = msg["type"]
        if kind == "http.response.start":
            self._start = msg
            self.started = True
            return
        if kind != "http.response.body" or self.done:
            return
        body, more = msg.get("body", b""), msg.get("more_body", False)
        start = self._start
        if start is not None:  # cleared once sent: a frame too large leaves it for fail()
            headers = list(start.get("headers", ()))
            if not more:
                self._writer.send([Op.RESPONSE, self._rid, start["status"], headers, body])
                self._start = None
                self.done = True
                return
            self._writer.send([Op.START, self._rid, start["status"], headers])
            self._start = None
        if body:
            self._writer.send([Op.CHUNK, self._rid, body])
        if not more:
            self._writer.send([Op.END, self._rid])
            self.done = True

    def fail(self, text: str) -> None:
        """End the response with the error ``text`` (a 500 if nothing was sent yet)."""
        if self.done:
            return
        self.done = True
        if not self.started or self._start is not None:
            self._writer.send([Op.RESPONSE, self._rid, 500, TEXT, text.encode()])
        else:
            self._writer.send([Op.CHUNK, self._rid, f"\n{text}".encode()])
            self._writer.send([Op.END, self._rid])
