"""``TorchConfig``: forming the workers' ``torch.distributed`` process group."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fedexec.backends import capabilities

__all__ = ["TorchConfig"]


@dataclass
class TorchConfig:
    """How the workers' process group is formed.

    Attributes:
        backend: ``"gloo"`` or ``"nccl"``; None: nccl when the workers have GPUs,
            else gloo.
        init_method: ``"env"`` (``MASTER_ADDR``/``MASTER_PORT``, set by the
            trainer) or ``"tcp"`` (the same address as a URL).
        timeout_s: a collective that does not complete in this many seconds
            fails the group (which the trainer then restarts or reports),
            instead of hanging.
    """

    backend: str | None = None
    init_method: str = "env"
    timeout_s: int = 1800

    #: the workers import these as they start (overlapping the group's setup)
    preload = ("torch", "torch.distributed")

    def __post_init__(self) -> None:
        if self.backend not in (None, "gloo", "nccl"):
            raise ValueError(f"TorchConfig.backend must be None, 'gloo' or 'nccl', not "
                             f"{self.backend!r}")
        if self.init_method not in ("env", "tcp"):
            raise ValueError(f"TorchConfig.init_method must be 'env' or 'tcp', not "
                             f"{self.init_method!r}")

    def on_start(self, group: Any, scaling: Any) -> None:
        """Form the process group on every worker (at once)."""
        if "worker_processes" not in capabilities(group.backend):
            return  # one worker in this process: nothing to connect
        backend = self.backend or ("nccl" if scaling.use_gpu else "gloo")
        group.run_all(setup_process_group, backend, self.init_method, self.timeout_s)


def setup_process_group(backend: str, init_method: str, timeout_s: float) -> None:
    """In a worker: pick its device and join the process group (env vars set)."""
    import torch
    import torch.distributed as dist

    from .train_loop_utils import get_device

    if backend == "nccl":
        torch.cuda.set_device(get_device())
    if dist.is_initialized():
        dist.destroy_process_group()
    url = "env://" if init_method == "env" else (
        f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}")
    dist.init_process_group(backend=backend, init_method=url,
                            rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]),
                            timeout=timedelta(seconds=timeout_s))
