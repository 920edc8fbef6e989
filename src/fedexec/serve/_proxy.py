"""The HTTP proxy: uvicorn on the serve loop, forwarding to replicas.

::

    client ─HTTP─▶ uvicorn ─▶ ProxyApp: longest route_prefix ─▶ Router ─frames─▶ replica
                                 /-/healthz  /-/routes  /-/metrics

The proxy reads the body, sends method, path, query, headers and body as one
frame (no pickling), and writes back the replica's status, headers and body
(or its chunks as they come). 503 when no replica takes the request within
``request_timeout_s``; 500 with the error text when the handler raised (or its
response was over serve's frame limit); 413 when the request is over that limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from typing import Any

import fedexec
from fedexec.exceptions import FrameTooLargeError

from . import _context, _loop
from ._client import get_client, pin_controller
from ._metrics import ProxyMetrics
from ._wire import MAX_FRAME, Op
from .exceptions import ReplicaDiedError, ServeError

_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_JSON = [(b"content-type", b"application/json")]


async def _read_body(receive: Any) -> bytes:
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    while msg.get("more_body"):
        msg = await receive()
        parts.append(msg.get("body", b""))
    return b"".join(parts)


async def _reply(send: Any, status: int, headers: list[Any], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ProxyApp:
    """The ASGI app of the proxy (see the module docstring)."""

    def __init__(self, request_timeout_s: float, node_id: str = "") -> None:
        self.client = get_client()
        self.node_header = [*_TEXT, (b"x-fedexec-node", node_id.encode())]
        self.timeout = request_timeout_s
        self.metrics = ProxyMetrics(self._gauges)
        self._routes_version = -1
        self._routes: list[tuple[str, str]] = []

    def _gauges(self) -> dict[str, tuple[int, int]]:
        snap = self.client.snapshot
        out = {}
        for key, info in snap["deployments"].items():
            router = self.client.routers.get(key)
            out[key] = (len(info["replicas"]), router.load if router else 0)
        return out

    def routes(self) -> list[tuple[str, str]]:
        snap = self.client.snapshot
        if snap["version"] != self._routes_version:
            self._routes = sorted(snap["routes"].items(), key=lambda kv: -len(kv[0]))
            self._routes_version = snap["version"]
        return self._routes

    def match(self, path: str) -> tuple[str, str] | None:
        for prefix, key in self.routes():
            if prefix == "/" or path == prefix or path.startswith(prefix + "/") \
                    or (prefix.endswith("/") and path.startswith(prefix)):
                return prefix, key
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path.startswith("/-/"):
            await self._builtin(path, send)
            return
        start = time.perf_counter()
        found = self.match(path)
        if found is None:
            routes = ", ".join(p for p, _ in self.routes()) or "none"
            await _reply(send, 404, _TEXT, f"no application serves {path} (routes: {routes})"
                         .encode())
            return
        prefix, key = found
        code = await self._forward(scope, receive, send, prefix, key)
        self.metrics.observe(prefix, code, time.perf_counter() - start)

    async def _forward(self, scope: dict[str, Any], receive: Any, send: Any, prefix: str,
                       key: str) -> int:
        body = await _read_body(receive)
        client = self.client
        if key not in client.snapshot["deployments"]:
            await _reply(send, 503, _TEXT, b"the application is not ready; retry shortly")
            return 503
        router = client.router(key)
        frame = [Op.HTTP, router.next_rid(), scope["method"], scope["path"],
                 scope["query_string"], scope["headers"], body,
                 "" if prefix == "/" else prefix.rstrip("/")]
        try:
            pending = router.try_send(frame)
            if pending is None:
                pending = await asyncio.wait_for(router.send(frame), self.timeout)
            first = await pending.first
        except asyncio.TimeoutError:
            name = key.partition("#")[2]
            await _reply(send, 503, _TEXT, (
                f"no replica of deployment {name!r} could take the request within "
                f"{self.timeout} s (all busy or none running); retry later or add "
                "replicas").encode())
            return 503
        except ReplicaDiedError as exc:
            await _reply(send, 500, _TEXT, str(exc).encode())
            return 500
        except FrameTooLargeError:
            await _reply(send, 413, _TEXT, (
                f"the request ({len(body)} bytes of body) is over serve's {MAX_FRAME}-byte "
                "message limit; send less per request, or set FEDEXEC_SERVE_MAX_FRAME_BYTES "
                "higher on every node").encode())
            return 413
        op = first[0]
        if op == Op.RESPONSE:
            await send({"type": "http.response.start", "status": first[2],
                        "headers": first[3]})
            await send({"type": "http.response.body", "body": first[4]})
            return int(first[2])
        await send({"type": "http.response.start", "status": first[2], "headers": first[3]})
        assert pending.rest is not None
        while True:
            frame = await pending.rest.get()
            if frame[0] == Op.CHUNK:
                await send({"type": "http.response.body", "body": frame[2], "more_body": True})
                continue
            if frame[0] == Op.ERROR:
                await send({"type": "http.response.body", "body": f"\n{frame[3]}".encode(),
                            "more_body": False})
                return 500
            await send({"type": "http.response.body", "body": b""})
            return int(first[2])

    async def _builtin(self, path: str, send: Any) -> None:
        if path == "/-/healthz":  # the header names the node this proxy runs on
            await _reply(send, 200, self.node_header, b"success")
        elif path == "/-/routes":
            routes = {p: k.partition("#")[0] for p, k in self.routes()}
            await _reply(send, 200, _JSON, json.dumps(routes).encode())
        elif path == "/-/metrics":
            await _reply(send, 200, [(b"content-type", b"text/plain; version=0.0.4")],
                         self.metrics.render())
        else:
            await _reply(send, 404, _TEXT, b"unknown endpoint; try /-/healthz, /-/routes, "
                                           b"/-/metrics")


class Proxy:
    """The proxy actor: binds ``host:port`` (0: an ephemeral port) and runs uvicorn
    on the serve loop (the controller starts one per node: see ``_proxies``)."""

    def __init__(self, host: str, port: int, request_timeout_s: float,
                 controller: Any = None) -> None:
        _context.remember_executor()
        if controller is not None:
            pin_controller(controller)
        self.node_id = fedexec.get_runtime_context().get_node_id()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ServeError(
                f"the serve HTTP proxy cannot listen on {host}:{port} ({exc}); stop what "
                "uses that port or pass serve.start(http_options={'port': ...})") from None
        sock.listen(2048)
        sock.setblocking(False)
        self.host, self.port = host, sock.getsockname()[1]
        import uvicorn

        app = ProxyApp(request_timeout_s, self.node_id)
        config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning",
                                http="httptools" if _has("httptools") else "h11",
                                timeout_keep_alive=30, backlog=2048, proxy_headers=False)
        self.server = uvicorn.Server(config)
        self.task = _loop.submit(self.server.serve(sockets=[sock]))
        deadline = time.monotonic() + 30
        while not self.server.started:
            if self.task.done():
                self.task.result()
            if time.monotonic() > deadline:
                raise ServeError("the serve HTTP proxy did not start within 30 s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop uvicorn (closing the port) before the actor is killed."""
        self.server.should_exit = True
        try:
            self.task.result(10)
        except Exception:
            pass

    def ready(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "pid": os.getpid(), "node_id": self.node_id}


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
