"""Helpers for the code inside ``train_loop_per_worker``: devices, DDP,
distributed data loaders, mixed precision, reproducibility.

Mixed precision (``accelerate(amp=True)``) is per worker process: models
prepared afterwards run their forward under ``torch.autocast`` (bf16 on CPU,
fp16 on GPU); ``prepare_optimizer`` and ``backward`` scale the loss with a
``GradScaler`` where fp16 needs it (on GPU).
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Iterator
from typing import Any

import fedexec

from ..session import current

__all__ = [
    "accelerate",
    "backward",
    "enable_reproducibility",
    "get_device",
    "get_devices",
    "prepare_data_loader",
    "prepare_model",
    "prepare_optimizer",
]

_amp: dict[str, Any] = {"enabled": False, "scaler": None}


def _world() -> tuple[int, int]:
    """``(rank, world size)``: the session's, else the environment's (a worker
    of the classic ``sgd`` trainer), else a single process."""
    try:
        ctx = current().context
    except RuntimeError:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return ctx.world_rank, ctx.world_size


def get_device() -> Any:
    """This worker's ``torch.device``: its GPU (the one fedexec gave it, among
    ``CUDA_VISIBLE_DEVICES``) when it has one, else the CPU."""
    import torch

    gpu_ids = [str(g) for g in fedexec.get_gpu_ids()]
    if not gpu_ids or not torch.cuda.is_available():
        return torch.device("cpu")
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    index = visible.index(gpu_ids[0]) if gpu_ids[0] in visible else 0
    return torch.device("cuda", index)


def get_devices() -> list[Any]:
    """All devices of this worker (one, for now)."""
    return [get_device()]


def prepare_model(model: Any, *, move_to_device: bool | Any = True,
                  parallel_strategy: str | None = "ddp",
                  parallel_strategy_kwargs: dict[str, Any] | None = None) -> Any:
    """``model`` moved to the worker's device and, with more than one worker,
    wrapped in ``DistributedDataParallel`` (``parallel_strategy="ddp"``; None: not
    wrapped). ``move_to_device`` may also be a device."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if parallel_strategy not in (None, "ddp"):
        raise ValueError(f"parallel_strategy must be 'ddp' or None, not {parallel_strategy!r} "
                         "(FSDP is not supported yet)")
    device = move_to_device if move_to_device not in (True, False) else get_device()
    if move_to_device is not False:
        model = model.to(device)
    if _amp["enabled"]:
        model.forward = _autocast(model.forward, torch.device(device).type)
    _, world_size = _world()
    if parallel_strategy == "ddp" and world_size > 1:
        kwargs = dict(parallel_strategy_kwargs or {})
        if torch.device(device).type == "cuda":
            kwargs.setdefault("device_ids", [torch.device(device)])
            kwargs.setdefault("output_device", torch.device(device))
        model = DistributedDataParallel(model, **kwargs)
    return model


def _autocast(forward: Any, device_type: str) -> Any:
    import torch

    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16

    @functools.wraps(forward)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=device_type, dtype=dtype):
            return forward(*args, **kwargs)

    return wrapped


def prepare_data_loader(data_loader: Any, *, add_dist_sampler: bool = True,
                        move_to_device: bool = True, auto_transfer: bool = True) -> Any:
    """``data_loader`` giving this worker its share: with more than one worker a
    ``DistributedSampler`` (shuffling if the loader shuffled; its epoch advances
    on each pass), and batches moved to the worker's device."""
    from torch.utils.data import DataLoader, IterableDataset, RandomSampler
    from torch.utils.data.distributed import DistributedSampler

    rank, world_size = _world()
    if (add_dist_sampler and world_size > 1
            and not isinstance(data_loader.sampler, DistributedSampler)
            and not isinstance(data_loader.dataset, IterableDataset)):
        shuffle = isinstance(data_loader.sampler, RandomSampler)
        sampler: Any = DistributedSampler(data_loader.dataset, num_replicas=world_size, rank=rank,
                                     shuffle=shuffle)
        data_loader = DataLoader(
            data_loader.dataset, batch_size=data_loader.batch_size, sampler=sampler,
            num_workers=data_loader.num_workers, collate_fn=data_loader.collate_fn,
            pin_memory=data_loader.pin_memory, drop_last=data_loader.drop_last,
            timeout=data_loader.timeout, worker_init_fn=data_loader.worker_init_fn,
            generator=data_loader.generator,
            persistent_workers=data_loader.persistent_workers)
    if move_to_device or isinstance(getattr(data_loader, "sampler", None), DistributedSampler):
        return _DeviceLoader(data_loader, get_device() if move_to_device else None)
    return data_loader


class _DeviceLoader:
    """A data loader whose batches are moved to ``device`` and whose
    ``DistributedSampler`` epoch advances on every pass."""

    def __init__(self, loader: Any, device: Any) -> None:
        self._loader, self._device, self._epoch = loader, device, 0

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __iter__(self) -> Iterator[Any]:
        sampler: Any = getattr(self._loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self._epoch)
        self._epoch += 1
        for batch in self._loader:
            yield _to(batch, self._device) if self._device is not None else batch


def _to(value: Any, device: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        moved = [_to(v, device) for v in value]
        return type(value)(*moved) if hasattr(value, "_fields") else type(value)(moved)
    return value


def accelerate(amp: bool = False) -> None:
    """Turn mixed precision on (``amp=True``) for models and optimizers prepared
    after this call in this worker."""
    _amp["enabled"] = bool(amp)
    _amp["scaler"] = None


def prepare_optimizer(optimizer: Any) -> Any:
    """``optimizer`` whose ``step`` unscales and steps through a ``GradScaler``
    when fp16 mixed precision is on (GPU); otherwise ``optimizer`` itself."""
    import torch

    if not _amp["enabled"] or get_device().type != "cuda":
        return optimizer
    _amp["scaler"] = torch.amp.GradScaler("cuda")
    return _ScaledOptimizer(optimizer, _amp["scaler"])


class _ScaledOptimizer:
    def __init__(self, optimizer: Any, scaler: Any) -> None:
        self.optimizer, self.scaler = optimizer, scaler

    def step(self, closure: Any = None) -> Any:
        out = self.scaler.step(self.optimizer, closure) if closure else self.scaler.step(
            self.optimizer)
        self.scaler.update()
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


def backward(tensor: Any) -> None:
    """``tensor.backward()``, scaled when fp16 mixed precision needs it."""
    scaler = _amp["scaler"]
    (scaler.scale(tensor) if scaler is not None else tensor).backward()


def enable_reproducibility(seed: int = 0) -> None:
    """Seed Python, NumPy and torch with ``seed`` and make torch use deterministic
    algorithms (slower), so a run repeats exactly."""
    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
