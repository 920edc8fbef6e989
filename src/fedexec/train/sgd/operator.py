"""``TrainingOperator``: what one classic (RaySGD) worker does with its model,
optimizer, loss and data — built by ``from_creators`` or by subclassing
(``setup(config)`` calling ``register``/``register_data``).

One operator lives in each worker process; ``train_epoch``/``validate`` run on
the worker's share of the data (a ``DistributedSampler`` per worker).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["TrainingOperator"]


class TrainingOperator:
    """One worker's training logic (as RaySGD's ``TrainingOperator``).

    Subclass and write ``setup(config)`` (register models, optimizers, loss and
    data there); override ``train_batch``/``validate_batch`` (or
    ``train_epoch``/``validate``) to change a step. Or build one with
    :meth:`from_creators`.
    """

    def __init__(self, config: dict[str, Any], *, world_rank: int = 0, local_rank: int = 0,
                 world_size: int = 1, device: Any = None, use_gpu: bool = False,
                 use_fp16: bool = False, use_tqdm: bool = False, wrap_ddp: bool = True,
                 add_dist_sampler: bool = True, scheduler_step_freq: str | None = "batch"
                 ) -> None:
        import torch

        self._config = config
        self._world_rank, self._local_rank, self._world_size = world_rank, local_rank, world_size
        self._device = device if device is not None else torch.device("cpu")
        self._use_gpu, self._use_fp16, self._use_tqdm = use_gpu, use_fp16, use_tqdm
        self._wrap_ddp, self._add_dist_sampler = wrap_ddp, add_dist_sampler
        if scheduler_step_freq not in (None, "batch", "epoch", "manual"):
            raise ValueError("scheduler_step_freq must be 'batch', 'epoch', 'manual' or None, "
                             f"not {scheduler_step_freq!r}")
        self._scheduler_step_freq = scheduler_step_freq
        self._models: list[Any] = []
        self._original_models: list[Any] = []
        self._optimizers: list[Any] = []
        self._schedulers: list[Any] = []
        self._criterion: Any = None
        self._train_loader: Any = None
        self._validation_loader: Any = None
        self.setup(config)
        if not self._models:
            raise ValueError(f"{type(self).__name__}.setup(config) registered no model: call "
                             "self.register(models=..., optimizers=...) in it")

    # ------------------------------------------------------------------ to write
    def setup(self, config: dict[str, Any]) -> None:
        """Create and ``register`` the models, optimizers, loss and data."""
        raise NotImplementedError(f"{type(self).__name__} must define setup(config), or be "
                                  "made by TrainingOperator.from_creators(...)")

    # ------------------------------------------------------------------ registering
    def register(self, *, models: Any, optimizers: Any, criterion: Any = None,
                 schedulers: Any = None, **_: Any) -> tuple[Any, ...]:
        """Register models (moved to the device, wrapped in DDP with several
        workers, under autocast with ``use_fp16``), optimizers, the loss and
        schedulers; returns them prepared, in the shape given:
        ``(models, optimizers[, criterion][, schedulers])``."""
        from ..torch.train_loop_utils import accelerate, prepare_model, prepare_optimizer

        accelerate(amp=self._use_fp16)
        many = isinstance(models, (list, tuple))
        self._original_models = list(models) if many else [models]
        strategy = "ddp" if self._wrap_ddp else None
        self._models = [prepare_model(m, move_to_device=self._device,
                                      parallel_strategy=strategy)
                        for m in self._original_models]
        many_opts = isinstance(optimizers, (list, tuple))
        self._optimizers = [prepare_optimizer(o) for o in (
            optimizers if many_opts else [optimizers])]
        if criterion is not None:
            self._criterion = criterion.to(self._device) if hasattr(criterion, "to") else criterion
        if schedulers is not None:
            self._schedulers = list(schedulers) if isinstance(schedulers, (list, tuple)) else [
                schedulers]
        out: list[Any] = [self._models if many else self._models[0],
                          self._optimizers if many_opts else self._optimizers[0]]
        if criterion is not None:
            out.append(self._criterion)
        if schedulers is not None:
            out.append(self._schedulers if isinstance(schedulers, (list, tuple))
                       else self._schedulers[0])
        return tuple(out)

    def register_data(self, *, train_loader: Any = None, validation_loader: Any = None) -> None:
        """Register the data loaders; each worker gets its share
        (``DistributedSampler``) and batches on its device."""
        from ..torch.train_loop_utils import prepare_data_loader

        def prepare(loader: Any) -> Any:
            if loader is None:
                return None
            return prepare_data_loader(loader, add_dist_sampler=self._add_dist_sampler,
                                       move_to_device=True)

        self._train_loader = prepare(train_loader)
        self._validation_loader = prepare(validation_loader)

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, iterator: Iterable[Any], info: dict[str, Any]) -> dict[str, Any]:
        """One pass over ``iterator``: ``train_batch`` per batch; returns the mean
        loss over this worker's samples, ``num_samples`` and ``batch_count``."""
        for model in self._models:
            model.train()
        total_loss, samples, batches = 0.0, 0, 0
        num_steps = info.get("num_steps")
        bar = _progress(self._use_tqdm and self._world_rank == 0, iterator,
                        f"epoch {info.get('epoch_idx', 0) + 1}", num_steps)
        for batch_idx, batch in enumerate(bar):
            if num_steps is not None and batch_idx >= num_steps:
                break
            metrics = self.train_batch(batch, {**info, "batch_idx": batch_idx})
            n = int(metrics.get("num_samples", 1))
            total_loss += float(metrics.get("train_loss", 0.0)) * n
            samples += n
            batches += 1
            if self._scheduler_step_freq == "batch":
                for scheduler in self._schedulers:
                    scheduler.step()
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(metrics.get('train_loss', 0.0)):.4f}")
        if hasattr(bar, "close"):
            bar.close()
        if self._scheduler_step_freq == "epoch":
            for scheduler in self._schedulers:
                scheduler.step()
        return {"train_loss": total_loss / samples if samples else math.nan,
                "num_samples": samples, "batch_count": batches}

    def train_batch(self, batch: Any, batch_info: dict[str, Any]) -> dict[str, Any]:
        """Forward, loss, backward, step on ``batch`` = ``(features, target)``."""
        from ..torch.train_loop_utils import backward

        *features, target = batch
        output = self.model(*features)
        loss = self.criterion(output, target)
        self.optimizer.zero_grad()
        backward(loss)
        self.optimizer.step()
        return {"train_loss": loss.item(), "num_samples": _size(target)}

    def validate(self, val_iterator: Iterable[Any], info: dict[str, Any]) -> dict[str, Any]:
        """``validate_batch`` over ``val_iterator`` without gradients; returns
        the mean loss, the correct count and ``num_samples`` of this worker."""
        import torch

        for model in self._models:
            model.eval()
        total_loss, correct, samples, classified = 0.0, 0, 0, False
        with torch.no_grad():
            for batch_idx, batch in enumerate(val_iterator):
                metrics = self.validate_batch(batch, {**info, "batch_idx": batch_idx})
                n = int(metrics.get("num_samples", 1))
                total_loss += float(metrics.get("val_loss", 0.0)) * n
                if "val_accuracy" in metrics:
                    classified = True
                    correct += round(float(metrics["val_accuracy"]) * n)
                samples += n
        out: dict[str, Any] = {"val_loss": total_loss / samples if samples else math.nan,
                               "num_samples": samples}
        if classified:
            out["num_correct"] = correct
        return out

    def validate_batch(self, batch: Any, batch_info: dict[str, Any]) -> dict[str, Any]:
        """Loss (and, for class scores, accuracy) on ``batch``."""
        *features, target = batch
        output = self.model(*features)
        loss = self.criterion(output, target)
        out = {"val_loss": loss.item(), "num_samples": _size(target)}
        if getattr(output, "dim", lambda: 0)() == 2 and output.size(1) > 1 and (
                target.dim() == 1):
            out["val_accuracy"] = (output.argmax(1) == target).float().mean().item()
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Extra state of a subclass, saved with the trainer's."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    # ------------------------------------------------------------------ accessors
    @property
    def config(self) -> dict[str, Any]:
        return self._config

    @property
    def device(self) -> Any:
        return self._device

    @property
    def world_rank(self) -> int:
        return self._world_rank

    @property
    def local_rank(self) -> int:
        return self._local_rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def use_gpu(self) -> bool:
        return self._use_gpu

    @property
    def use_fp16(self) -> bool:
        return self._use_fp16

    @property
    def use_tqdm(self) -> bool:
        return self._use_tqdm

    @property
    def model(self) -> Any:
        return self._models[0]

    @property
    def models(self) -> list[Any]:
        return self._models

    @property
    def optimizer(self) -> Any:
        return self._optimizers[0]

    @property
    def optimizers(self) -> list[Any]:
        return self._optimizers

    @property
    def criterion(self) -> Any:
        return self._criterion

    @property
    def scheduler(self) -> Any:
        return self._schedulers[0] if self._schedulers else None

    @property
    def schedulers(self) -> list[Any]:
        return self._schedulers

    @property
    def train_loader(self) -> Any:
        return self._train_loader

    @property
    def validation_loader(self) -> Any:
        return self._validation_loader

    def unwrapped_models(self) -> list[Any]:
        """The models without their DDP wrapper."""
        return [getattr(m, "module", m) for m in self._models]

    # ------------------------------------------------------------------ creators
    @classmethod
    def from_creators(cls, model_creator: Callable[..., Any],
                      optimizer_creator: Callable[..., Any],
                      data_creator: Callable[..., Any] | None = None,
                      loss_creator: Any = None, scheduler_creator: Callable[..., Any] | None = None,
                      serialize_data_creation: bool = True) -> type[TrainingOperator]:
        """A ``TrainingOperator`` subclass from creator functions:
        ``model_creator(config)`` (a model or a list), ``optimizer_creator(models,
        config)``, ``data_creator(config) -> (train_loader, val_loader)``,
        ``loss_creator``: a loss class (``torch.nn.MSELoss``) or ``fn(config)``,
        ``scheduler_creator(optimizers, config)``."""
        if not callable(model_creator) or not callable(optimizer_creator):
            raise TypeError("from_creators needs a model_creator and an optimizer_creator "
                            "(functions of config)")

        def setup(self: TrainingOperator, config: dict[str, Any]) -> None:
            import torch

            models = model_creator(config)
            optimizers = optimizer_creator(models, config)
            criterion = None
            if loss_creator is not None:
                if inspect.isclass(loss_creator) and issubclass(loss_creator, torch.nn.Module):
                    criterion = loss_creator()
                else:
                    criterion = loss_creator(config)
            schedulers = scheduler_creator(optimizers, config) if scheduler_creator else None
            self.register(models=models, optimizers=optimizers, criterion=criterion,
                          schedulers=schedulers)
            if data_creator is not None:
                loaders = data_creator(config)
                train_loader, val_loader = (loaders if isinstance(loaders, (list, tuple))
                                            else (loaders, None))
                self.register_data(train_loader=train_loader, validation_loader=val_loader)

        return type("CreatorOperator", (cls,), {"setup": setup,
                                                "__doc__": "An operator made from creators."})


def _size(target: Any) -> int:
    size = getattr(target, "size", None)
    return int(size(0)) if callable(size) else len(target)


def _progress(enabled: bool, iterator: Iterable[Any], desc: str, total: int | None) -> Any:
    if not enabled:
        return iterator
    try:
        from tqdm import tqdm
    except ImportError:
        return iterator
    length = total if total is not None else (
        len(iterator) if hasattr(iterator, "__len__") else None)  # type: ignore[arg-type]
    return tqdm(iterator, desc=desc, total=length, unit="batch")
