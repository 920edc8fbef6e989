"""The HTTP proxies: one per node (``location="EveryNode"``, the default) or one
on the head (``"HeadOnly"``), kept by the controller.

The head's proxy listens on ``http_options["port"]``; a proxy on another node on
``node_port`` when given, else on ``port`` too unless a proxy of another node
already uses that host (nodes of one machine: an ephemeral port of its own).
``serve.status().proxies`` says where each one listens. A proxy that fails to
start or stops answering is started again (after ``RETRY_S``); the proxy of a
node that left is dropped. :class:`ProxySet` runs on the controller's thread and
holds no lock of the controller's (``nodes()`` and the checks are remote calls).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import fedexec

LOCATIONS = ("EveryNode", "HeadOnly")
CHECK_S = 1.0
RETRY_S = 3.0


class _Proxy:
    __slots__ = ("actor", "check_ref", "info", "message", "port", "ready_ref", "since",
                 "status")

    def __init__(self, actor: Any, port: int, info: dict[str, Any] | None = None) -> None:
        """A proxy just started (``info`` None) or adopted, running (its ``ready()``)."""
        self.actor, self.port = actor, port
        self.ready_ref: Any = None if info else actor.ready.remote()
        self.check_ref: Any = None
        self.info: dict[str, Any] = dict(info or {})
        self.status = "HEALTHY" if info else "STARTING"
        self.message, self.since = "", time.monotonic()


def _host_of(node: dict[str, Any]) -> str:
    """The host part of a node's address ("" for a local socket path)."""
    address = str(node.get("address") or "")
    return address.rpartition(":")[0] if ":" in address and not address.startswith("/") \
        else ""


