"""``fedexec.train.torch``: PyTorch on fedexec.train (torch is imported when used).

    from fedexec.train.torch import TorchTrainer, prepare_model, prepare_data_loader
"""

from __future__ import annotations

from .config import TorchConfig
from .train_loop_utils import (
    accelerate,
    backward,
    enable_reproducibility,
    get_device,
    get_devices,
    prepare_data_loader,
    prepare_model,
    prepare_optimizer,
)
from .trainer import TorchTrainer

__all__ = [
    "TorchConfig",
    "TorchTrainer",
    "accelerate",
    "backward",
    "enable_reproducibility",
    "get_device",
    "get_devices",
    "prepare_data_loader",
    "prepare_model",
    "prepare_optimizer",
]
