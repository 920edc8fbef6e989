"""The configuration of a training run.

``RunConfig``, ``CheckpointConfig`` and ``FailureConfig`` are ``fedexec.tune``'s
(one set of classes, as in Ray, so a trainer's run config is a tuner's);
``ScalingConfig`` says how many workers and what each one gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedexec.tune.config import CheckpointConfig, FailureConfig, RunConfig
from fedexec.tune.resources import resources_to_options

__all__ = ["CheckpointConfig", "FailureConfig", "RunConfig", "ScalingConfig"]

_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class ScalingConfig:
    """How many training workers, and the resources of each.

    Attributes:
        num_workers: worker actors, one ``torch.distributed`` rank each.
        use_gpu: one GPU per worker (unless ``resources_per_worker`` says otherwise).
        resources_per_worker: e.g. ``{"CPU": 2, "GPU": 1}`` (default one CPU, and
            one GPU with ``use_gpu``); lower-case ``cpu``/``gpu`` are accepted.
        placement_strategy: how the workers' bundles are placed in their placement
            group: ``"PACK"`` (default), ``"SPREAD"``, ``"STRICT_PACK"``,
            ``"STRICT_SPREAD"``.
        trainer_resources: accepted for compatibility; the trainer's coordination
            takes no resources.
    """

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    placement_strategy: str = "PACK"
    trainer_resources: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or (
                self.num_workers < 1):
            raise ValueError(f"ScalingConfig.num_workers must be an int >= 1, not "
                             f"{self.num_workers!r}")
        if self.placement_strategy not in _STRATEGIES:
            raise ValueError(f"ScalingConfig.placement_strategy must be one of {_STRATEGIES}, "
                             f"not {self.placement_strategy!r}")

    def worker_bundle(self) -> dict[str, float]:
        """The resources of one worker, keys as in ``cluster_resources()``."""
        aliases = {"cpu": "CPU", "gpu": "GPU", "num_cpus": "CPU", "num_gpus": "GPU"}
        bundle: dict[str, float] = {"CPU": 1.0}
        if self.use_gpu:
            bundle["GPU"] = 1.0
        for key, value in (self.resources_per_worker or {}).items():
            if float(value) < 0:
                raise ValueError(f"resources_per_worker[{key!r}] must not be negative")
            bundle[aliases.get(key, key)] = float(value)
        return bundle

    def bundles(self) -> list[dict[str, float]]:
        """One bundle per worker."""
        return [self.worker_bundle() for _ in range(self.num_workers)]

    def actor_options(self) -> dict[str, Any]:
        """fedexec actor options reserving one worker's resources."""
        return resources_to_options(self.worker_bundle())
