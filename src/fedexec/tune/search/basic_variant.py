"""``BasicVariantGenerator``: grid search and random sampling (the default).

Variant ``i`` is grid point ``i % n_grid`` of repeat ``i // n_grid``; its domains
are sampled from the generator's own ``numpy`` random generator, which is pickled
with it into the experiment state, so a restored experiment goes on drawing where
it stopped.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from .searcher import Searcher
from .variant_generator import Path, assign, grid_axes, leaf_paths, resolve

__all__ = ["BasicVariantGenerator"]


class BasicVariantGenerator(Searcher):
    """Every point of the param_space's grid, ``num_samples`` times, domains
    sampled at random.

    Args:
        points_to_evaluate: partial configs to try first (their values replace
            the sampled ones of the first variants).
        max_concurrent: at most this many of its trials at once (0: no limit).
        constant_grid_search: sample the random domains once per repeat and keep
            them constant across the grid points of that repeat.
        random_state: a seed (int) or ``numpy.random.Generator`` for reproducible
            sampling.
    """

    def __init__(self, points_to_evaluate: list[dict[str, Any]] | None = None,
                 max_concurrent: int = 0, constant_grid_search: bool = False,
                 random_state: int | np.random.Generator | None = None) -> None:
        super().__init__()
        self._points = [copy.deepcopy(p) for p in points_to_evaluate or []]
        self.max_concurrent = max_concurrent
        self._constant_grid = constant_grid_search
        self._rng = (random_state if isinstance(random_state, np.random.Generator)
                     else np.random.default_rng(random_state))
        self._repeat_seed: tuple[int, int] = (-1, 0)
        self._space: Any = {}
        self._axes: list[tuple[Path, list[Any]]] = []
        self._total = 0
        self._next = 0
        self._live: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None,
                              config: dict[str, Any], **spec: Any) -> bool:
        super().set_search_properties(metric, mode, config)
        self._space = copy.deepcopy(config)
        self._axes = grid_axes(self._space)
        n_grid = 1
        for _, values in self._axes:
            n_grid *= len(values)
        num_samples = int(spec.get("num_samples", 1))
        self._total = -1 if num_samples < 0 else n_grid * num_samples
        return True

    @property
    def total_samples(self) -> int:
        """How many variants this generator makes in all (-1: unbounded)."""
        return self._total

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._total >= 0 and self._next >= self._total:
            return Searcher.FINISHED
        if self.max_concurrent and len(self._live) >= self.max_concurrent:
            return None
        config = self.variant(self._next)
        self._next += 1
        self._live.add(trial_id)
        return config

    def variant(self, index: int) -> dict[str, Any]:
        """The config of variant ``index``."""
        n_grid = math.prod(len(v) for _, v in self._axes)
        repeat, point = divmod(index, n_grid)
        values: list[Any] = []
        rest = point
        for _, axis in reversed(self._axes):  # the last axis varies fastest
            rest, j = divmod(rest, len(axis))
            values.append(axis[j])
        grid_point = {p: v for (p, _), v in zip(self._axes, reversed(values))}
        rng = self._rng
        if self._constant_grid:  # the same draws for every grid point of a repeat
            if self._repeat_seed[0] != repeat:
                self._repeat_seed = (repeat, int(self._rng.integers(2**63)))
            rng = np.random.default_rng(self._repeat_seed[1])
        space = self._space
        if index < len(self._points):
            space = copy.deepcopy(space)
            for path, value in leaf_paths(self._points[index]):
                assign(space, path, value)
        _, config = resolve(space, grid_point, rng)
        return dict(config)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        self._live.discard(trial_id)
