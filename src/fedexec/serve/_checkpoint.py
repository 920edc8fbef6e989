"""The controller's checkpoint: its state, kept outside its process.

::

    controller ── save(seq, blob) ──▶ CheckpointStore (a named actor, started
    (restarted) ── load() ─────────▶  with the controller, stopped at shutdown)

The controller runs with ``max_restarts=-1``: when its process dies, fedexec
starts it again, and its ``__init__`` loads the last checkpoint: the
applications, the deployments' specs and targets, the running replicas and
proxies (actor handles, so it adopts them instead of starting others) and the
secret routers and replicas share. A save carries a sequence number; the store
keeps the newest, so saves may be sent without waiting.
"""

from __future__ import annotations

from typing import Any

import cloudpickle

import fedexec
from fedexec.util.serialization import loads as safe_loads

CHECKPOINT_NAME = "SERVE_CHECKPOINT"


class CheckpointStore:
    """The store actor: the newest ``(seq, blob)`` it was sent."""

    def __init__(self) -> None:
        self.seq, self.blob = -1, b""

    def save(self, seq: int, blob: bytes) -> bool:
        if seq > self.seq:
            self.seq, self.blob = seq, blob
        return True

    def load(self) -> tuple[int, bytes]:
        return self.seq, self.blob


def start_store(ex: fedexec.Executor, namespace: str, detached: bool) -> Any:
    """The store actor of this cluster's serve (made if there is none)."""
    life = {"lifetime": "detached"} if detached else {}
    return ex.options(name=CHECKPOINT_NAME, namespace=namespace, num_cpus=0,
                      get_if_exists=True, **life).actor(CheckpointStore)


def load(ex: fedexec.Executor, namespace: str) -> tuple[Any, int, dict[str, Any] | None]:
    """(the store, the last sequence number, the last state) where a store
    exists; (None, -1, None) where not (serve started without one)."""
    try:
        store = ex.get_actor(CHECKPOINT_NAME, namespace=namespace)
    except ValueError:
        return None, -1, None
    seq, blob = store.load.remote().result(60)
    return store, seq, (safe_loads(blob) if blob else None)


def dumps(state: dict[str, Any]) -> bytes:
    return cloudpickle.dumps(state)
