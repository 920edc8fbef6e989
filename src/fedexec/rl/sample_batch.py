"""``SampleBatch``: a dict of equally long numpy columns, one row per env step.

Columns written by the env runner for every step: ``obs``, ``actions``,
``rewards``, ``new_obs``, ``terminateds``, ``truncateds``, ``eps_id``, ``t``,
plus whatever the policy's ``compute_actions`` returns as extras
(``action_logp``, ``vf_preds``, ``action_dist_inputs``). Postprocessing adds
columns (``advantages``, ``value_targets``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["SampleBatch", "concat_samples"]


class SampleBatch(dict):
    """Columns (str -> ndarray) of one length; ``len(batch)`` is the number of steps."""

    OBS = "obs"
    ACTIONS = "actions"
    REWARDS = "rewards"
    NEXT_OBS = "new_obs"
    TERMINATEDS = "terminateds"
    TRUNCATEDS = "truncateds"
    EPS_ID = "eps_id"
    T = "t"
    ACTION_LOGP = "action_logp"
    VF_PREDS = "vf_preds"
    ACTION_DIST_INPUTS = "action_dist_inputs"
    ADVANTAGES = "advantages"
    VALUE_TARGETS = "value_targets"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for key, value in list(self.items()):
            self[key] = np.asarray(value)

    def __len__(self) -> int:
        for value in self.values():
            return len(value)
        return 0

    @property
    def count(self) -> int:
        return len(self)

    @property
    def columns(self) -> list[str]:
        return list(self.keys())

    def slice(self, start: int, end: int) -> SampleBatch:
        return SampleBatch({k: v[start:end] for k, v in self.items()})

    def take(self, indices: np.ndarray) -> SampleBatch:
        return SampleBatch({k: v[indices] for k, v in self.items()})

    def shuffle(self, rng: np.random.Generator | None = None) -> SampleBatch:
        """The rows in a random order."""
        rng = rng or np.random.default_rng()
        return self.take(rng.permutation(len(self)))

    def minibatches(self, size: int, rng: np.random.Generator | None = None,
                    shuffle: bool = True) -> Iterator[SampleBatch]:
        """Consecutive minibatches of ``size`` rows (the last may be smaller; one of
        fewer than half ``size`` rows is dropped unless it is the only one)."""
        batch = self.shuffle(rng) if shuffle else self
        n = len(batch)
        for start in range(0, n, size):
            end = min(n, start + size)
            if start > 0 and end - start < size // 2:
                break
            yield batch.slice(start, end)

    def split_by_episode(self) -> list[SampleBatch]:
        """One batch per run of equal ``eps_id`` values, in order."""
        ids = self[self.EPS_ID]
        if len(ids) == 0:
            return []
        cuts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(ids)]
        return [self.slice(a, b) for a, b in itertools.pairwise(bounds)]


def concat_samples(batches: Sequence[SampleBatch]) -> SampleBatch:
    """One batch of all rows, in order (columns present in every batch)."""
    batches = [b for b in batches if len(b) > 0]
    if not batches:
        return SampleBatch()
    keys = [k for k in batches[0] if all(k in b for b in batches)]
    return SampleBatch({k: np.concatenate([b[k] for b in batches]) for k in keys})
