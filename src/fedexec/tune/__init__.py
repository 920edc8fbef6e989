"""``fedexec.tune``: hyperparameter search at any scale (Ray Tune's role).

Modern API::

    from fedexec import tune
    tuner = tune.Tuner(train_fn, param_space={"lr": tune.loguniform(1e-4, 1e-1)},
                       tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=20))
    best = tuner.fit().get_best_result()

Classic API (a thin layer over the same machinery)::

    analysis = tune.run(train_fn, config={"x": tune.grid_search([1, 2])})
    analysis.get_best_config(metric="score", mode="min")

Each trial runs in its own actor (its resources reserved), as many at once as the
cluster and ``max_concurrent_trials`` allow; finished trials' actors are reused;
results reach the driver in batches and are written to disk off the hot path.
The package is a client of fedexec's public API only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below are imported on first use (see __getattr__)
    from . import schedulers, search, stopper, track
    from .analysis import ExperimentAnalysis
    from .callback import Callback
    from .checkpoint import Checkpoint
    from .config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
    from .error import TuneError
    from .experiment.trial import Trial
    from .progress import CLIReporter, JupyterNotebookReporter, ProgressReporter
    from .resources import PlacementGroupFactory
    from .result import Result
    from .result_grid import ResultGrid
    from .search.sample import (
        choice,
        grid_search,
        lograndint,
        loguniform,
        qlograndint,
        qloguniform,
        qrandint,
        qrandn,
        quniform,
        randint,
        randn,
        sample_from,
        uniform,
    )
    from .stopper import Stopper
    from .trainable.registry import get_trainable_cls, register_trainable
    from .trainable.session import (
        TrialContext,
        get_checkpoint,
        get_context,
        get_trial_dir,
        get_trial_id,
        get_trial_name,
        get_trial_resources,
        report,
    )
    from .trainable.trainable import Trainable
    from .trainable.wrappers import with_parameters, with_resources
    from .tune import run
    from .tuner import Tuner

__all__ = [
    "CLIReporter",
    "Callback",
    "Checkpoint",
    "CheckpointConfig",
    "ExperimentAnalysis",
    "FailureConfig",
    "JupyterNotebookReporter",
    "PlacementGroupFactory",
    "ProgressReporter",
    "Result",
    "ResultGrid",
    "RunConfig",
    "Stopper",
    "Trainable",
    "Trial",
    "TrialContext",
    "TuneConfig",
    "TuneError",
    "Tuner",
    "choice",
    "get_checkpoint",
    "get_context",
    "get_trainable_cls",
    "get_trial_dir",
    "get_trial_id",
    "get_trial_name",
    "get_trial_resources",
    "grid_search",
    "lograndint",
    "loguniform",
    "qlograndint",
    "qloguniform",
    "qrandint",
    "qrandn",
    "quniform",
    "randint",
    "randn",
    "register_trainable",
    "report",
    "run",
    "sample_from",
    "schedulers",
    "search",
    "stopper",
    "track",
    "uniform",
    "with_parameters",
    "with_resources",
]

#: where each public name lives (imported on first use, so that a trial actor's
#: process, which needs only the session and checkpoint modules, does not import
#: the searchers, schedulers, loggers and numpy)
_WHERE = {
    "ExperimentAnalysis": ".analysis", "Callback": ".callback", "Checkpoint": ".checkpoint",
    "CheckpointConfig": ".config", "FailureConfig": ".config", "RunConfig": ".config",
    "TuneConfig": ".config", "TuneError": ".error", "Trial": ".experiment.trial",
    "CLIReporter": ".progress", "JupyterNotebookReporter": ".progress",
    "ProgressReporter": ".progress", "PlacementGroupFactory": ".resources",
    "Result": ".result", "ResultGrid": ".result_grid", "Stopper": ".stopper",
    "get_trainable_cls": ".trainable.registry", "register_trainable": ".trainable.registry",
    "Trainable": ".trainable.trainable", "with_parameters": ".trainable.wrappers",
    "with_resources": ".trainable.wrappers", "run": ".tune", "Tuner": ".tuner",
    **dict.fromkeys(["choice", "grid_search", "lograndint", "loguniform", "qlograndint",
                     "qloguniform", "qrandint", "qrandn", "quniform", "randint", "randn",
                     "sample_from", "uniform"], ".search.sample"),
    **dict.fromkeys(["TrialContext", "get_checkpoint", "get_context", "get_trial_dir",
                     "get_trial_id", "get_trial_name", "get_trial_resources", "report"],
                    ".trainable.session"),
}
_MODULES = {"schedulers", "search", "stopper", "track", "suggest", "logger", "experiment",
            "execution", "progress"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _MODULES)
