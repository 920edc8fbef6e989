"""Placement groups: bundles of resources reserved atomically."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Sequence
from typing import Any

from .options import validate_resources

__all__ = ["PLACEMENT_STRATEGIES", "PlacementGroup"]

PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroup:
    """A reservation of ``bundle_specs`` made by ``placement_group()``.

    ``ready(timeout)`` waits until every bundle is reserved (True) or the timeout
    passes (False). Use it in tasks with
    ``scheduling_strategy=PlacementGroupStrategy(pg, bundle_index)``.
    """

    def __init__(self, pg_id: str, bundles: list[dict[str, float]], strategy: str,
                 name: str | None = None):
        self.id = pg_id
        self.bundle_specs = bundles
        self.strategy = strategy
        self.name = name
        self._ready: cf.Future[bool] = cf.Future()

    def ready(self, timeout: float | None = None) -> bool:
        """True once all bundles are reserved; False if ``timeout`` passes first."""
        try:
            return bool(self._ready.result(timeout))
        except TimeoutError:
            return False

    def __repr__(self) -> str:
        return f"PlacementGroup({self.id}, {self.strategy}, {self.bundle_specs})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_pg, (self.id, self.bundle_specs, self.strategy, self.name))


def _rebuild_pg(pg_id: str, bundles: list[dict[str, float]], strategy: str,
                name: str | None) -> PlacementGroup:
    pg = PlacementGroup(pg_id, bundles, strategy, name)
    pg._ready.set_result(True)  # a group handed to a task exists already
    return pg


def validate_bundles(bundles: Any, strategy: str) -> list[dict[str, float]]:
    """Check a ``placement_group`` request (``ValueError``/``TypeError``)."""
    if strategy not in PLACEMENT_STRATEGIES:
        raise ValueError(f"strategy must be one of {PLACEMENT_STRATEGIES}, got {strategy!r}")
    if not isinstance(bundles, Sequence) or isinstance(bundles, (str, bytes)) or not bundles:
        raise ValueError("bundles must be a non-empty list of resource dicts")
    out = []
    for b in bundles:
        if not isinstance(b, dict):
            raise TypeError(f"each bundle must be a dict of resources, got {b!r}")
        custom = {k: v for k, v in b.items() if k not in ("CPU", "GPU", "memory")}
        checked = validate_resources(custom, "bundle")
        for k in ("CPU", "GPU", "memory"):
            if k in b:
                checked[k] = validate_resources({"x": b[k]}, f"bundle[{k!r}]")["x"]
        if not any(checked.values()):
            raise ValueError(f"bundle {b!r} asks for no resources")
        out.append(checked)
    return out
