"""The classic API: ``tune.run(...)`` returning an ``ExperimentAnalysis``.

A thin layer: it builds a :class:`Tuner` (TuneConfig, RunConfig, CheckpointConfig,
FailureConfig from its arguments) and runs it, so both APIs share one
implementation.
"""

from __future__ import annotations

import os
from typing import Any

import fedexec

from .analysis import ExperimentAnalysis
from .config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from .error import TuneError
from .experiment.trial import Trial
from .trainable.wrappers import with_resources
from .tuner import DEFAULT_STORAGE, Tuner

__all__ = ["run"]


def run(run_or_experiment: Any, *, config: dict[str, Any] | None = None,
        num_samples: int = 1, stop: Any = None, scheduler: Any = None,
        search_alg: Any = None, metric: str | None = None, mode: str | None = None,
        resources_per_trial: Any = None, storage_path: str | None = None,
        local_dir: str | None = None, name: str | None = None, resume: bool | str = False,
        max_failures: int = 0, checkpoint_freq: int = 0, checkpoint_at_end: bool = False,
        keep_checkpoints_num: int | None = None, checkpoint_score_attr: str | None = None,
        verbose: int = 1, raise_on_failed_trial: bool = True, progress_reporter: Any = None,
        callbacks: list[Any] | None = None, time_budget_s: float | None = None,
        reuse_actors: bool | None = None, max_concurrent_trials: int | None = None,
        trial_name_creator: Any = None, trial_dirname_creator: Any = None,
        fail_fast: bool | str = False, executor: fedexec.Executor | None = None,
        **unused: Any) -> ExperimentAnalysis:
    """Run an experiment (Ray's classic ``tune.run``).

    ``resume=True`` (or ``"AUTO"``) continues the experiment saved under
    ``storage_path/name`` if there is one; ``"ERRORED_ONLY"``/``"RESTART_ERRORED"``
    retry its errored trials. ``checkpoint_score_attr="min-loss"`` ranks
    checkpoints by ``loss``, lowest best. Other Ray arguments (``sync_config``,
    ``log_to_file`` ...) are accepted and ignored.

    Raises:
        TuneError: a trial failed and ``raise_on_failed_trial`` is True.
    """
    unknown = set(unused) - _IGNORED
    if unknown:
        raise TypeError(f"tune.run() got unexpected arguments {sorted(unknown)}")
    trainable = run_or_experiment
    if resources_per_trial is not None:
        trainable = with_resources(trainable, resources_per_trial)
    order = "max"
    if checkpoint_score_attr and checkpoint_score_attr.startswith("min-"):
        checkpoint_score_attr, order = checkpoint_score_attr[4:], "min"
    tune_config = TuneConfig(
        metric=metric, mode=mode, num_samples=num_samples, scheduler=scheduler,
        search_alg=search_alg, max_concurrent_trials=max_concurrent_trials,
        time_budget_s=time_budget_s, reuse_actors=reuse_actors,
        trial_name_creator=trial_name_creator, trial_dirname_creator=trial_dirname_creator)
    run_config = RunConfig(
        name=name, storage_path=storage_path or local_dir, stop=stop, verbose=verbose,
        callbacks=callbacks, progress_reporter=progress_reporter,
        checkpoint_config=CheckpointConfig(
            num_to_keep=keep_checkpoints_num, checkpoint_score_attribute=checkpoint_score_attr,
            checkpoint_score_order=order, checkpoint_frequency=checkpoint_freq,
            checkpoint_at_end=checkpoint_at_end),
        failure_config=FailureConfig(max_failures=max_failures, fail_fast=fail_fast))
    tuner = _maybe_restore(trainable, resume, run_config, executor)
    if tuner is None:
        tuner = Tuner(trainable, param_space=config or {}, tune_config=tune_config,
                      run_config=run_config, executor=executor)
    results = tuner.fit()
    trials = results._analysis.trials
    analysis = ExperimentAnalysis(results.experiment_path, trials, metric, mode)
    failed = [t for t in trials if t.status == Trial.ERROR]
    if failed and raise_on_failed_trial and not getattr(tuner, "_interrupted", False):
        names = ", ".join(str(t) for t in failed)
        raise TuneError(f"trials did not complete: {names}. Their errors are in error.txt in "
                        "each trial's directory (ExperimentAnalysis.trials[i].error_file); "
                        "pass raise_on_failed_trial=False to get the analysis anyway")
    return analysis


def _maybe_restore(trainable: Any, resume: bool | str, run_config: RunConfig,
                   executor: fedexec.Executor | None) -> Tuner | None:
    if not resume or run_config.name is None:
        return None
    storage = run_config.storage_path or os.environ.get("FEDEXEC_RESULTS_DIR") or DEFAULT_STORAGE
    path = os.path.join(os.path.expanduser(storage), run_config.name)
    if not Tuner.can_restore(path):
        if resume in (True, "MUST"):
            raise TuneError(f"resume={resume!r} but there is no experiment to resume in "
                            f"{path!r}")
        return None
    mode = str(resume).upper()
    return Tuner.restore(path, trainable, executor=executor,
                         resume_errored=mode == "ERRORED_ONLY",
                         restart_errored=mode == "RESTART_ERRORED")


_IGNORED = {"sync_config", "log_to_file", "export_formats", "restore", "server_port",
            "upload_dir", "sync_to_driver", "queue_trials", "global_checkpoint_period",
            "loggers", "keep_checkpoints_order", "chdir_to_trial_dir", "storage_filesystem",
            "search_alg_kwargs", "trial_executor", "_remote"}
