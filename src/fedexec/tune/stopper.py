"""``tune.Stopper`` and the built-in stoppers; ``RunConfig(stop=...)`` as a stopper.

``stop`` may be a dict ``{field: bound}`` (a trial stops when any field of a
result reaches its bound: ``result[field] >= bound``), a function
``(trial_id, result) -> bool``, or a :class:`Stopper` (which can also end the
whole experiment with ``stop_all()``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "CombinedStopper",
    "DictStopper",
    "FunctionStopper",
    "MaximumIterationStopper",
    "Stopper",
    "TimeoutStopper",
    "TrialPlateauStopper",
    "as_stopper",
]


class Stopper:
    """Decides when trials (``__call__``) or the experiment (``stop_all``) stop."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return False


class DictStopper(Stopper):
    """Stop a trial when any ``result[field] >= bound``."""

    def __init__(self, criteria: Mapping[str, Any]) -> None:
        self.criteria = dict(criteria)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        for key, bound in self.criteria.items():
            value = result.get(key)
            if value is not None and value >= bound:
                return True
        return False


class FunctionStopper(Stopper):
    """Stop a trial when ``fn(trial_id, result)`` is true."""

    def __init__(self, function: Callable[[str, dict[str, Any]], bool]) -> None:
        self._fn = function

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return bool(self._fn(trial_id, result))


class MaximumIterationStopper(Stopper):
    """Stop each trial after ``max_iter`` results."""

    def __init__(self, max_iter: int) -> None:
        self._max_iter = max_iter
        self._counts: dict[str, int] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self._counts[trial_id] = self._counts.get(trial_id, 0) + 1
        return self._counts[trial_id] >= self._max_iter


class TimeoutStopper(Stopper):
    """Stop the whole experiment after ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        self._deadline = time.monotonic() + float(timeout)

    def stop_all(self) -> bool:
        return time.monotonic() >= self._deadline


class TrialPlateauStopper(Stopper):
    """Stop a trial whose ``metric`` changed by at most ``std`` (standard deviation)
    over its last ``num_results`` results, after ``grace_period`` results."""

    def __init__(self, metric: str, std: float = 0.01, num_results: int = 4,
                 grace_period: int = 4, metric_threshold: float | None = None,
                 mode: str | None = None) -> None:
        self._metric, self._std, self._n = metric, std, num_results
        self._grace, self._threshold, self._mode = grace_period, metric_threshold, mode
        self._values: dict[str, list[float]] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if self._metric not in result:
            return False
        values = self._values.setdefault(trial_id, [])
        values.append(float(result[self._metric]))
        del values[:-self._n]
        if len(values) < max(self._n, 1) or result.get("training_iteration", 0) < self._grace:
            return False
        if self._threshold is not None and self._mode is not None:
            last = values[-1]
            if (self._mode == "min" and last > self._threshold) or (
                    self._mode == "max" and last < self._threshold):
                return False
        import statistics

        return statistics.pstdev(values) <= self._std


class CombinedStopper(Stopper):
    """Stop when any of ``stoppers`` says so."""

    def __init__(self, *stoppers: Stopper) -> None:
        self._stoppers = stoppers

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return any([s(trial_id, result) for s in self._stoppers])

    def stop_all(self) -> bool:
        return any(s.stop_all() for s in self._stoppers)


def as_stopper(stop: Any) -> Stopper | None:
    """The :class:`Stopper` for ``RunConfig(stop=...)`` (None: never)."""
    if stop is None:
        return None
    if isinstance(stop, Stopper):
        return stop
    if isinstance(stop, Mapping):
        return DictStopper(stop)
    if callable(stop):
        return FunctionStopper(stop)
    raise TypeError(f"stop must be a dict, a function (trial_id, result) -> bool or a "
                    f"tune.Stopper, not {stop!r}")
