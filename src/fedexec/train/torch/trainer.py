"""``TorchTrainer``: data-parallel PyTorch training on fedexec workers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import fedexec
from fedexec.tune.checkpoint import Checkpoint

from ..config import RunConfig, ScalingConfig
from ..trainer import DataParallelTrainer
from .config import TorchConfig

__all__ = ["TorchTrainer"]


class TorchTrainer(DataParallelTrainer):
    """Runs ``train_loop_per_worker`` on ``scaling_config.num_workers`` workers that
    form one ``torch.distributed`` process group (gloo on CPU, nccl with GPUs).
    Arguments as :class:`~fedexec.train.trainer.DataParallelTrainer`, with
    ``torch_config`` for the process group."""

    _default_name = "TorchTrainer"

    def __init__(self, train_loop_per_worker: Callable[..., Any], *,
                 train_loop_config: dict[str, Any] | None = None,
                 torch_config: TorchConfig | None = None,
                 scaling_config: ScalingConfig | None = None,
                 run_config: RunConfig | None = None,
                 datasets: Mapping[str, Any] | None = None,
                 resume_from_checkpoint: Checkpoint | None = None,
                 metadata: dict[str, Any] | None = None,
                 executor: fedexec.Executor | None = None) -> None:
        super().__init__(train_loop_per_worker, train_loop_config=train_loop_config,
                         backend_config=torch_config or TorchConfig(),
                         scaling_config=scaling_config, run_config=run_config,
                         datasets=datasets, resume_from_checkpoint=resume_from_checkpoint,
                         metadata=metadata, executor=executor)
