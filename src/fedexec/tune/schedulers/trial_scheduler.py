"""The scheduler interface: a decision per result.

``on_trial_result`` returns ``CONTINUE``, ``PAUSE`` (release the trial's
resources, keep its checkpoint, run it again later: ``choose_trial_to_run``
picks it), ``STOP`` (end it) or ``NOOP`` (the scheduler already told the
controller what to do, e.g. PBT's exploit). Schedulers see ``Trial`` objects and
the controller (``get_trials()``, ``request_checkpoint``, ``exploit``,
``stop_trial``, ``search_finished``) — the same shape as Ray's, so a custom
scheduler ports over.
"""

from __future__ import annotations

import math
from typing import Any

from .._objective import Objective

__all__ = ["FIFOScheduler", "TrialScheduler"]


class TrialScheduler(Objective):
    """Base class of trial schedulers."""

    CONTINUE = "CONTINUE"
    PAUSE = "PAUSE"
    STOP = "STOP"
    NOOP = "NOOP"

    #: whether it decides on every result (then trials wait for each decision)
    decides_per_result = True

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Take the Tuner's metric/mode where none were given here."""
        self._adopt(metric, mode)
        return True

    def _require_metric(self) -> None:
        if self._metric is None or self._mode is None:
            raise ValueError(f"{type(self).__name__} needs a metric and a mode: pass them here "
                             "or in TuneConfig(metric=..., mode=...)")

    def _score(self, result: dict[str, Any]) -> float | None:
        """The result's metric, larger is better (None if missing or NaN)."""
        value = result.get(self._metric) if self._metric else None
        if value is None:
            return None
        value = float(value)
        if math.isnan(value):
            return None
        return value if self._mode == "max" else -value

    def on_trial_add(self, controller: Any, trial: Any) -> None:
        """A new trial exists."""

    def on_trial_error(self, controller: Any, trial: Any) -> None:
        """The trial failed for good."""

    def on_trial_result(self, controller: Any, trial: Any, result: dict[str, Any]) -> str:
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, controller: Any, trial: Any, result: dict[str, Any]) -> None:
        """The trial ended normally (or was stopped)."""

    def on_trial_remove(self, controller: Any, trial: Any) -> None:
        """The trial was removed (stopped by the scheduler while paused)."""

    def choose_trial_to_run(self, controller: Any) -> Any:
        """The next PENDING or PAUSED trial to (re)start, or None."""
        for status in ("PENDING", "PAUSED"):
            for trial in controller.get_trials():
                if trial.status == status:
                    return trial
        return None

    def debug_string(self) -> str:
        return type(self).__name__


class FIFOScheduler(TrialScheduler):
    """Run trials in the order they come; never stop or pause one (the default)."""

    decides_per_result = False

    def __init__(self) -> None:
        super().__init__()
