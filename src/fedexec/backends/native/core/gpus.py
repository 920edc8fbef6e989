"""Which GPUs a lease gets: whole GPUs, or a share of one (packed), per Ray's rule.

State::

    free   [share free per GPU index]   1.0 = idle, 0.0 = fully taken
    names  [the id a process sees per index]  (CUDA_VISIBLE_DEVICES entries)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["GpuSlots", "gpus_of"]

_EPS = 1e-9


def gpus_of(demand: Mapping[str, float]) -> float:
    """GPUs a demand asks for, also inside a placement-group bundle (``GPU_group_*``:
    the bundle reserved them, its tasks get their ids; a task on a bundle index asks
    the same amount under two names, the bundle's and the group's)."""
    in_group = [v for k, v in demand.items() if k.startswith("GPU_group_")]
    return demand.get("GPU", 0.0) + (max(in_group) if in_group else 0.0)


class GpuSlots:
    """The node's GPUs and the share of each that is taken."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.free = [1.0] * len(self.names)

    def take(self, amount: float) -> list[tuple[int, float]]:
        """Pick GPUs for ``amount``: [(index, share)] (fewer if none is free)."""
        if amount <= 0:
            return []
        free = self.free
        if amount < 1:
            order = sorted(range(len(free)), key=lambda i: free[i])  # pack shares
            pick = next((i for i in order if free[i] + _EPS >= amount), None)
            taken = [] if pick is None else [(pick, amount)]
        else:
            whole = [i for i in range(len(free)) if free[i] >= 1 - _EPS][:math.ceil(amount)]
            taken = [(i, 1.0) for i in whole]
        for i, share in taken:
            free[i] -= share
        return taken

    def give(self, taken: list[tuple[int, float]]) -> None:
        """Return what :meth:`take` gave."""
        for i, share in taken:
            self.free[i] += share

    def names_of(self, taken: list[tuple[int, float]]) -> tuple[str, ...]:
        """The ids a process sees for ``taken``."""
        return tuple(self.names[i] for i, _ in taken)
