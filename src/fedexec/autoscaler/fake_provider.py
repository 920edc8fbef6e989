"""The ``fake`` provider: simulated worker nodes that join a real head, for scale
tests of the autoscaler (``provider: {type: fake}``).

Each simulated node speaks the node side of the native protocol to the head over
its own TCP connection: it authenticates with the cluster token, says HELLO as a
node offering its node type's resources, and sends a heartbeat every
``heartbeat_interval`` seconds (``provider.heartbeat_interval``, default 0.5,
the head's default), so the head counts it as a live node with resources and the
monitor and policy see it as any other. It answers the head's status questions
(``fedexec status``, ``fedexec list``) with an empty node's figures. It runs no
code: a task or actor the head sends there fails at once with an error naming the
simulated node (give fake node types a custom resource real work does not ask
for, or keep real work on the head). ``busy(provider_id, resources)`` makes a
node report part of its resources in use, to simulate load.

All the simulated nodes of a provider share one thread (a selector loop), so a
thousand of them cost one thread and a thousand sockets. They live in the process
that made the provider (the monitor): terminating one closes its connection, and
the head declares it dead after its heartbeat timeout.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from .providers import TAG_NODE_ID, TAG_NODE_TYPE, TAG_STATUS

__all__ = ["FakeProvider"]

_NO_CODE = ("node {node} is a simulated node of the autoscaler's fake provider: it runs "
            "no code. Give fake node types a custom resource that real work does not ask "
            "for, or use the local provider")


class _SimNode:
    """One simulated node: its connection, resources and tags."""

    __slots__ = ("buf", "node_id", "reader", "resources", "sock", "tags", "used")

    def __init__(self, node_type: str, resources: Mapping[str, float],
                 tags: Mapping[str, str]):
        from ..backends.native.protocol import FrameReader

        self.node_id = f"fake{uuid.uuid4().hex[:24]}"
        self.resources = {k: float(v) for k, v in resources.items()}
        self.used: dict[str, float] = {}
        self.tags = {**tags, TAG_NODE_TYPE: node_type, TAG_STATUS: "launching"}
        self.sock: socket.socket | None = None
        self.reader = FrameReader()
        self.buf = bytearray()

    def available(self) -> dict[str, float]:
        return {k: max(0.0, v - self.used.get(k, 0.0)) for k, v in self.resources.items()}


class FakeProvider:
    """Simulated nodes joining the head at ``head_address`` (see the module
    docstring); the plugin interface of :class:`~.providers.NodeProvider`.
    ``config``: the ``provider`` section (``heartbeat_interval``)."""

    def __init__(self, cluster_name: str, head_address: str, token: str | None,
                 config: Mapping[str, Any] | None = None):
        self.cluster_name = cluster_name
        self.head_address = head_address
        self._token = token
        self.interval = float((config or {}).get("heartbeat_interval", 0.5))
        self._nodes: dict[str, _SimNode] = {}  # provider id (= node id) -> node
        self._joining: list[_SimNode] = []
        self._closing: list[_SimNode] = []  # terminated: the loop closes them
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._target: Any = None

    # ------------------------------------------------------- NodeProvider
    def create_node(self, node_type: str, resources: Mapping[str, float],
                    node_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        node = _SimNode(node_type, resources, tags)
        with self._lock:
            self._nodes[node.node_id] = node
            self._joining.append(node)
        self._ensure_loop()
        self._wake()
        return node.node_id

    def terminate_node(self, provider_id: str) -> None:
        with self._lock:
            node = self._nodes.pop(provider_id, None)
            if node is not None:
                self._closing.append(node)
        self._wake()

    def non_terminated_nodes(self, tag_filters: Mapping[str, str] | None = None
                             ) -> list[str]:
        want = dict(tag_filters or {})
        with self._lock:
            return sorted(pid for pid, n in self._nodes.items()
                          if all(n.tags.get(k) == v for k, v in want.items()))

    def node_tags(self, provider_id: str) -> dict[str, str]:
        node = self._nodes.get(provider_id)
        return dict(node.tags) if node is not None else {}

    def node_ip(self, provider_id: str) -> str | None:
        return "127.0.0.1" if provider_id in self._nodes else None

    def node_alive(self, provider_id: str) -> bool:
        """False once the node's connection to the head is gone (or never came)."""
        node = self._nodes.get(provider_id)
        return node is not None and not node.tags[TAG_STATUS].startswith("failed")

    # ------------------------------------------------------- simulation
    def busy(self, provider_id: str, resources: Mapping[str, float]) -> None:
        """Report ``resources`` of the node as in use from its next heartbeat on
        ({} : idle again). ``KeyError`` for an unknown node."""
        self._nodes[provider_id].used = {k: float(v) for k, v in resources.items()}

    def wait_joined(self, timeout: float) -> bool:
        """Wait until no node is launching any more; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not any(n.tags[TAG_STATUS] == "launching" for n in self._nodes.values()):
                    return True
            time.sleep(0.02)
        return False

    def wait_launches(self, timeout: float | None = None) -> None:
        """For the monitor's shutdown (as the other providers): wait for the joins."""
        self.wait_joined(60.0 if timeout is None else timeout)

    def close(self) -> None:
        """Disconnect every simulated node and stop the loop thread."""
        with self._lock:
            self._closing += self._nodes.values()
            self._nodes.clear()
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(10)

    # ------------------------------------------------------- the loop
    def _ensure_loop(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="fedexec-autoscaler-fake-nodes")
                self._thread.start()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _fail(self, node: _SimNode, why: str) -> None:
        node.tags[TAG_STATUS] = f"failed: {why}"
        self._close(node)

    def _close(self, node: _SimNode) -> None:
        sock, node.sock = node.sock, None
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _join(self, node: _SimNode) -> None:
        """Connect, authenticate and say HELLO (blocking, bounded); WELCOME comes
        through the loop."""
        from ..backends.native import cluster
        from ..backends.native.protocol import Op, client_handshake, pack_frame

        try:
            if self._target is None:
                self._target = cluster.resolve(self.head_address, self._token)
            sock = cluster.connect(self._target["target"], timeout=10.0)
            client_handshake(sock, self._target["token"], timeout=10.0, role="node")
            sock.sendall(pack_frame([[Op.HELLO, "node", 0, node.node_id,
                                      {"address": "", "total": node.resources}]]))
        except Exception as exc:
            self._fail(node, f"{type(exc).__name__}: {exc}")
            return
        if node.node_id not in self._nodes:  # terminated while it joined
            sock.close()
            return
        sock.setblocking(False)
        node.sock = sock
        self._sel.register(sock, selectors.EVENT_READ, node)

    def _loop(self) -> None:
        last_beat = 0.0
        while not self._stop.is_set():
            with self._lock:
                joining, self._joining = self._joining, []
                closing, self._closing = self._closing, []
            for node in closing:
                self._close(node)
            for node in joining:
                if node.node_id in self._nodes:
                    self._join(node)
            now = time.monotonic()
            if now - last_beat >= self.interval:
                last_beat = now
                self._heartbeat()
            for key, _ in self._sel.select(timeout=max(0.0, self.interval - (now - last_beat))):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                self._read(key.data)
            self._flush()
        for node in list(self._nodes.values()) + self._closing:
            self._close(node)

    def _heartbeat(self) -> None:
        from ..backends.native.protocol import Op, pack_frame

        for node in list(self._nodes.values()):
            if node.sock is not None and node.tags[TAG_STATUS] == "running":
                node.buf += pack_frame([[Op.HEARTBEAT, node.available(), 0, node.resources]])

    def _flush(self) -> None:
        for node in list(self._nodes.values()):
            if node.sock is None or not node.buf:
                continue
            try:
                sent = node.sock.send(node.buf)
            except BlockingIOError:
                continue
            except OSError as exc:
                self._fail(node, f"the connection to the head broke ({exc})")
                continue
            del node.buf[:sent]

    def _read(self, node: _SimNode) -> None:
        if node.sock is None:
            return
        try:
            data = node.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(node, f"the connection to the head broke ({exc})")
            return
        if not data:
            self._fail(node, "the head closed the connection")
            return
        for frame in node.reader.feed(data):
            for msg in frame:
                self._handle(node, msg)

    def _handle(self, node: _SimNode, msg: list[Any]) -> None:
        from ..backends.native.protocol import Call, ErrorKind, Kind, Op, pack_frame

        op = msg[0]
        out: list[Any] = []
        if op == Op.WELCOME:
            node.tags.update({TAG_NODE_ID: node.node_id, TAG_STATUS: "running"})
        elif op == Op.NODE_DEAD and msg[1] == node.node_id:
            self._fail(node, f"the head declared it dead: {msg[2]}")
            return
        elif op == Op.REQUEST:
            rid, call = msg[1], msg[2]
            if call == Call.STATS:
                out.append([Op.REPLY, rid, True, self._stats(node)])
            elif call == Call.LIST:
                out.append([Op.REPLY, rid, True, []])
            elif call == Call.AUTOSCALER_REPORT:  # nothing here restarts actors
                out.append([Op.REPLY, rid, True, True])
            else:
                out.append([Op.REPLY, rid, False, "UnsupportedOnBackendError: "
                            + _NO_CODE.format(node=node.node_id)])
        elif op in (Op.SUBMIT, Op.ACTOR_CALL):
            return_ids = msg[2] if op == Op.SUBMIT else msg[3]
            out += [[Op.OBJECT, rid, Kind.FAILED, int(ErrorKind.UNAVAILABLE),
                     _NO_CODE.format(node=node.node_id)] for rid in return_ids]
        if out:
            node.buf += pack_frame(out)

    def _stats(self, node: _SimNode) -> dict[str, Any]:
        """What ``Call.STATS`` answers for an empty node."""
        return {"node_id": node.node_id, "objects": 0, "tasks": 0, "forwarded": 0,
                "actors": 0, "workers": {}, "queued": 0, "queued_shapes": [],
                "pending_groups": [], "transfers": {}, "lineage": 0, "host": {},
                "store": {"used_bytes": 0, "capacity": 0, "num_objects": 0,
                          "num_spilled": 0, "spilled_bytes": 0}}
