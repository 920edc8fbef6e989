"""Helpers built on fedexec's runtime, as ``ray.util``.

``ActorPool`` spreads calls over a set of actors; ``fedexec.util.queue.Queue`` is
an actor-backed FIFO that can be passed to tasks and actors;
``get_node_ip_address()`` and ``inside_task()`` tell where the calling code runs.
"""

from __future__ import annotations

from .._runtime import current_task
from .actor_pool import ActorPool

__all__ = ["ActorPool", "get_node_ip_address", "inside_task"]


def get_node_ip_address() -> str:
    """This node's IP address as the cluster sees it (inside a task: the node that
    runs it; in a driver: the node the current executor is attached to)."""
    import fedexec

    return fedexec.get_runtime_context().get_node_ip_address()


def inside_task() -> bool:
    """True when called from a task or an actor method (on any backend), False in a
    driver. Starts nothing: unlike ``get_runtime_context()``, it never creates the
    default executor."""
    return current_task() is not None
