"""Replay buffers for off-policy algorithms (DQN): uniform and prioritized.

Both keep the last ``capacity`` steps in preallocated numpy columns (a ring:
when full, the oldest row is overwritten). Rows come in as batches — dicts of
equally long columns, e.g. a :class:`~fedexec.rl.sample_batch.SampleBatch` —
and go out as such dicts.

``PrioritizedReplayBuffer`` (Schaul et al. 2016, proportional variant) samples
row ``i`` with probability ``P(i) = p_i^alpha / sum_k p_k^alpha`` and returns the
importance weights ``w_i = (N * P(i))^-beta / max_j w_j`` in the column
``weights``, and the rows' indexes in ``batch_indexes`` so the learner can give
them new priorities (``|td_error| + eps``) with :meth:`update_priorities`. New
rows get the largest priority seen so far, so each is sampled soon. The sums
live in a sum tree (``O(log N)`` sampling and updating).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["PrioritizedReplayBuffer", "ReplayBuffer", "SumTree"]


class ReplayBuffer:
    """Uniform replay of the last ``capacity`` rows.

    Args:
        capacity: how many rows are kept (> 0).
        seed: seeds the sampling.
    """

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        if not (isinstance(capacity, int) and capacity > 0):
            raise ValueError(f"a replay buffer's capacity must be an int > 0, not {capacity!r}")
        self.capacity = capacity
        self._columns: dict[str, np.ndarray] = {}
        self._next = 0  # where the next row goes
        self._size = 0
        self.num_added = 0  # rows ever added
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self._size

    def add(self, batch: Mapping[str, Any]) -> np.ndarray:
        """Store every row of ``batch`` (overwriting the oldest when full); returns
        the indexes the rows went to."""
        columns = {k: np.asarray(v) for k, v in batch.items()
                   if np.asarray(v).dtype != object}
        n = len(next(iter(columns.values()))) if columns else 0
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if not self._columns:
            self._columns = {k: np.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype)
                             for k, v in columns.items()}
        missing = set(self._columns) - set(columns)
        if missing:
            raise ValueError(f"this batch lacks the columns {sorted(missing)} that the replay "
                             "buffer holds: add batches with the same columns")
        idx = (self._next + np.arange(n)) % self.capacity
        if n > self.capacity:  # only the last `capacity` rows survive
            idx, columns = idx[-self.capacity:], {k: v[-self.capacity:]
                                                  for k, v in columns.items()}
        for key, store in self._columns.items():
            store[idx] = columns[key]
        self._next = int((self._next + n) % self.capacity)
        self._size = min(self.capacity, self._size + n)
        self.num_added += n
        return idx

    def _take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[idx] for k, v in self._columns.items()}

    def sample(self, num_items: int, **_: Any) -> dict[str, np.ndarray]:
        """``num_items`` rows drawn uniformly with replacement (plus their
        ``batch_indexes``).

        Raises:
            ValueError: the buffer is empty.
        """
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer: add rows first")
        idx = self._rng.integers(0, self._size, size=num_items)
        out = self._take(idx)
        out["batch_indexes"] = idx
        return out

    def get_state(self) -> dict[str, Any]:
        return {"columns": self._columns, "next": self._next, "size": self._size,
                "num_added": self.num_added}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._columns = dict(state["columns"])
        self._next, self._size = int(state["next"]), int(state["size"])
        self.num_added = int(state["num_added"])


class SumTree:
    """A complete binary tree whose leaves hold ``capacity`` values and whose
    inner nodes hold the sums of their children (leaf ``i`` is node ``capacity + i``)."""

    def __init__(self, capacity: int) -> None:
        size = 1
        while size < capacity:
            size *= 2
        self.size = size
        self.nodes = np.zeros(2 * size, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def set(self, idx: np.ndarray, values: np.ndarray) -> None:
        for i, value in zip(np.asarray(idx).tolist(), np.asarray(values).tolist()):
            node = i + self.size
            self.nodes[node] = value
            node //= 2
            while node >= 1:
                self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]
                node //= 2

    def get(self, idx: np.ndarray) -> np.ndarray:
        return self.nodes[np.asarray(idx) + self.size]

    def find(self, mass: float) -> int:
        """The leaf ``i`` whose prefix sum range ``[sum(<i), sum(<=i))`` holds ``mass``."""
        node = 1
        while node < self.size:
            left = 2 * node
            if mass < self.nodes[left]:
                node = left
            else:
                mass -= self.nodes[left]
                node = left + 1
        return node - self.size


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (see the module docstring).

    Args:
        capacity: how many rows are kept.
        alpha: how much priorities count (0: uniform).
        seed: seeds the sampling.
    """

    def __init__(self, capacity: int, alpha: float = 0.6, seed: int | None = None) -> None:
        super().__init__(capacity, seed)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, not {alpha}")
        self.alpha = alpha
        self._tree = SumTree(capacity)
        self._max_priority = 1.0

    def add(self, batch: Mapping[str, Any]) -> np.ndarray:
        idx = super().add(batch)
        self._tree.set(idx, np.full(len(idx), self._max_priority ** self.alpha))
        return idx

    def sample(self, num_items: int, beta: float = 0.4, **_: Any) -> dict[str, np.ndarray]:
        """``num_items`` rows drawn by priority (stratified: one per equal slice of
        the total mass), with ``weights`` and ``batch_indexes`` columns."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer: add rows first")
        total = self._tree.total
        bounds = np.arange(num_items + 1) * (total / num_items)
        masses = self._rng.uniform(bounds[:-1], bounds[1:])
        idx = np.array([min(self._tree.find(m), self._size - 1) for m in masses], dtype=np.int64)
        probs = self._tree.get(idx) / total
        weights = (self._size * probs) ** (-beta)
        min_prob = self._min_leaf() / total
        max_weight = (self._size * min_prob) ** (-beta)
        out = self._take(idx)
        out["weights"] = (weights / max_weight).astype(np.float32)
        out["batch_indexes"] = idx
        return out

    def _min_leaf(self) -> float:
        return float(self._tree.get(np.arange(self._size)).min())

    def update_priorities(self, idx: np.ndarray, priorities: np.ndarray) -> None:
        """Give rows ``idx`` new priorities (> 0, e.g. ``|td_error| + 1e-6``)."""
        priorities = np.asarray(priorities, dtype=np.float64)
        if np.any(priorities <= 0) or not np.all(np.isfinite(priorities)):
            raise ValueError("priorities must be finite and > 0 (use |td_error| + eps)")
        self._tree.set(idx, priorities ** self.alpha)
        self._max_priority = max(self._max_priority, float(priorities.max()))

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "tree": self._tree.nodes, "max_priority":
                self._max_priority}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self._tree.nodes = np.asarray(state["tree"], dtype=np.float64).copy()
        self._max_priority = float(state["max_priority"])
