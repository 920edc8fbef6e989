"""The configuration objects of an experiment: ``TuneConfig``, ``RunConfig``,
``CheckpointConfig``, ``FailureConfig`` (as Ray's, same names and defaults)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CheckpointConfig", "FailureConfig", "RunConfig", "TuneConfig"]


@dataclass
class CheckpointConfig:
    """Which checkpoints stay on disk, and when class trainables save them.

    Attributes:
        num_to_keep: keep this many (the best ones by ``checkpoint_score_attribute``,
            else the newest), plus the latest; None keeps all.
        checkpoint_score_attribute: the metric ranking checkpoints.
        checkpoint_score_order: ``"max"`` or ``"min"``.
        checkpoint_frequency: class trainables save every this many iterations.
        checkpoint_at_end: class trainables save when they end.
    """

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool = False

    def __post_init__(self) -> None:
        if self.num_to_keep is not None and self.num_to_keep < 1:
            raise ValueError(f"num_to_keep must be None or at least 1, not {self.num_to_keep}")
        if self.checkpoint_score_order not in ("max", "min"):
            raise ValueError("checkpoint_score_order must be 'max' or 'min', not "
                             f"{self.checkpoint_score_order!r}")
        if self.checkpoint_frequency < 0:
            raise ValueError("checkpoint_frequency must not be negative")


@dataclass
class FailureConfig:
    """What happens when a trial fails.

    Attributes:
        max_failures: retry a failed trial this many times, from its latest
            checkpoint (-1: forever).
        fail_fast: stop the whole experiment at the first trial error
            (``"raise"``: and raise that error from ``fit``).
    """

    max_failures: int = 0
    fail_fast: bool | str = False


@dataclass
class RunConfig:
    """Where results go and when trials stop.

    Attributes:
        name: the experiment's directory name (default: trainable name + date).
        storage_path: the parent directory (default ``~/fedexec_results``).
        stop: a dict of ``metric: bound`` (any reached stops the trial), a function
            ``(trial_id, result) -> bool`` or a ``tune.Stopper``.
        checkpoint_config, failure_config: see those classes.
        verbose: 0 silent, 1 progress, 2 also a line per finished trial, 3 also
            every result.
        callbacks: ``tune.Callback`` objects (loggers among them run off the hot path).
        progress_reporter: a ``tune.ProgressReporter`` replacing the default one.
        sync_config, storage_filesystem, log_to_file: accepted for compatibility;
            results are always written to the local ``storage_path``.
    """

    name: str | None = None
    storage_path: str | None = None
    stop: Any = None
    checkpoint_config: CheckpointConfig | None = None
    failure_config: FailureConfig | None = None
    verbose: int = 1
    callbacks: list[Any] | None = None
    progress_reporter: Any = None
    sync_config: Any = None
    storage_filesystem: Any = None
    log_to_file: Any = False
    local_dir: str | None = None


@dataclass
class TuneConfig:
    """How the search runs.

    Attributes:
        metric, mode: the metric to optimise and ``"min"``/``"max"`` (the default
            for searchers, schedulers and ``get_best_result``).
        num_samples: how many times the param_space (its whole grid) is sampled;
            -1: until ``time_budget_s`` or the searcher ends.
        scheduler: a ``tune.schedulers`` scheduler (default FIFO).
        search_alg: a ``tune.search`` searcher (default BasicVariantGenerator).
        max_concurrent_trials: at most this many trials at once (default: as
            many as the cluster's resources allow).
        time_budget_s: stop every trial after this many seconds.
        reuse_actors: run a new trial in a finished trial's actor (same
            resources). None (the default, as in Ray 2): yes for function
            trainables and for classes that implement ``reset_config``.
        trial_name_creator, trial_dirname_creator: ``fn(trial) -> str``.
    """

    metric: str | None = None
    mode: str | None = None
    num_samples: int = 1
    scheduler: Any = None
    search_alg: Any = None
    max_concurrent_trials: int | None = None
    time_budget_s: float | None = None
    reuse_actors: bool | None = None
    trial_name_creator: Callable[[Any], str] | None = None
    trial_dirname_creator: Callable[[Any], str] | None = None
    chdir_to_trial_dir: bool = False

    def __post_init__(self) -> None:
        if self.mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {self.mode!r}")
        if self.num_samples == 0 or self.num_samples < -1:
            raise ValueError(f"num_samples must be positive or -1, not {self.num_samples}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError("max_concurrent_trials must be at least 1")
