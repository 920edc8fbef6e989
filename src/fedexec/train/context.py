"""``train.get_context()``: where the calling worker sits in its group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainContext"]


@dataclass(frozen=True)
class TrainContext:
    """A training worker's place in the group (as Ray's ``TrainContext``).

    Ranks are contiguous per node: the workers on node ``k`` (in the order the
    nodes first appear) have world ranks after those of nodes ``0..k-1``.
    """

    world_rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    trial_name: str | None = None
    experiment_name: str | None = None
    storage_path: str | None = None
    trial_dir: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def get_world_rank(self) -> int:
        return self.world_rank

    def get_world_size(self) -> int:
        return self.world_size

    def get_local_rank(self) -> int:
        return self.local_rank

    def get_local_world_size(self) -> int:
        return self.local_world_size

    def get_node_rank(self) -> int:
        return self.node_rank

    def get_trial_name(self) -> str | None:
        return self.trial_name

    def get_experiment_name(self) -> str | None:
        return self.experiment_name

    def get_storage_path(self) -> str | None:
        return self.storage_path

    def get_trial_dir(self) -> str | None:
        return self.trial_dir

    def get_metadata(self) -> dict[str, Any]:
        return dict(self.metadata)
