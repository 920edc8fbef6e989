"""What a native client asks before refusing work that fits no current node: the
node types a running autoscaler may launch (see :mod:`.requests`, whose actor
holds them). Kept apart so the client imports only this, and nothing above the
backends' layer."""

from __future__ import annotations

from typing import Any

__all__ = ["ACTOR_NAME", "NAMESPACE", "autoscaler_node_types"]

ACTOR_NAME = "fedexec-autoscaler-requests"
NAMESPACE = "fedexec-autoscaler"


def autoscaler_node_types(backend: Any) -> list[dict[str, float]] | None:
    """For a native client about to refuse work no node fits: the resource shapes
    of the node types a running autoscaler may launch, or None when none runs.
    ``backend`` is the client (``get_actor``/``submit_actor_call``)."""
    from ..exceptions import FedexecError
    from ..options import MethodOptions

    try:
        handle = backend.get_actor(ACTOR_NAME, NAMESPACE)
        [ref] = backend.submit_actor_call(handle, "node_types", (), {}, MethodOptions())
        shapes = ref.result(timeout=30)
    except (ValueError, FedexecError):  # no actor, it is gone, or it did not answer
        return None
    return None if shapes is None else [dict(s) for s in shapes]