class ProxySet:
    """The proxies of one serve instance (see the module docstring)."""

    def __init__(self, ex: fedexec.Executor, http_options: dict[str, Any],
                 detached: bool) -> None:
        self.ex, self.options, self.detached = ex, http_options, detached
        self.lock = threading.Lock()
        self.proxies: dict[str, _Proxy] = {}
        self.failed_at: dict[str, float] = {}
        self.failures: dict[str, str] = {}  # node id -> why its last proxy failed
        self.enabled = False
        self.next_check = 0.0
        self.head: str | None = None
        self.controller: Any = None  # its handle, which every proxy gets

    # ------------------------------------------------------------ placement
    def _nodes(self) -> list[dict[str, Any]]:
        nodes = [n for n in self.ex.nodes() if n.get("alive", True)]
        heads = [n["node_id"] for n in nodes if n.get("is_head")]
        if heads:
            self.head = heads[0]
        elif self.head is None or self.head not in {n["node_id"] for n in nodes}:
            self.head = fedexec.get_runtime_context().get_node_id()  # the controller's
        return nodes

    def _port_for(self, node: dict[str, Any], nodes: list[dict[str, Any]]) -> int:
        port = int(self.options["port"])
        if node["node_id"] == self.head:
            return port
        if self.options.get("node_port") is not None:
            return int(self.options["node_port"])
        host = _host_of(node)
        shared = [n for n in nodes if n["node_id"] != node["node_id"] and _host_of(n) == host
                  and (n["node_id"] == self.head or n["node_id"] in self.proxies)]
        return 0 if shared else port

    def _start(self, node: dict[str, Any], nodes: list[dict[str, Any]]) -> _Proxy:
        from ._proxy import Proxy

        port = self._port_for(node, nodes)
        life = {"lifetime": "detached"} if self.detached else {}
        actor = self.ex.options(
            num_cpus=0, max_concurrency=4,
            scheduling_strategy=fedexec.NodeAffinity(node["node_id"], soft=False), **life,
        ).actor(Proxy, self.options["host"], port, self.options["request_timeout_s"],
                self.controller)
        return _Proxy(actor, port)

    # ------------------------------------------------------------ life
    def start_head(self, controller: Any, timeout: float = 60.0) -> dict[str, Any]:
        """Start the head's proxy and wait until it listens; then the others follow
        (``reconcile``). Raises the proxy's error (a port in use: ServeError)."""
        self.controller = controller
        nodes = self._nodes()
        head = next(n for n in nodes if n["node_id"] == self.head)
        with self.lock:
            existing = self.proxies.get(head["node_id"])
            if existing is not None and existing.status == "HEALTHY":
                self.enabled = True
                return existing.info
            proxy = self._start(head, nodes)
        try:
            info = dict(proxy.ready_ref.result(timeout))
        except Exception as exc:
            self._kill(proxy)
            raise getattr(exc, "cause", exc) from None
        with self.lock:
            proxy.info, proxy.status = info, "HEALTHY"
            self.proxies[head["node_id"]] = proxy
            self.enabled = True
        return info

    def reconcile(self) -> bool:
        """One pass (at most every ``CHECK_S``): start missing proxies, take in the
        started ones, check and replace the others. True when something changed."""
        now = time.monotonic()
        if not self.enabled or now < self.next_check:
            return False
        self.next_check = now + CHECK_S
        nodes = self._nodes()
        by_id = {n["node_id"]: n for n in nodes}
        wanted = set(by_id) if self.options.get("location") != "HeadOnly" \
            else {str(self.head)}
        changed = False
        with self.lock:
            for node_id in list(self.proxies):
                if node_id not in wanted:  # its node left (or the location changed)
                    self._kill(self.proxies.pop(node_id))
                    changed = True
            for node_id, proxy in list(self.proxies.items()):
                changed |= self._check(node_id, proxy, now)
            for node_id in sorted(wanted - set(self.proxies), key=lambda n: n != self.head):
                if now - self.failed_at.get(node_id, -RETRY_S) >= RETRY_S:
                    self.proxies[node_id] = self._start(by_id[node_id], nodes)
                    changed = True
        return changed

    def _check(self, node_id: str, proxy: _Proxy, now: float) -> bool:
        ref = proxy.ready_ref if proxy.status == "STARTING" else proxy.check_ref
        if ref is None:
            proxy.check_ref = proxy.actor.ready.remote()
            return False
        if not ref.done():
            if now - proxy.since > 30:
                self._failed(node_id, proxy, "did not answer within 30 s")
                return True
            return False
        proxy.check_ref, proxy.since = None, now
        try:
            info = dict(ref.result(0))
        except Exception as exc:
            self._failed(node_id, proxy, str(getattr(exc, "cause", exc)))
            return True
        changed = proxy.status != "HEALTHY" or info != proxy.info
        proxy.info, proxy.status = info, "HEALTHY"
        self.failures.pop(node_id, None)
        return changed

    def _failed(self, node_id: str, proxy: _Proxy, why: str) -> None:
        self._kill(proxy)
        self.proxies.pop(node_id, None)
        self.failed_at[node_id] = time.monotonic()
        self.failures[node_id] = why

    def _kill(self, proxy: _Proxy) -> None:
        try:
            self.ex.kill(proxy.actor)
        except Exception:
            pass

    def shutdown(self, timeout: float = 15.0) -> list[int]:
        """Stop every proxy (killed after ``timeout`` s in all); the pids of those
        that had started."""
        with self.lock:
            self.enabled = False
            proxies, self.proxies = list(self.proxies.values()), {}
        stops = [p.actor.stop.remote() for p in proxies]
        deadline = time.monotonic() + timeout
        for proxy, stop in zip(proxies, stops):
            try:
                stop.result(max(0.0, deadline - time.monotonic()))
            except Exception:
                pass  # dead or hung: the kill ends it
            self._kill(proxy)
        return [p.info["pid"] for p in proxies if "pid" in p.info]

    # ------------------------------------------------------------ views
    def status(self) -> dict[str, dict[str, Any]]:
        """Node id -> where its proxy listens and how it is."""
        with self.lock:
            out = {node_id: {"host": p.info.get("host", self.options["host"]),
                             "port": p.info.get("port", p.port), "pid": p.info.get("pid"),
                             "status": p.status, "message": p.message}
                   for node_id, p in self.proxies.items()}
            for node_id, why in self.failures.items():
                if node_id not in out:
                    out[node_id] = {"host": self.options["host"], "port": None, "pid": None,
                                    "status": "UNHEALTHY", "message": why}
            return out

    def state(self) -> dict[str, Any]:
        """What a restarted controller needs to adopt the running proxies."""
        with self.lock:
            return {"enabled": self.enabled, "head": self.head, "controller": self.controller,
                    "proxies": {n: (p.actor, p.port, p.info) for n, p in self.proxies.items()
                                if p.status == "HEALTHY"}}

    def restore(self, state: dict[str, Any]) -> None:
        with self.lock:
            self.enabled, self.head = state["enabled"], state["head"]
            self.controller = state["controller"]
            for node_id, (actor, port, info) in state["proxies"].items():
                self.proxies[node_id] = _Proxy(actor, port, info)


def check_location(location: Any) -> str:
    """``location`` if it is a known proxy location, else ValueError."""
    if location not in LOCATIONS:
        raise ValueError(f"http_options location must be one of {list(LOCATIONS)}, got "
                         f"{location!r}")
    return str(location)
