"""``ASHAScheduler`` (= ``AsyncHyperBandScheduler``): asynchronous successive halving.

Each bracket ``s`` has rungs at ``grace_period * rf**(s + k)`` (up to ``max_t``).
A trial is put in a bracket at random (weighted so each bracket gets a share
proportional to its size). When a trial's ``time_attr`` first reaches a rung, its
metric is recorded there; if it is below the rung's ``1 - 1/rf`` quantile of the
values recorded so far, the trial stops. A trial reaching ``max_t`` stops.
No trial ever waits for another: promotions are decided with what is known.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from .trial_scheduler import TrialScheduler

__all__ = ["ASHAScheduler", "AsyncHyperBandScheduler"]


class _Bracket:
    def __init__(self, grace_period: float, max_t: float, rf: float, s: int) -> None:
        self.rf = rf
        self.rungs: list[tuple[float, dict[str, float]]] = []
        k = 0
        while True:
            milestone = grace_period * rf ** (s + k)
            if milestone >= max_t:
                break
            self.rungs.append((milestone, {}))
            k += 1
        self.rungs.reverse()  # highest first

    def on_result(self, trial_id: str, t: float, score: float | None) -> str:
        """Record ``score`` at the rungs ``t`` reached; STOP if below a cutoff."""
        action = TrialScheduler.CONTINUE
        for milestone, recorded in self.rungs:
            if t < milestone or trial_id in recorded:
                continue
            if score is None:  # no metric in this result: nothing to compare
                break
            cutoff = self._cutoff(recorded)
            recorded[trial_id] = score
            if cutoff is not None and score < cutoff:
                action = TrialScheduler.STOP
            break  # only the highest newly reached rung decides
        return action

    def _cutoff(self, recorded: dict[str, float]) -> float | None:
        if not recorded:
            return None
        values = np.array(list(recorded.values()), dtype=float)
        return float(np.nanpercentile(values, (1 - 1 / self.rf) * 100))


class AsyncHyperBandScheduler(TrialScheduler):
    """Asynchronous successive halving (ASHA).

    Args:
        time_attr: the result field measuring progress (``training_iteration``).
        metric, mode: the metric and ``"min"``/``"max"`` (default: TuneConfig's).
        max_t: trials stop at this ``time_attr``.
        grace_period: no trial stops before this ``time_attr``.
        reduction_factor: rungs are this factor apart; 1/rf of trials go on.
        brackets: the number of brackets (1: plain successive halving).
        stop_last_trials: stop trials reaching ``max_t`` (else let them run on).
    """

    def __init__(self, time_attr: str = "training_iteration", metric: str | None = None,
                 mode: str | None = None, max_t: float = 100, grace_period: float = 1,
                 reduction_factor: float = 4, brackets: int = 1,
                 stop_last_trials: bool = True, seed: int | None = None) -> None:
        if grace_period <= 0 or max_t <= 0 or grace_period > max_t:
            raise ValueError(f"need 0 < grace_period ({grace_period}) <= max_t ({max_t})")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be above 1, not {reduction_factor}")
        if brackets < 1:
            raise ValueError(f"brackets must be at least 1, not {brackets}")
        super().__init__(metric, mode)
        self._time_attr = time_attr
        self._max_t = max_t
        self._stop_last = stop_last_trials
        self._brackets = [_Bracket(grace_period, max_t, reduction_factor, s)
                          for s in range(brackets)]
        sizes = np.array([rf_size(reduction_factor, s, brackets) for s in range(brackets)])
        self._weights = (sizes / sizes.sum()).tolist()
        self._rng = random.Random(seed)
        self._trial_bracket: dict[str, int] = {}
        self.num_stopped = 0

    def on_trial_add(self, controller: Any, trial: Any) -> None:
        self._require_metric()
        index = self._rng.choices(range(len(self._brackets)), self._weights)[0]
        self._trial_bracket[trial.trial_id] = index

    def on_trial_result(self, controller: Any, trial: Any, result: dict[str, Any]) -> str:
        t = result.get(self._time_attr)
        if t is None:
            return TrialScheduler.CONTINUE
        if t >= self._max_t and self._stop_last:
            return TrialScheduler.STOP
        index = self._trial_bracket.get(trial.trial_id)
        if index is None:
            self.on_trial_add(controller, trial)
            index = self._trial_bracket[trial.trial_id]
        action = self._brackets[index].on_result(trial.trial_id, t, self._score(result))
        if action == TrialScheduler.STOP:
            self.num_stopped += 1
        return action

    def on_trial_complete(self, controller: Any, trial: Any, result: dict[str, Any]) -> None:
        index = self._trial_bracket.get(trial.trial_id)
        t = result.get(self._time_attr) if result else None
        if index is not None and t is not None:
            self._brackets[index].on_result(trial.trial_id, t, self._score(result))

    def debug_string(self) -> str:
        rungs = "; ".join(
            f"bracket {i}: " + ", ".join(f"{m:g}:{len(r)}" for m, r in reversed(b.rungs))
            for i, b in enumerate(self._brackets))
        return f"ASHA ({self.num_stopped} stopped) {rungs}"


def rf_size(rf: float, s: int, brackets: int) -> float:
    """A bracket's relative size: brackets that start later hold fewer trials."""
    return (brackets / (s + 1)) * rf ** (brackets - 1 - s) if brackets > 1 else 1.0


#: the short name used in Ray's documentation
ASHAScheduler = AsyncHyperBandScheduler
