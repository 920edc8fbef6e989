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
from typing import Any

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

_LAZY_MODULES = {"suggest", "logger", "experiment", "execution", "progress"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
