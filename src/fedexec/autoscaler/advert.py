"""What a native client asks before refusing work that fits no current node: the
node types a running autoscaler may launch (see :mod:`.requests`, whose actor
holds them). Kept apart so the client imports only this, and nothing above the
backends' layer."""

from __future__ import annotations

import time
import weakref
from typing import Any

__all__ = ["ACTOR_NAME", "NAMESPACE", "autoscaler_node_types"]

ACTOR_NAME = "fedexec-autoscaler-requests"
NAMESPACE = "fedexec-autoscaler"

#: how long a client trusts the node types found (a burst of submissions asks once)
CACHE_SECONDS = 1.0
_cache: weakref.WeakKeyDictionary[Any, tuple[float, list[dict[str, float]]]] = \
    weakref.WeakKeyDictionary()


def autoscaler_node_types(backend: Any) -> list[dict[str, float]] | None:
    """For a native client about to refuse work no node fits: the resource shapes
    of the node types a running autoscaler may launch, or None when none runs.
    ``backend`` is the client (``get_actor``/``submit_actor_call``); a list found
    is reused for :data:`CACHE_SECONDS` (no autoscaler: asked again each time)."""
    from ..exceptions import FedexecError
    from ..options import MethodOptions

    cached = _cache.get(backend)
    if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    try:
        handle = backend.get_actor(ACTOR_NAME, NAMESPACE)
        [ref] = backend.submit_actor_call(handle, "node_types", (), {}, MethodOptions())
        shapes = ref.result(timeout=30)
    except (ValueError, FedexecError):  # no actor, it is gone, or it did not answer
        shapes = None
    if shapes is None:
        return None
    found = [dict(s) for s in shapes]
    _cache[backend] = (time.monotonic(), found)
    return found
