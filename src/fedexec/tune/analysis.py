"""``ExperimentAnalysis``: the classic view of an experiment's trials (what
``tune.run`` returns), also loadable from an experiment directory."""

from __future__ import annotations

import math
import os
from typing import Any

import cloudpickle

from .checkpoint import Checkpoint
from .error import TuneError
from .experiment.trial import Trial
from .result import trial_dataframe, trial_rows
from .search.variant_generator import flatten_dict

__all__ = ["ExperimentAnalysis", "load_state"]

STATE_FILE = "experiment_state.pkl"


def load_state(path: str) -> dict[str, Any]:
    """The experiment state saved in the directory ``path``.

    Raises:
        TuneError: there is no experiment state there.
    """
    path = os.path.expanduser(os.fspath(path))
    state_file = os.path.join(path, STATE_FILE)
    if not os.path.exists(state_file):
        raise TuneError(f"no experiment state in {path!r} (no {STATE_FILE}): pass the "
                        "experiment directory, <storage_path>/<name>")
    with open(state_file, "rb") as f:
        state: dict[str, Any] = cloudpickle.load(f)
    state["trials"] = [cloudpickle.loads(t) if isinstance(t, bytes) else t
                       for t in state["trials"]]
    base = os.path.dirname(os.path.abspath(state_file))
    for trial in state["trials"]:  # the directory may have moved since
        trial.local_path = os.path.join(base, os.path.basename(trial.local_path))
    return state


