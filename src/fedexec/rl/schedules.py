"""Schedules: a value as a function of the global env-step count (exploration's
epsilon, prioritized replay's beta, learning rates)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

__all__ = ["PiecewiseSchedule", "linear_schedule"]


class PiecewiseSchedule:
    """Linear interpolation between ``(timestep, value)`` points; before the first
    point its value, after the last the last value.

    Args:
        points: ``(timestep, value)`` pairs with increasing timesteps.
    """

    def __init__(self, points: Sequence[tuple[int, float]]) -> None:
        pts = [(int(t), float(v)) for t, v in points]
        if not pts:
            raise ValueError("a schedule needs at least one (timestep, value) point")
        if any(b[0] <= a[0] for a, b in itertools.pairwise(pts)):
            raise ValueError(f"a schedule's timesteps must increase: {pts}")
        self.points = pts

    def value(self, t: int) -> float:
        pts = self.points
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, v0), (t1, v1) in itertools.pairwise(pts):
            if t < t1:
                return v0 + (t - t0) / (t1 - t0) * (v1 - v0)
        return pts[-1][1]

    __call__ = value


def linear_schedule(initial: float, final: float, timesteps: int) -> PiecewiseSchedule:
    """From ``initial`` at step 0 to ``final`` at ``timesteps``, then constant."""
    if timesteps <= 0:
        return PiecewiseSchedule([(0, final)])
    return PiecewiseSchedule([(0, initial), (timesteps, final)])
