"""``fedexec.train``: distributed training on fedexec workers (Ray Train's role).

Modern API::

    from fedexec import train
    from fedexec.train import ScalingConfig, RunConfig, Checkpoint
    from fedexec.train.torch import TorchTrainer, prepare_model

    def loop(config):
        model = prepare_model(make_model())
        for epoch in range(config["epochs"]):
            ...
            train.report({"loss": loss}, checkpoint=Checkpoint.from_directory(d))

    result = TorchTrainer(loop, train_loop_config={"epochs": 3},
                          scaling_config=ScalingConfig(num_workers=2)).fit()

Classic API (RaySGD's, a thin layer over the same workers): ``fedexec.train.sgd``.

The workers are actors gang-scheduled in one placement group; a failed worker
restarts the whole group from the latest checkpoint (``FailureConfig``). The
package is a client of fedexec's public API only; torch is imported when used.
"""

from __future__ import annotations

import importlib
from typing import Any

from fedexec.tune.checkpoint import Checkpoint
from fedexec.tune.result import Result

from .config import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from .context import TrainContext
from .error import TrainingFailedError
from .session import get_checkpoint, get_context, get_dataset_shard, report
from .trainer import DataParallelTrainer

__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "DataParallelTrainer",
    "FailureConfig",
    "Result",
    "RunConfig",
    "ScalingConfig",
    "TrainContext",
    "TrainingFailedError",
    "get_checkpoint",
    "get_context",
    "get_dataset_shard",
    "report",
]

_LAZY_MODULES = {"torch", "sgd"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
