"""This process's link to the serve instance: the controller's routing table
(followed by long-polling), one :class:`Router` per deployment, and the load
reports the autoscaler reads. Lives on the serve loop; one per process.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from typing import Any

from . import _context, _loop
from ._router import Router
from .exceptions import DeploymentNotFoundError, ServeNotRunningError

CONTROLLER_NAME = "SERVE_CONTROLLER"
NAMESPACE = "serve"
LOAD_REPORT_S = 0.2

_lock = threading.Lock()
_client: ServeClient | None = None
_pinned: Any = None


def pin_controller(handle: Any) -> None:
    """Use ``handle`` as the controller in this process (the proxies and replicas
    get it from the controller: a named actor is not found from every node)."""
    global _pinned
    _pinned = handle


def controller_handle(create: bool = False) -> Any:
    """The controller actor; :class:`ServeNotRunningError` when there is none."""
    if _pinned is not None:
        return _pinned
    ex = _context.executor()
    try:
        return ex.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
    except ValueError:
        raise ServeNotRunningError(
            "serve is not running on this cluster; start it with serve.run(app) or "
            "serve.start()") from None


def get_client() -> ServeClient:
    """This process's client (made on first use)."""
    global _client
    with _lock:
        if _client is None or _client.closed:
            _client = ServeClient(controller_handle())
        return _client


def forget_client() -> None:
    """Drop this process's client and pinned controller (after ``serve.shutdown``)."""
    global _client, _pinned
    with _lock:
        client, _client, _pinned = _client, None, None
    if client is not None:
        client.close()


class ServeClient:
    """See the module docstring."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.routers: dict[str, Router] = {}
        self.snapshot: dict[str, Any] = {"version": -1, "deployments": {}, "routes": {}}
        self.closed = False
        self.loop = _loop.get_loop()
        self._changed: asyncio.Event | None = None
        self._reported: dict[str, int] = {}
        self._tasks = [asyncio.run_coroutine_threadsafe(c, self.loop)
                       for c in (self._follow(), self._report_load())]

    def close(self) -> None:
        self.closed = True
        for t in self._tasks:
            t.cancel()

    # -------------------------------------------------------------- routing table
    async def _follow(self) -> None:
        self._changed = asyncio.Event()
        failures = 0
        while not self.closed:
            try:
                snap = await self.controller.listen.remote(self.snapshot["version"], 5.0)
                failures = 0
            except Exception:
                # the controller died: it restarts (routing goes on with the table
                # known); the client ends only once serve is shut down
                failures += 1
                if failures % 20 == 0 and not await self._controller_exists():
                    self._gone()
                    return
                await asyncio.sleep(0.1)
                continue
            if snap["version"] != self.snapshot["version"]:
                self.snapshot = snap
                for key, info in snap["deployments"].items():
                    router = self.routers.get(key)
                    if router is not None:
                        router.update(info["replicas"], info["max_ongoing"])
                self._changed.set()
                self._changed = asyncio.Event()

    async def _controller_exists(self) -> bool:
        """True while our controller is still the cluster's (alive or restarting)."""
        if _pinned is not None:  # a process of serve's own: serve stops it
            return True

        def look() -> bool:
            try:
                return bool(controller_handle() == self.controller)
            except Exception:  # serve shut down (ServeNotRunningError), or the runtime
                return False

        return await self.loop.run_in_executor(None, look)

    def _gone(self) -> None:
        """Serve was shut down: drop this client and stop the serve loop of this
        process (a pooled worker that used a handle keeps no serve thread)."""
        global _client
        self.close()
        with _lock:
            if _client is not self:
                return
            _client = None
        threading.Thread(target=_loop.stop, name="fedexec-serve-stop", daemon=True).start()

    async def wait_for(self, key: str, timeout: float = 30.0) -> Router:
        """The router of deployment ``key`` once the routing table lists it."""
        deadline = self.loop.time() + timeout
        while key not in self.snapshot["deployments"]:
            if self._changed is None or self.loop.time() > deadline:
                if self.loop.time() > deadline:
                    app, _, name = key.partition("#")
                    raise DeploymentNotFoundError(
                        f"no deployment {name!r} in application {app!r} is running; "
                        "serve.status() lists what is")
                await asyncio.sleep(0.01)
                continue
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - self.loop.time()))
            except asyncio.TimeoutError:
                pass
        return self.router(key)

    def router(self, key: str) -> Router:
        router = self.routers.get(key)
        if router is None:
            info = self.snapshot["deployments"][key]
            router = Router(key, self.snapshot["secret"], lambda rid: self._dead(key, rid))
            self.routers[key] = router
            router.update(info["replicas"], info["max_ongoing"])
        return router

    def _dead(self, key: str, replica_id: str) -> None:
        try:
            self.controller.report_dead.remote(key, replica_id)
        except Exception:
            pass

    # -------------------------------------------------------------- load reports
    async def _report_load(self) -> None:
        while not self.closed:
            await asyncio.sleep(LOAD_REPORT_S)
            loads = {k: r.load for k, r in self.routers.items()}
            report = {k: v for k, v in loads.items() if v or self._reported.get(k)}
            if report:
                self._reported = loads
                try:
                    self.controller.record_load.remote(self.id, report)
                except Exception:
                    pass

    def replica_actor(self, key: str, router: Router) -> Any:
        """A running replica's actor handle (random among the listed ones)."""
        import random

        replicas = [r for r in self.snapshot["deployments"][key]["replicas"]
                    if r["replica_id"] not in router.dead]
        if not replicas:
            raise DeploymentNotFoundError(f"deployment {key.partition('#')[2]!r} has no "
                                          "running replica; serve.status() says why")
        return random.choice(replicas)["actor"]