def _value(trial: Trial, metric: str, mode: str, scope: str) -> float | None:
    if scope == "last":
        value = trial.last_result.get(metric)
    else:
        stats = trial.metric_analysis.get(metric)
        if stats is None:
            return None
        key = {"all": mode, "avg": "avg"}.get(scope, scope)
        if key not in stats:
            raise ValueError(f"scope must be 'all', 'last', 'avg', 'last-5-avg' or "
                             f"'last-10-avg', not {scope!r}")
        value = stats[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return float(value)


class ExperimentAnalysis:
    """The trials of an experiment and the best among them.

    Args:
        experiment_checkpoint_path: the experiment directory.
        trials: the trials (read from the directory's state when None).
        default_metric, default_mode: used when a method gets no metric/mode.
    """

    def __init__(self, experiment_checkpoint_path: str, trials: list[Trial] | None = None,
                 default_metric: str | None = None, default_mode: str | None = None) -> None:
        self.experiment_path = os.path.expanduser(os.fspath(experiment_checkpoint_path))
        if trials is None:
            state = load_state(self.experiment_path)
            trials = state["trials"]
            tune_config = state.get("tune_config")
            default_metric = default_metric or getattr(tune_config, "metric", None)
            default_mode = default_mode or getattr(tune_config, "mode", None)
        self.trials: list[Trial] = list(trials)
        self.default_metric = default_metric
        self.default_mode = default_mode

    # -- best ---------------------------------------------------------------------
    def _metric_mode(self, metric: str | None, mode: str | None) -> tuple[str, str]:
        metric, mode = metric or self.default_metric, mode or self.default_mode
        if not metric or not mode:
            raise ValueError("no metric/mode: pass metric= and mode= here, or to "
                             "TuneConfig / tune.run")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        return metric, mode

    def get_best_trial(self, metric: str | None = None, mode: str | None = None,
                       scope: str = "last", filter_nan_and_inf: bool = True) -> Trial | None:
        """The trial with the best ``metric`` (``scope``: ``"last"`` result,
        ``"all"`` results, ``"avg"``, ``"last-5-avg"``, ``"last-10-avg"``)."""
        metric, mode = self._metric_mode(metric, mode)
        best, best_value = None, None
        for trial in self.trials:
            value = _value(trial, metric, mode, scope)
            if value is None or (filter_nan_and_inf and not math.isfinite(value)):
                continue
            if best_value is None or (value > best_value if mode == "max" else
                                      value < best_value):
                best, best_value = trial, value
        return best

    def get_best_config(self, metric: str | None = None, mode: str | None = None,
                        scope: str = "last") -> dict[str, Any] | None:
        """The config of :meth:`get_best_trial`."""
        trial = self.get_best_trial(metric, mode, scope)
        return trial.config if trial is not None else None

    def get_best_logdir(self, metric: str | None = None, mode: str | None = None,
                        scope: str = "last") -> str | None:
        trial = self.get_best_trial(metric, mode, scope)
        return trial.local_path if trial is not None else None

    def get_best_checkpoint(self, trial: Trial, metric: str | None = None,
                            mode: str | None = None) -> Checkpoint | None:
        """The kept checkpoint of ``trial`` with the best ``metric``."""
        metric, mode = self._metric_mode(metric, mode)
        scored = [(m.get(metric), path) for path, m in trial.checkpoints
                  if isinstance(m.get(metric), (int, float))]
        if not scored:
            return None
        pick = max if mode == "max" else min
        return Checkpoint(pick(scored)[1])

    def get_last_checkpoint(self, trial: Trial | None = None, metric: str = "training_iteration",
                            mode: str = "max") -> Checkpoint | None:
        trial = trial or self.get_best_trial(metric, mode)
        return trial.checkpoint if trial is not None else None

    @property
    def best_trial(self) -> Trial | None:
        return self.get_best_trial()

    @property
    def best_config(self) -> dict[str, Any] | None:
        return self.get_best_config()

    @property
    def best_result(self) -> dict[str, Any] | None:
        trial = self.best_trial
        return trial.last_result if trial is not None else None

    @property
    def best_checkpoint(self) -> Checkpoint | None:
        trial = self.best_trial
        return self.get_best_checkpoint(trial) if trial is not None else None

    @property
    def best_logdir(self) -> str | None:
        trial = self.best_trial
        return trial.local_path if trial is not None else None

    @property
    def best_result_df(self) -> Any:
        import pandas as pd

        result = self.best_result
        return pd.DataFrame([flatten_dict(result)]) if result else pd.DataFrame()

    # -- all ------------------------------------------------------------------------
    @property
    def results(self) -> dict[str, dict[str, Any]]:
        """trial id -> its last result."""
        return {t.trial_id: t.last_result for t in self.trials}

    @property
    def results_df(self) -> Any:
        """One row per trial: its last result, flattened (indexed by trial id)."""
        import pandas as pd

        rows = [flatten_dict({**t.last_result, "config": t.config}) for t in self.trials
                if t.last_result]
        frame = pd.DataFrame(rows)
        return frame.set_index("trial_id") if "trial_id" in frame else frame

    def dataframe(self, metric: str | None = None, mode: str | None = None) -> Any:
        """One row per trial: its last result (or, with ``metric`` and ``mode``, its
        best result by that metric), ``config/...`` columns and ``logdir``."""
        import pandas as pd

        rows = []
        for trial in self.trials:
            row = trial.last_result
            if metric and mode:
                history = [r for r in trial_rows(trial.local_path)
                           if isinstance(r.get(metric), (int, float))]
                if history:
                    pick = max if mode == "max" else min
                    row = pick(history, key=lambda r: r[metric])
            if not row and not trial.config:
                continue
            flat = flatten_dict({k: v for k, v in row.items() if k != "config"})
            flat.update(flatten_dict({"config": trial.config}))
            flat["logdir"] = trial.local_path
            flat.setdefault("trial_id", trial.trial_id)
            rows.append(flat)
        return pd.DataFrame(rows)

    @property
    def trial_dataframes(self) -> dict[str, Any]:
        """trial directory -> every result of the trial (a DataFrame)."""
        return {t.local_path: trial_dataframe(t.local_path) for t in self.trials
                if os.path.isdir(t.local_path)}

    def get_all_configs(self, prefix: bool = False) -> dict[str, dict[str, Any]]:
        return {t.local_path: ({"config": t.config} if prefix else t.config)
                for t in self.trials}

    def stats(self) -> dict[str, Any]:
        return {"num_trials": len(self.trials)}
