"""``Tuner``: the modern entry point (``Tuner(trainable, ...).fit() -> ResultGrid``).

``fit`` resolves the trainable, picks the executor (``executor=``, else
``fedexec.current_executor()``), makes the experiment directory
``<storage_path>/<name>`` and runs a :class:`TuneController` there. The
experiment state saved in that directory lets :meth:`Tuner.restore` continue an
interrupted or failed experiment.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import fedexec

from .analysis import ExperimentAnalysis, load_state
from .config import RunConfig, TuneConfig
from .execution.controller import TuneController
from .experiment.trial import Trial
from .result_grid import ResultGrid
from .trainable.registry import resolve

__all__ = ["DEFAULT_STORAGE", "Tuner"]

DEFAULT_STORAGE = "~/fedexec_results"


class Tuner:
    """Tune ``trainable`` over ``param_space``.

    Args:
        trainable: a function, a ``tune.Trainable`` subclass, a registered name, a
            trainer (``as_trainable()``), possibly wrapped by ``with_resources`` /
            ``with_parameters``.
        param_space: the search space (nested dict of values and tune primitives),
            or a config object with ``to_dict()`` (an algorithm's config, as
            ``PPOConfig()``), whose dict is the space.
        tune_config: how to search (:class:`TuneConfig`).
        run_config: where results go and when trials stop (:class:`RunConfig`).
        executor: the fedexec executor running the trials (default: the current
            one, ``fedexec.current_executor()``).
    """

    def __init__(self, trainable: Any = None, *, param_space: Any = None,
                 tune_config: TuneConfig | None = None, run_config: RunConfig | None = None,
                 executor: fedexec.Executor | None = None, _restored: Any = None) -> None:
        if trainable is None:
            raise TypeError("Tuner needs a trainable (a function, a tune.Trainable subclass, "
                            "a registered name or a trainer)")
        self._trainable = trainable
        self._spec = resolve(trainable)
        self._param_space = _as_space(param_space)
        self._tune_config = tune_config or TuneConfig()
        self._run_config = run_config or RunConfig()
        self._executor = executor
        self._restored = _restored
        self._path: str | None = None
        self._trials: list[Trial] | None = None

    # -- running ---------------------------------------------------------------------
    def fit(self) -> ResultGrid:
        """Run the experiment to its end (or Ctrl-C) and return its results.

        Raises:
            ValueError: a trial can never fit in the cluster, or the configuration
                is inconsistent.
            UnsupportedOnBackendError: the executor's backend has no actors.
        """
        executor = self._executor or fedexec.current_executor()
        name, path = self._experiment_dir()
        controller = TuneController(
            spec=self._spec, param_space=self._param_space, tune_config=self._tune_config,
            run_config=self._run_config, executor=executor, experiment_path=path,
            experiment_name=name, restored=self._restored)
        self._restored = None
        trials = controller.run()
        self._path, self._trials = path, trials
        self._interrupted = controller.interrupted
        return self.get_results()

    def get_results(self) -> ResultGrid:
        """The results of the last ``fit`` (or of the restored experiment)."""
        if self._trials is None:
            path = self._path or self._experiment_dir()[1]
            trials = load_state(path)["trials"]
        else:
            path, trials = self._path, self._trials  # type: ignore[assignment]
        analysis = ExperimentAnalysis(path, trials, self._tune_config.metric,
                                      self._tune_config.mode)
        return ResultGrid(analysis, self._run_config.checkpoint_config)

    def _experiment_dir(self) -> tuple[str, str]:
        rc = self._run_config
        if self._path is not None:
            return os.path.basename(self._path), self._path
        storage = rc.storage_path or rc.local_dir or os.environ.get(
            "FEDEXEC_RESULTS_DIR") or DEFAULT_STORAGE
        name = rc.name or f"{_safe_name(self._spec.name)}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        path = os.path.join(os.path.abspath(os.path.expanduser(storage)), name)
        if rc.name is None:
            rc.name = name  # a second fit() of this Tuner continues in the same directory
        return name, path

    # -- restoring -------------------------------------------------------------------
    @classmethod
    def restore(cls, path: str, trainable: Any, *, resume_unfinished: bool = True,
                resume_errored: bool = False, restart_errored: bool = False,
                param_space: dict[str, Any] | None = None,
                executor: fedexec.Executor | None = None) -> Tuner:
        """A Tuner continuing the experiment saved in ``path``.

        Args:
            path: the experiment directory (``<storage_path>/<name>``).
            trainable: the same trainable as the original run.
            resume_unfinished: resume trials that had not ended, from their latest
                checkpoint (False: mark them TERMINATED).
            resume_errored: resume errored trials from their latest checkpoint.
            restart_errored: restart errored trials from scratch.
            param_space: replaces the saved param_space (e.g. to refresh object refs).

        Raises:
            TuneError: ``path`` holds no experiment state.
        """
        state = load_state(path)
        path = os.path.abspath(os.path.expanduser(path))
        for trial in state["trials"]:
            if trial.status in (Trial.RUNNING, Trial.PAUSED, Trial.PENDING):
                if resume_unfinished:
                    trial.status = Trial.PENDING
                    trial.restore_from = (trial.latest_checkpoint[0]
                                          if trial.latest_checkpoint else None)
                else:
                    trial.status = Trial.TERMINATED
            elif trial.status == Trial.ERROR and (resume_errored or restart_errored):
                trial.status = Trial.PENDING
                trial.num_failures = 0
                trial.error, trial.error_msg = None, None
                if restart_errored:
                    trial.restore_from = None
                    trial.last_result, trial._stats = {}, {}
                    trial.checkpoints, trial.latest_checkpoint = [], None
                else:
                    trial.restore_from = (trial.latest_checkpoint[0]
                                          if trial.latest_checkpoint else None)
        tune_config = copy.copy(state["tune_config"])
        run_config = copy.copy(state["run_config"])
        run_config.storage_path = os.path.dirname(path)
        run_config.name = os.path.basename(path)
        tuner = cls(trainable, param_space=param_space or state["param_space"],
                    tune_config=tune_config, run_config=run_config, executor=executor,
                    _restored=state)
        tuner._path = path
        return tuner

    @classmethod
    def can_restore(cls, path: str) -> bool:
        """Whether ``path`` holds an experiment that :meth:`restore` can continue."""
        from .analysis import STATE_FILE

        return os.path.exists(os.path.join(os.path.expanduser(path), STATE_FILE))


def _as_space(param_space: Any) -> dict[str, Any]:
    """The param_space as a dict (a config object gives its ``to_dict()``)."""
    if param_space is None:
        return {}
    if not isinstance(param_space, dict) and callable(getattr(param_space, "to_dict", None)):
        param_space = param_space.to_dict()
    if not isinstance(param_space, dict):
        raise TypeError(f"param_space must be a dict (or a config object with to_dict()), not "
                        f"{type(param_space).__name__}")
    return dict(param_space)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "trainable"
