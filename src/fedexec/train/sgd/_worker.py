"""What the classic trainer runs in its workers (through ``WorkerGroup.run_all``):
one :class:`TrainingOperator` per worker process, kept here by trainer key."""

from __future__ import annotations

import copy
import os
from typing import Any

_operators: dict[str, Any] = {}


def setup(key: str, operator_cls: type, config: dict[str, Any], flags: dict[str, Any],
          hook: Any) -> None:
    """Build this worker's operator (after ``hook()``, if given)."""
    from ..torch.train_loop_utils import get_device

    if hook is not None:
        hook()
    _operators[key] = operator_cls(
        config, world_rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)), device=get_device(), **flags)


def train_epoch(key: str, num_steps: int | None, info: dict[str, Any]) -> dict[str, Any]:
    op = _operators[key]
    if op.train_loader is None:
        raise ValueError("train() needs a training data loader: return (train_loader, "
                         "val_loader) from data_creator, or call register_data in setup")
    return dict(op.train_epoch(op.train_loader, {**info, "num_steps": num_steps}))


def validate(key: str, info: dict[str, Any]) -> dict[str, Any]:
    op = _operators[key]
    if op.validation_loader is None:
        raise ValueError("validate() needs a validation data loader: return (train_loader, "
                         "val_loader) from data_creator, or call register_data in setup")
    return dict(op.validate(op.validation_loader, info))


def state_dict(key: str) -> dict[str, Any]:
    """The operator's state, on the CPU: models without the DDP prefix."""
    op = _operators[key]
    models = [_cpu(m.state_dict()) for m in op.unwrapped_models()]
    optimizers = [_cpu(o.state_dict()) for o in op.optimizers]
    state: dict[str, Any] = {}
    if len(models) == 1:
        state["model"] = models[0]
    else:
        state["models"] = models
    if len(optimizers) == 1:
        state["optimizer"] = optimizers[0]
    else:
        state["optimizers"] = optimizers
    if op.schedulers:
        scheds = [s.state_dict() for s in op.schedulers]
        state.update({"scheduler": scheds[0]} if len(scheds) == 1 else {"schedulers": scheds})
    extra = op.state_dict()
    if extra:
        state["operator"] = extra
    return state


def load_state_dict(key: str, state: dict[str, Any]) -> None:
    op = _operators[key]
    for model, sd in zip(op.unwrapped_models(), state.get("models") or [state["model"]]):
        model.load_state_dict(sd)
    optimizers = state.get("optimizers") or ([state["optimizer"]] if "optimizer" in state
                                             else [])
    for optimizer, sd in zip(op.optimizers, optimizers):
        optimizer.load_state_dict(sd)
    schedulers = state.get("schedulers") or ([state["scheduler"]] if "scheduler" in state
                                             else [])
    for scheduler, sd in zip(op.schedulers, schedulers):
        scheduler.load_state_dict(sd)
    if "operator" in state:
        op.load_state_dict(state["operator"])


def get_model(key: str) -> Any:
    """A CPU copy of the model(s), unwrapped."""
    models = [copy.deepcopy(m).cpu() for m in _operators[key].unwrapped_models()]
    return models[0] if len(models) == 1 else models


def forget(key: str) -> None:
    _operators.pop(key, None)


def _cpu(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cpu(v) for v in value]
    return value
