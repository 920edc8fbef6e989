"""A replica: one actor process running one copy of a deployment.

::

    controller ── fedexec actor calls ──▶ Replica (ready, reconfigure, check_health,
                                                   stats, drain, call)
    routers ─── direct frames (_wire) ──▶ _Server on the serve loop ──▶ user code

The actor itself is a threaded actor for the control calls; requests arrive on
the replica's own listener (the node's address, 127.0.0.1 on one machine; an
ephemeral port) and run on the process's
serve loop: async handlers there, sync ones on a thread pool.

At most ``max_ongoing_requests`` run at once (several routers may each fill
their share): the rest wait here, in arrival order, and are *not started*. A
request starts when its handler is called; the replica then tells its router
(``Writer.mark_started``: one STARTED frame per connection per event-loop
turn, in the same write as that turn's answers), so a router whose connection
breaks knows which requests it may send again. A request whose handler began
but whose STARTED frame had not left when the process died counts as not
started. Chaining (HOLD, FETCH: see ``_chain``) is answered here too.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle

from fedexec.exceptions import FrameTooLargeError
from fedexec.util.serialization import loads as safe_loads

from . import _chain, _context, _loop
from ._holds import Holds
from ._http import TEXT, FrameSend, encode_chunk, encode_value, make_receive, make_scope
from ._wire import MAC, MAGIC, MAX_FRAME, NONCE, FrameReader, Op, Writer, mac, new_nonce


class _UserCode:
    """The user's deployment instance, and how to call it."""

    def __init__(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.is_function = not inspect.isclass(target)
        self.instance = None if self.is_function else target(*args, **kwargs)
        self.asgi_app = None
        if not self.is_function:
            from ._ingress import bound_asgi_app

            self.asgi_app = bound_asgi_app(target, self.instance)
        self.http = target if self.is_function else getattr(  # noqa: B004 - the method
            self.instance, "__call__", None)
        self.pool = ThreadPoolExecutor(32, thread_name_prefix="fedexec-serve-sync")

    def method(self, name: str) -> Any:
        if name == "__call__":
            if self.http is None:
                raise AttributeError("the deployment has no __call__ method; call a method "
                                     "by name: handle.<method>.remote(...)")
            return self.http
        if self.is_function:
            raise AttributeError(f"a function deployment has no method {name!r}; "
                                 "call handle.remote(...)")
        if name.startswith("_"):
            raise AttributeError(f"method {name!r} is private and cannot be called by a handle")
        return getattr(self.instance, name)

    async def invoke(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``fn``: a coroutine function on the loop, a sync one on the pool."""
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            result = fn(*args, **kwargs)
        elif inspect.isgeneratorfunction(fn):
            return fn(*args, **kwargs)
        else:
            # the actor's context goes along: fedexec calls in user code reach its runtime
            ctx = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.pool, lambda: ctx.run(fn, *args, **kwargs))
        if inspect.isawaitable(result):
            result = await result
        return result

    async def items(self, gen: Any) -> Any:
        """Iterate a sync or async generator, the sync one on the pool."""
        if inspect.isasyncgen(gen):
            async for item in gen:
                yield item
            return
        loop = asyncio.get_running_loop()
        done = object()
        ctx = contextvars.copy_context()
        while True:
            item = await loop.run_in_executor(self.pool, lambda: ctx.run(next, gen, done))
            if item is done:
                return
            yield item


def _node_address() -> str:
    """The address this node is reached at in the cluster (127.0.0.1 on a cluster
    of one machine), where the replica listens for routers."""
    try:
        from fedexec.util import get_node_ip_address

        return get_node_ip_address() or "127.0.0.1"
    except Exception:
        return "127.0.0.1"


def _is_stream(value: Any) -> bool:
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


def _oversized(what: str, exc: FrameTooLargeError) -> FrameTooLargeError:
    return FrameTooLargeError(
        f"{what} is over serve's {MAX_FRAME}-byte message limit ({exc}); send it in parts "
        "(a generator, with stream=True for a handle call), return less, or set "
        "FEDEXEC_SERVE_MAX_FRAME_BYTES higher on every node")


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class _Server(asyncio.Protocol):
    """One router's connection to this replica: handshake, then request frames."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica
        self.authed = False
        self.nonce = new_nonce()
        self.buf = b""
        self.reader = FrameReader()
        self.writer: Writer | None = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(MAGIC + self.nonce)

    def data_received(self, data: bytes) -> None:
        if not self.authed:
            self.buf += data
            if len(self.buf) < MAC + NONCE:
                return
            proof, nonce_c, rest = self.buf[:MAC], self.buf[MAC:MAC + NONCE], \
                self.buf[MAC + NONCE:]
            import hmac

            if not hmac.compare_digest(proof, mac(self.r.secret, b"client", self.nonce)):
                self.transport.close()  # nothing of an unauthenticated peer is parsed
                return
            self.authed, self.buf = True, b""
            self.transport.write(mac(self.r.secret, b"server", nonce_c))
            loop = asyncio.get_running_loop()
            self.writer = Writer(self.transport, loop.call_soon)
            if not rest:
                return
            data = rest
        try:
            frames = self.reader.feed(data)
        except ValueError:
            self.transport.close()
            return
        writer = self.writer
        assert writer is not None
        for frame in frames:
            self.r.start(frame, writer)
        writer.kick()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.r.connections.discard(self)


class Replica:
    """The replica actor (see the module docstring)."""

    def __init__(self, deployment: str, app: str, replica_id: str, target: Any,
                 init: bytes, user_config: Any, secret: bytes, root_path: str,
                 max_ongoing: int = 100, controller: Any = None) -> None:
        _context.remember_executor()
        if controller is not None:
            from ._client import pin_controller

            pin_controller(controller)
        self.deployment, self.app, self.replica_id = deployment, app, replica_id
        self.secret, self.root_path = secret, root_path
        init_args, init_kwargs = safe_loads(init)  # pickled once per version (_controller)
        self.code = _UserCode(getattr(target, "value", target), init_args, init_kwargs)
        self.ongoing = 0  # running + waiting here
        self.running = 0
        self.max_ongoing = max_ongoing
        self.waiting: collections.deque[tuple[list[Any], Writer]] = collections.deque()
        self.total = 0
        self.last_request = 0.0
        self.draining = False
        self.connections: set[_Server] = set()
        self.loop = _loop.get_loop()
        self.holds = Holds(self.loop, replica_id)  # chaining (see _chain, _holds)
        from starlette.requests import Request
        from starlette.responses import Response

        self.Request, self.Response = Request, Response
        if user_config is not None:
            self.reconfigure(user_config)
        self.host = _node_address()
        self.port = _loop.submit(self._listen()).result(30)

    async def _listen(self) -> int:
        loop = asyncio.get_running_loop()

        def factory() -> _Server:
            proto = _Server(self)
            self.connections.add(proto)
            return proto

        self.server = await loop.create_server(factory, self.host, 0, backlog=1024)
        return int(self.server.sockets[0].getsockname()[1])

    # ---------------------------------------------------------------- control calls
    def ready(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "pid": os.getpid()}

    def reconfigure(self, user_config: Any) -> None:
        """Hand ``user_config`` to the user's ``reconfigure`` (if it has one)."""
        fn = getattr(self.code.instance, "reconfigure", None)
        if fn is None:
            if self.code.instance is not None:
                raise AttributeError(
                    f"deployment {self.deployment!r} got a user_config but has no "
                    "reconfigure(self, config) method; add one or drop user_config")
            return
        _loop.submit(self.code.invoke(fn, (user_config,), {})).result()

    def check_health(self) -> bool:
        fn = getattr(self.code.instance, "check_health", None)
        if fn is not None:
            _loop.submit(self.code.invoke(fn, (), {})).result()
        return True

    def stats(self) -> dict[str, Any]:
        """Requests here now and in all; ``held``: values kept for chained calls
        (or reserved for one still running)."""
        return {"ongoing": self.ongoing, "total": self.total,
                "held": self.holds.count()}

    def drain(self, quiet_s: float, timeout_s: float) -> int:
        """Wait until no request ran for ``quiet_s`` (at most ``timeout_s``);
        the number still running when it returns."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ongoing == 0 and time.monotonic() - self.last_request >= quiet_s:
                break
            time.sleep(0.02)
        return self.ongoing

    def stop(self) -> None:
        """Close the listener, the routers' connections and the sync pool (the
        controller calls it before killing the actor: on a backend whose actors
        are threads of one process nothing of the replica is left running)."""
        async def close() -> None:
            self.server.close()
            for conn in list(self.connections):
                conn.transport.close()

        _loop.submit(close()).result(10)
        self.code.pool.shutdown(wait=False, cancel_futures=True)

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A handle call through fedexec itself (the classic handle's path)."""
        return _loop.submit(self._call_value(method, args, kwargs)).result()

    async def _call_value(self, method: str, args: tuple[Any, ...],
                          kwargs: dict[str, Any]) -> Any:
        self.ongoing += 1
        self.total += 1
        try:
            return await self.code.invoke(self.code.method(method), args, kwargs)
        finally:
            self.ongoing -= 1
            self.last_request = time.monotonic()

    # ---------------------------------------------------------------- requests
    def start(self, frame: list[Any], writer: Writer) -> None:
        """A request frame arrived: run it now if a slot is free, else queue it."""
        op = frame[0]
        if op == Op.CALL:
            self.holds.begin(writer, frame)
        elif op != Op.HTTP:
            if op == Op.HOLD:
                self.holds.hold(frame, writer)
            elif op == Op.FETCH:
                self.holds.fetch(frame, writer)
            elif op == Op.RELEASE:
                self.holds.release(frame[2])
            return
        self.ongoing += 1
        self.total += 1
        if self.running < self.max_ongoing:
            self._run(frame, writer)
        else:
            self.waiting.append((frame, writer))

    def _run(self, frame: list[Any], writer: Writer) -> None:
        self.running += 1
        coro = self._http(frame, writer) if frame[0] == Op.HTTP else \
            self._handle_call(frame, writer)
        self.loop.create_task(coro).add_done_callback(self._finished)
        writer.mark_started(frame[1])

    def _finished(self, _task: Any) -> None:
        self.ongoing -= 1
        self.running -= 1
        self.last_request = time.monotonic()
        while self.waiting and self.running < self.max_ongoing:
            frame, writer = self.waiting.popleft()
            if writer.closed:  # its router is gone: nobody waits for the answer
                self.ongoing -= 1
                self.holds.forget(writer, frame[1])
                continue
            self._run(frame, writer)
            writer.kick()

    async def _http(self, frame: list[Any], writer: Writer) -> None:
        _, rid, method, path, query, headers, body, root_path = frame
        scope = make_scope(method, path, query, headers, root_path)
        receive = make_receive(body)
        send = FrameSend(rid, writer)
        code = self.code
        try:
            if code.asgi_app is not None:
                await code.asgi_app(scope, receive, send)
                return
            if code.http is None:
                raise TypeError(f"deployment {self.deployment!r} has no __call__ method to "
                                "answer HTTP requests; add one or use @serve.ingress")
            result = await code.invoke(code.http, (self.Request(scope, receive),), {})
            if isinstance(result, self.Response):
                await result(scope, receive, send)
            elif _is_stream(result):
                writer.send([Op.START, rid, 200, TEXT])
                send.started = True
                async for item in code.items(result):
                    writer.send([Op.CHUNK, rid, encode_chunk(item)])
                writer.send([Op.END, rid])
                send.done = True
            else:
                headers_out, payload = encode_value(result)
                writer.send([Op.RESPONSE, rid, 200, headers_out, payload])
                send.done = True
        except FrameTooLargeError as exc:  # the answer did not fit a frame: a 500 saying so
            send.fail(str(_oversized(f"the response of deployment {self.deployment!r}", exc)))
        except Exception as exc:  # user code failed: a 500 with its text, keep serving
            send.fail(_error_text(exc))
        finally:
            if not send.done:
                send.fail("the handler returned without a response")

    async def _handle_call(self, frame: list[Any], writer: Writer) -> None:
        _, rid, method, payload, stream = frame
        try:
            args, kwargs = await _chain.resolve_args(*safe_loads(payload))
            result = await self.code.invoke(self.code.method(method), args, kwargs)
            if stream:
                if not _is_stream(result):
                    raise TypeError(f"{method} returned a {type(result).__name__}, not a "
                                    "generator; call it without stream=True")
                async for item in self.code.items(result):
                    self.holds.emit(writer, [Op.ITEM, rid, cloudpickle.dumps(item)])
                self.holds.emit(writer, [Op.END, rid])
            else:
                if _is_stream(result):
                    raise TypeError(f"{method} returned a generator; call it through "
                                    "handle.options(stream=True)")
                self.holds.answer(writer, [Op.RESULT, rid, cloudpickle.dumps(result)])
        except Exception as exc:
            if isinstance(exc, FrameTooLargeError):
                exc = _oversized(f"the value of {self.deployment}.{method}", exc)
            try:
                blob: bytes | None = cloudpickle.dumps(exc)
            except Exception:
                blob = None
            error = [Op.ERROR, rid, blob, _error_text(exc)]
            if stream:
                self.holds.emit(writer, error)
            else:
                self.holds.answer(writer, error)
