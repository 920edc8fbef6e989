"""``HyperBandScheduler``: synchronous HyperBand (Li et al., 2017).

Trials fill brackets in order. With ``s_max = round(log_rf(max_t))``, bracket
``s`` (cycling ``s_max .. 0``) takes ``n = ceil((s_max + 1) / (s + 1) * rf**s)``
trials and first runs each to ``r = max_t / rf**s``. A trial reaching its
bracket's milestone PAUSES until every live trial of the bracket has reached
it (or the search has no more trials to add); then the best ``n / rf`` go on to
``r * rf`` and the rest STOP. Paused trials resume from their checkpoint, so
class trainables should implement ``save_checkpoint`` (a function trainable
resumes from its last reported checkpoint, or starts over).
"""

from __future__ import annotations

import math
from typing import Any

from .trial_scheduler import TrialScheduler

__all__ = ["HyperBandScheduler"]


class _Bracket:
    def __init__(self, n: int, r: float, rf: float, max_t: float) -> None:
        self.capacity = n
        self.n = n
        self.r = r
        self.rf = rf
        self.max_t = max_t
        self.members: list[str] = []
        self.live: set[str] = set()          # not stopped, not errored
        self.reached: dict[str, float] = {}  # trial -> score at the current milestone

    def full(self) -> bool:
        return len(self.members) >= self.capacity

    def milestone(self) -> float:
        return min(self.r, self.max_t)

    def ready(self, search_finished: bool) -> bool:
        """Every live member reached the milestone (and no more are coming)."""
        return bool(self.live) and (self.full() or search_finished) and \
            all(t in self.reached for t in self.live)

    def halve(self) -> tuple[list[str], list[str]]:
        """Keep the best ``n / rf``: returns ``(kept, stopped)``; next milestone."""
        ranked = sorted(self.live, key=lambda t: self.reached[t], reverse=True)
        self.n = max(1, math.ceil(self.n / self.rf))
        keep = ranked[: max(1, int(len(ranked) / self.rf))]
        stopped = [t for t in ranked if t not in keep]
        self.live = set(keep)
        self.reached = {}
        self.r *= self.rf
        return keep, stopped


class HyperBandScheduler(TrialScheduler):
    """Synchronous HyperBand.

    Args:
        time_attr: the result field measuring progress (``training_iteration``).
        metric, mode: the metric and ``"min"``/``"max"``.
        max_t: the most ``time_attr`` a trial gets.
        reduction_factor: milestones are this factor apart; 1/rf of trials go on.
        stop_last_trials: stop trials reaching ``max_t``.
    """

    def __init__(self, time_attr: str = "training_iteration", metric: str | None = None,
                 mode: str | None = None, max_t: float = 81, reduction_factor: float = 3,
                 stop_last_trials: bool = True) -> None:
        if max_t <= 0 or reduction_factor <= 1:
            raise ValueError("need max_t > 0 and reduction_factor > 1")
        super().__init__(metric, mode)
        self._time_attr = time_attr
        self._max_t = max_t
        self._rf = reduction_factor
        self._stop_last = stop_last_trials
        self._s_max = round(math.log(max_t) / math.log(reduction_factor) + 1e-9)
        self._brackets: list[_Bracket] = []
        self._bracket_of: dict[str, _Bracket] = {}
        self._resume: set[str] = set()  # paused trials allowed to run again

    def _new_bracket(self) -> _Bracket:
        s = self._s_max - len(self._brackets) % (self._s_max + 1)
        n = math.ceil((self._s_max + 1) / (s + 1) * self._rf ** s)
        bracket = _Bracket(n, self._max_t / self._rf ** s, self._rf, self._max_t)
        self._brackets.append(bracket)
        return bracket

    def on_trial_add(self, controller: Any, trial: Any) -> None:
        self._require_metric()
        bracket = self._brackets[-1] if self._brackets and not self._brackets[-1].full() \
            else self._new_bracket()
        bracket.members.append(trial.trial_id)
        bracket.live.add(trial.trial_id)
        self._bracket_of[trial.trial_id] = bracket

    def on_trial_result(self, controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self._resume.discard(trial.trial_id)
        bracket = self._bracket_of.get(trial.trial_id)
        t = result.get(self._time_attr)
        if bracket is None or t is None:
            return TrialScheduler.CONTINUE
        if t >= self._max_t and self._stop_last:
            return TrialScheduler.STOP
        if t < bracket.milestone():
            return TrialScheduler.CONTINUE
        score = self._score(result)
        bracket.reached[trial.trial_id] = score if score is not None else -math.inf
        if not bracket.ready(controller.search_finished):
            return TrialScheduler.PAUSE
        keep, stopped = bracket.halve()
        for other in stopped:
            if other != trial.trial_id:
                controller.stop_trial(other)
        self._resume.update(k for k in keep if k != trial.trial_id)
        return TrialScheduler.CONTINUE if trial.trial_id in keep else TrialScheduler.STOP

    def _process_waiting(self, controller: Any) -> None:
        """Brackets that became ready because the search ended or a member left."""
        for bracket in self._brackets:
            if bracket.ready(controller.search_finished):
                keep, stopped = bracket.halve()
                for other in stopped:
                    controller.stop_trial(other)
                self._resume.update(keep)

    def _leave(self, controller: Any, trial: Any) -> None:
        self._resume.discard(trial.trial_id)
        bracket = self._bracket_of.get(trial.trial_id)
        if bracket is not None:
            bracket.live.discard(trial.trial_id)
            bracket.reached.pop(trial.trial_id, None)
        self._process_waiting(controller)

    def on_trial_complete(self, controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._leave(controller, trial)

    def on_trial_error(self, controller: Any, trial: Any) -> None:
        self._leave(controller, trial)

    def on_trial_remove(self, controller: Any, trial: Any) -> None:
        self._leave(controller, trial)

    def choose_trial_to_run(self, controller: Any) -> Any:
        self._process_waiting(controller)
        for trial in controller.get_trials():
            if trial.status == "PENDING":
                return trial
        for trial in controller.get_trials():
            if trial.status == "PAUSED" and trial.trial_id in self._resume:
                return trial  # leaves _resume at its next result (choosing has no effect)
        return None

    def debug_string(self) -> str:
        parts = [f"bracket(n={b.n}, r={b.r:g}, live={len(b.live)}, "
                 f"at milestone={len(b.reached)})" for b in self._brackets]
        return "HyperBand: " + "; ".join(parts)
