"""``Trial``: one run of the trainable with one config, as the controller and the
results see it.

A Trial is plain data (picklable: it goes into the experiment state); what runs
it (its actor, its in-flight call) lives in the controller. Status moves
``PENDING → RUNNING → (PAUSED → RUNNING)* → TERMINATED | ERROR``; an ERROR with
retries left goes back to PENDING and resumes from its latest checkpoint.
"""

from __future__ import annotations

import os
from collections import deque
from numbers import Real
from typing import Any

from ..checkpoint import Checkpoint
from ..resources import PlacementGroupFactory

__all__ = ["Trial"]

_SKIP = frozenset({"pid", "timestamp", "done", "trial_id", "date", "hostname"})
_NUMBERS = (int, float)


class Trial:
    """One trial. Attributes a user reads: ``trial_id``, ``config``, ``status``,
    ``last_result``, ``local_path`` (its directory; also ``logdir``/``path``),
    ``checkpoint`` (its latest), ``metric_analysis``, ``error_file``,
    ``num_failures``, ``experiment_tag``."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"

    def __init__(self, trial_id: str, trainable_name: str, config: dict[str, Any],
                 experiment_tag: str, local_path: str,
                 placement_group_factory: PlacementGroupFactory, trial_name: str) -> None:
        self.trial_id = trial_id
        self.trainable_name = trainable_name
        self.config = config
        self.experiment_tag = experiment_tag
        self.local_path = local_path
        self.placement_group_factory = placement_group_factory
        self.trial_name = trial_name
        self.status = Trial.PENDING
        self.last_result: dict[str, Any] = {}
        self._stats: dict[str, list[Any]] = {}  # key -> [min, max, sum, n, last 10]
        self.num_failures = 0
        self.error_msg: str | None = None
        self.error: BaseException | None = None
        self.checkpoints: list[tuple[str, dict[str, Any]]] = []  # kept, oldest first
        self.latest_checkpoint: tuple[str, dict[str, Any]] | None = None
        self.restore_from: str | None = None  # what the next start resumes from
        self.num_results = 0
        self.start_time: float | None = None
        self.evaluated_params = config

    # -- derived -------------------------------------------------------------------
    @property
    def logdir(self) -> str:
        return self.local_path

    @property
    def path(self) -> str:
        return self.local_path

    @property
    def resources(self) -> dict[str, float]:
        return self.placement_group_factory.required_resources

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The trial's latest checkpoint."""
        return Checkpoint(self.latest_checkpoint[0]) if self.latest_checkpoint else None

    @property
    def error_file(self) -> str | None:
        path = os.path.join(self.local_path, "error.txt")
        return path if self.error_msg is not None else None

    def is_finished(self) -> bool:
        return self.status in (Trial.TERMINATED, Trial.ERROR)

    # -- results -------------------------------------------------------------------
    def update_last_result(self, result: dict[str, Any]) -> None:
        """Record ``result`` and fold its numbers into :attr:`metric_analysis`."""
        self.last_result = result
        self.num_results += 1
        stats = self._stats
        for key, value in result.items():
            if key in _SKIP or (value.__class__ not in _NUMBERS and (
                    isinstance(value, bool) or not isinstance(value, Real))):
                continue
            v = float(value)
            entry = stats.get(key)
            if entry is None:
                stats[key] = [v, v, v, 1, deque((v,), maxlen=10)]
                continue
            if v < entry[0]:
                entry[0] = v
            if v > entry[1]:
                entry[1] = v
            entry[2] += v
            entry[3] += 1
            entry[4].append(v)

    @property
    def metric_analysis(self) -> dict[str, dict[str, float]]:
        """Per numeric metric: ``max``, ``min``, ``avg``, ``last``, ``last-5-avg``,
        ``last-10-avg`` over the trial's results."""
        out = {}
        for key, (lo, hi, total, n, recent) in self._stats.items():
            last5 = list(recent)[-5:]
            out[key] = {"max": hi, "min": lo, "avg": total / n, "last": recent[-1],
                        "last-5-avg": sum(last5) / len(last5),
                        "last-10-avg": sum(recent) / len(recent)}
        return out

    def __repr__(self) -> str:
        return self.trial_name

    def __str__(self) -> str:
        return self.trial_name

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        error = state.get("error")
        if error is not None:
            try:
                import cloudpickle

                cloudpickle.dumps(error)
            except Exception:
                state["error"] = None
        return state
