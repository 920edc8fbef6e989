"""``MedianStoppingRule``: stop a trial whose best result so far is worse than the
median of the other trials' running means at the same point.

At a result with ``time_attr >= grace_period``, the other trials that have
results up to that time each give the mean of their metric over those results;
when at least ``min_samples_required`` such means exist and this trial's best
value is worse than their median, the trial stops (``hard_stop``) or pauses.
``min_time_slice`` spaces out the checks of one trial.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from .trial_scheduler import TrialScheduler

__all__ = ["MedianStoppingRule"]


class MedianStoppingRule(TrialScheduler):
    """The median stopping rule (Golovin et al., Google Vizier).

    Args:
        time_attr: the result field measuring progress (``time_total_s``).
        metric, mode: the metric and ``"min"``/``"max"``.
        grace_period: no trial stops before this ``time_attr``.
        min_samples_required: other trials needed before comparing.
        min_time_slice: a trial is checked at most once per this ``time_attr``.
        hard_stop: stop (True) or pause (False) trials below the median.
    """

    def __init__(self, time_attr: str = "time_total_s", metric: str | None = None,
                 mode: str | None = None, grace_period: float = 60.0,
                 min_samples_required: int = 3, min_time_slice: float = 0,
                 hard_stop: bool = True) -> None:
        super().__init__(metric, mode)
        self._time_attr = time_attr
        self._grace_period = grace_period
        self._min_samples = min_samples_required
        self._min_time_slice = min_time_slice
        self._hard_stop = hard_stop
        self._history: dict[str, tuple[list[float], list[float]]] = {}  # times, cum. sums
        self._best: dict[str, float] = {}
        self._last_check: dict[str, float] = {}

    def on_trial_add(self, controller: Any, trial: Any) -> None:
        self._require_metric()

    def on_trial_result(self, controller: Any, trial: Any, result: dict[str, Any]) -> str:
        t, score = result.get(self._time_attr), self._score(result)
        if t is None or score is None:
            return TrialScheduler.CONTINUE
        times, sums = self._history.setdefault(trial.trial_id, ([], []))
        times.append(float(t))
        sums.append((sums[-1] if sums else 0.0) + score)
        best = max(self._best.get(trial.trial_id, -np.inf), score)
        self._best[trial.trial_id] = best
        if t < self._grace_period:
            return TrialScheduler.CONTINUE
        if t - self._last_check.get(trial.trial_id, -np.inf) < self._min_time_slice:
            return TrialScheduler.CONTINUE
        self._last_check[trial.trial_id] = float(t)
        means = [m for other, _ in self._history.items() if other != trial.trial_id
                 for m in [self._running_mean(other, float(t))] if m is not None]
        if len(means) < self._min_samples:
            return TrialScheduler.CONTINUE
        if best < float(np.median(means)):
            return TrialScheduler.STOP if self._hard_stop else TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE

    def _running_mean(self, trial_id: str, t: float) -> float | None:
        times, sums = self._history[trial_id]
        n = bisect.bisect_right(times, t)
        return sums[n - 1] / n if n else None

    def debug_string(self) -> str:
        return f"MedianStoppingRule: {len(self._history)} trials with results"
