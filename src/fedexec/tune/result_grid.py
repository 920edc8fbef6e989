"""``ResultGrid``: the results of ``Tuner.fit()`` (as Ray's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .analysis import ExperimentAnalysis
from .checkpoint import Checkpoint
from .config import CheckpointConfig
from .execution.checkpoints import ranked
from .experiment.trial import Trial
from .result import Result

__all__ = ["ResultGrid"]


class ResultGrid:
    """One :class:`Result` per trial, in trial order.

    Args:
        experiment_analysis: the experiment's trials.
    """

    def __init__(self, experiment_analysis: ExperimentAnalysis,
                 checkpoint_config: CheckpointConfig | None = None) -> None:
        self._analysis = experiment_analysis
        self._checkpoint_config = checkpoint_config or CheckpointConfig()
        self._results = [self._to_result(t) for t in experiment_analysis.trials]

    def _to_result(self, trial: Trial) -> Result:
        kept = ranked(trial.checkpoints, self._checkpoint_config)
        error = trial.error if trial.status == Trial.ERROR else None
        if trial.status == Trial.ERROR and error is None:
            from .error import TuneError

            error = TuneError(trial.error_msg or f"trial {trial} failed")
        return Result(metrics=dict(trial.last_result), config=trial.config,
                      checkpoint=trial.checkpoint,
                      best_checkpoints=[(Checkpoint(p), m) for p, m in kept],
                      error=error, path=trial.local_path)

    @property
    def experiment_path(self) -> str:
        return self._analysis.experiment_path

    @property
    def filesystem(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._results)

    def __getitem__(self, i: int) -> Result:
        return self._results[i]

    def __iter__(self) -> Iterator[Result]:
        return iter(self._results)

    def get_best_result(self, metric: str | None = None, mode: str | None = None,
                        scope: str = "last", filter_nan_and_inf: bool = True) -> Result:
        """The result of the best trial by ``metric`` (``scope`` as
        :meth:`ExperimentAnalysis.get_best_trial`).

        Raises:
            RuntimeError: no trial reported the metric.
        """
        trial = self._analysis.get_best_trial(metric, mode, scope, filter_nan_and_inf)
        if trial is None:
            name = metric or self._analysis.default_metric
            raise RuntimeError(f"no trial reported {name!r} (with a finite value): check the "
                               "metric name and the trials' errors (ResultGrid.errors)")
        return self._results[self._analysis.trials.index(trial)]

    def get_dataframe(self, filter_metric: str | None = None,
                      filter_mode: str | None = None) -> Any:
        """One row per trial: its last result (or its best by ``filter_metric``),
        with ``config/...`` columns."""
        return self._analysis.dataframe(filter_metric, filter_mode)

    @property
    def errors(self) -> list[BaseException]:
        return [r.error for r in self._results if r.error is not None]

    @property
    def num_errors(self) -> int:
        return sum(1 for t in self._analysis.trials if t.status == Trial.ERROR)

    @property
    def num_terminated(self) -> int:
        return sum(1 for t in self._analysis.trials if t.status == Trial.TERMINATED)

    def __repr__(self) -> str:
        return f"ResultGrid<{len(self)} results, {self.num_errors} errors>"
