"""What a running experiment shows on the dashboard's ``/tune`` page (an entry of
kind ``"tune"`` in :mod:`fedexec.util.registry`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from .experiment.trial import Trial
from .progress import _best

__all__ = ["experiment_info"]

_STATES = (Trial.PENDING, Trial.RUNNING, Trial.PAUSED, Trial.TERMINATED, Trial.ERROR)


def experiment_info(trials: Sequence[Trial], metric: str | None, mode: str | None,
                    path: str) -> dict[str, Any]:
    """Trials counted by state, the best one so far (by ``metric``/``mode``)."""
    counts = Counter(t.status for t in trials)
    info: dict[str, Any] = {"trials": len(trials),
                            **{s.lower(): counts.get(s, 0) for s in _STATES}}
    best = _best(trials, metric, mode)
    if best is not None:
        info.update(metric=f"{metric} ({mode})", best=best.last_result[metric],
                    best_trial=best.trial_name)
    info["path"] = path
    return info
