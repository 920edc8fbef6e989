"""Helpers built on fedexec's public API, as ``ray.util``.

``ActorPool`` spreads calls over a set of actors; ``fedexec.util.queue.Queue`` is
an actor-backed FIFO that can be passed to tasks and actors.
"""

from __future__ import annotations

from .actor_pool import ActorPool

__all__ = ["ActorPool"]
