"""The classic (RaySGD) ``TorchTrainer``: a thin layer over ``fedexec.train``'s
worker group. The workers (one placement group, one ``torch.distributed``
group, formed by ``TorchConfig``) live from construction to ``shutdown()``;
``train()``/``validate()`` run one epoch on every worker at once and combine
their stats; state is rank 0's (every rank holds the same parameters)."""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import fedexec

from ..config import ScalingConfig
from ..torch.config import TorchConfig
from ..worker_group import WorkerGroup
from . import _worker
from .operator import TrainingOperator

__all__ = ["TorchTrainer"]

logger = logging.getLogger(__name__)


class TorchTrainer:
    """Data-parallel training of a :class:`TrainingOperator` on ``num_workers``.

    Args:
        training_operator_cls: a ``TrainingOperator`` subclass (e.g. from
            ``TrainingOperator.from_creators``).
        initialization_hook: ``fn()`` run first in every worker (env vars ...).
        config: passed to the operator's ``setup`` (and the creators).
        num_workers, num_cpus_per_worker, use_gpu: the workers and their resources.
        backend: ``"auto"`` (nccl with GPUs, else gloo), ``"gloo"`` or ``"nccl"``.
        wrap_ddp: wrap models in DistributedDataParallel.
        add_dist_sampler: give each worker its share of the data loaders.
        use_fp16: mixed precision through ``torch.amp`` (bf16 on CPU, fp16 with a
            gradient scaler on GPU).
        use_tqdm: a progress bar of rank 0's batches.
        scheduler_step_freq: ``"batch"``, ``"epoch"`` or ``"manual"``.
        timeout_s: a collective not done in this many seconds fails.
        executor: the runtime (default: the current one).
    """

    def __init__(self, *, training_operator_cls: type[TrainingOperator],
                 initialization_hook: Any = None, config: dict[str, Any] | None = None,
                 num_workers: int = 1, num_cpus_per_worker: float = 1, use_gpu: bool = False,
                 backend: str = "auto", wrap_ddp: bool = True, add_dist_sampler: bool = True,
                 use_fp16: bool = False, use_tqdm: bool = False,
                 scheduler_step_freq: str | None = "batch", timeout_s: float = 1800,
                 executor: fedexec.Executor | None = None, **unsupported: Any) -> None:
        if unsupported:
            raise TypeError(f"TorchTrainer got unsupported arguments {sorted(unsupported)}")
        if not (isinstance(training_operator_cls, type)
                and issubclass(training_operator_cls, TrainingOperator)):
            raise TypeError("training_operator_cls must be a TrainingOperator subclass (e.g. "
                            "TrainingOperator.from_creators(model_creator, optimizer_creator, "
                            "data_creator, loss_creator))")
        if backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"backend must be 'auto', 'gloo' or 'nccl', not {backend!r}")
        self.config = dict(config or {})
        self.epochs = 0
        self._key = uuid.uuid4().hex
        self._ex = executor or fedexec.current_executor()
        resources: dict[str, float] = {"CPU": float(num_cpus_per_worker)}
        self._scaling = ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                      resources_per_worker=resources)
        flags = {"use_gpu": use_gpu, "use_fp16": use_fp16, "use_tqdm": use_tqdm,
                 "wrap_ddp": wrap_ddp, "add_dist_sampler": add_dist_sampler,
                 "scheduler_step_freq": scheduler_step_freq}
        self._torch = TorchConfig(backend=None if backend == "auto" else backend,
                                  timeout_s=int(timeout_s))
        self._setup_args = (training_operator_cls, self.config, flags, initialization_hook)
        self._group: WorkerGroup | None = None
        self._start_workers()

    def _start_workers(self) -> None:
        """A fresh worker group with an operator in every worker."""
        self._group = WorkerGroup(self._ex, self._scaling, ("", ""), {"trial_name": "sgd"},
                                  preload=TorchConfig.preload)
        try:
            self._torch.on_start(self._group, self._scaling)
            self._group.run_all(_worker.setup, self._key, *self._setup_args)
        except BaseException:
            self.shutdown()
            raise

    @property
    def _workers(self) -> WorkerGroup:
        if self._group is None:
            raise RuntimeError("this TorchTrainer was shut down; create a new one")
        return self._group

    def train(self, num_steps: int | None = None, profile: bool = False,
              reduce_results: bool = True, max_retries: int = 3,
              info: dict[str, Any] | None = None) -> Any:
        """One epoch over the training data, split across the workers (at most
        ``num_steps`` batches each). With ``max_retries``, a worker that dies
        restarts all of them from the state before the epoch (kept in memory),
        and the epoch runs again, up to that many times. Returns ``{"epoch", "train_loss",
        "num_samples", "batch_count"}``: samples of all workers together, their
        mean loss (a list of each worker's stats with ``reduce_results=False``)."""
        snapshot = self.state_dict() if max_retries > 0 else None
        for attempt in range(max_retries + 1):
            try:
                stats = self._workers.run_all(_worker.train_epoch, self._key, num_steps,
                                              {**(info or {}), "epoch_idx": self.epochs})
                break
            except Exception as exc:
                if attempt == max_retries or snapshot is None or not self._lost_a_worker():
                    raise
                logger.warning("a training worker died (%s); restarting the %d workers from "
                               "the state before this epoch (retry %d of %d)",
                               type(exc).__name__, self._scaling.num_workers, attempt + 1,
                               max_retries)
                self._workers.shutdown()
                self._start_workers()
                self.load_state_dict(snapshot)
        self.epochs += 1
        if not reduce_results:
            return stats
        out = _combine(stats, "train_loss")
        out["batch_count"] = sum(s.get("batch_count", 0) for s in stats)
        return {"epoch": self.epochs, **out}

    def _lost_a_worker(self) -> bool:
        """Whether some worker process is gone (its actor answers no call)."""
        refs = [w.actor.info.remote(("", "")) for w in self._workers.workers]
        ready, _ = self._ex.wait(refs, num_returns=len(refs), timeout=30)
        return len(ready) < len(refs) or any(r.exception() is not None for r in ready)

    def validate(self, num_steps: int | None = None, profile: bool = False,
                 reduce_results: bool = True, info: dict[str, Any] | None = None) -> Any:
        """Loss and accuracy over the validation data, split across the
        workers: ``{"val_loss", "val_accuracy" (a fraction), "num_samples"}``."""
        stats = self._workers.run_all(_worker.validate, self._key, dict(info or {}))
        if not reduce_results:
            return stats
        out = _combine(stats, "val_loss")
        if all("num_correct" in s for s in stats):
            samples = out["num_samples"]
            out["val_accuracy"] = (sum(s["num_correct"] for s in stats) / samples
                                   if samples else math.nan)
        return out

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "model", "optimizer", ...}`` of rank 0 (on the CPU; the
        model's keys without DDP's ``module.`` prefix)."""
        workers = self._workers
        state = self._ex.get(workers.workers[0].actor.execute.remote(
            _worker.state_dict, self._key))
        return {"epoch": self.epochs, **state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load ``state_dict`` (from :meth:`state_dict`) into every worker."""
        ref = self._ex.put(state_dict)
        self._ex.get([w.actor.execute.remote(_load, self._key, [ref])
                      for w in self._workers.workers])
        self.epochs = int(state_dict.get("epoch", self.epochs))

    def save(self, checkpoint: str) -> str:
        """``torch.save(self.state_dict(), checkpoint)``; returns the path."""
        import torch

        torch.save(self.state_dict(), checkpoint)
        return checkpoint

    def load(self, checkpoint: str) -> None:
        """Load a file written by :meth:`save`."""
        import torch

        self.load_state_dict(torch.load(checkpoint, weights_only=False))

    def get_model(self) -> Any:
        """A CPU copy of the trained model (a list, with several models)."""
        return self._ex.get(self._workers.workers[0].actor.execute.remote(
            _worker.get_model, self._key))

    def shutdown(self, force: bool = False) -> None:
        """End the workers (idempotent)."""
        if self._group is not None:
            self._group.shutdown()
            self._group = None

    def __enter__(self) -> TorchTrainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def _load(key: str, boxed: list[Any]) -> None:
    """Load the state in ``boxed[0]`` (a ref nested in a list reaches the worker as
    a ref: fetched once per worker from the store)."""
    _worker.load_state_dict(key, fedexec.get(boxed[0]))


def _combine(stats: list[dict[str, Any]], loss_key: str) -> dict[str, Any]:
    samples = sum(int(s.get("num_samples", 0)) for s in stats)
    loss = (sum(float(s[loss_key]) * int(s["num_samples"]) for s in stats
                if s.get("num_samples")) / samples if samples else math.nan)
    return {loss_key: loss, "num_samples": samples}
