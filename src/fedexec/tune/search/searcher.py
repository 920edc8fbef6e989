"""The search-algorithm interface and the wrappers that work on any searcher.

The controller asks ``suggest(trial_id)`` for a new trial's config whenever it has
room for one; the searcher answers a config (a dict of the values it chose;
anything of the param_space it leaves out keeps its value there), ``None`` ("not
now, ask again later") or :attr:`Searcher.FINISHED` (no more trials). It hears
every result (``on_trial_result``) and every end (``on_trial_complete``).
Searchers are pickled into the experiment state, so ``Tuner.restore`` continues
the search where it stopped.
"""

from __future__ import annotations

import copy
import pickle
from collections import defaultdict
from typing import Any

from .._objective import Objective

__all__ = ["ConcurrencyLimiter", "Repeater", "SearchAlgorithm", "Searcher"]


class Searcher(Objective):
    """Base class of search algorithms (as Ray's ``Searcher``).

    Subclasses implement :meth:`suggest` and usually :meth:`on_trial_complete`;
    :meth:`set_search_properties` receives the metric, mode and param_space that
    were given to the Tuner when the searcher was built without them.
    """

    FINISHED = "FINISHED"

    def set_search_properties(self, metric: str | None, mode: str | None,
                              config: dict[str, Any], **spec: Any) -> bool:
        """Take the Tuner's metric/mode/param_space where none were given here.

        Returns:
            True when the searcher accepted them (as Ray's).
        """
        if self._metric is None and metric is not None:
            self._metric = metric
        if self._mode is None and mode is not None:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The config of a new trial, None (ask later) or :attr:`FINISHED`."""
        raise NotImplementedError

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """One intermediate result of a trial."""

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        """The trial ended: ``result`` is its last result (None if it had none)."""

    def add_evaluated_point(self, parameters: dict[str, Any], value: float,
                            error: bool = False, pruned: bool = False,
                            intermediate_values: list[float] | None = None) -> None:
        """Tell the searcher a point evaluated elsewhere (not supported by default)."""
        raise NotImplementedError(f"{type(self).__name__} does not take evaluated points")

    def save(self, checkpoint_path: str) -> None:
        """Write the searcher's state to a file."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        """Read the state written by :meth:`save`."""
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    def get_state(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


#: Ray's older name for the base class of the search algorithms.
SearchAlgorithm = Searcher


class _Wrapper(Searcher):
    """A searcher around another one: properties go to the inner searcher."""

    def __init__(self, searcher: Searcher) -> None:
        super().__init__(searcher.metric, searcher.mode)
        self.searcher = searcher

    @property
    def metric(self) -> str | None:
        return self.searcher.metric

    @property
    def mode(self) -> str | None:
        return self.searcher.mode

    def set_search_properties(self, metric: str | None, mode: str | None,
                              config: dict[str, Any], **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)


class ConcurrencyLimiter(_Wrapper):
    """At most ``max_concurrent`` trials of ``searcher`` alive at once.

    With ``batch=True`` the next trials are suggested only when the whole previous
    batch of ``max_concurrent`` has completed.
    """

    def __init__(self, searcher: Searcher, max_concurrent: int, batch: bool = False) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")
        super().__init__(searcher)
        self.max_concurrent = max_concurrent
        self.batch = batch
        self.live_trials: set[str] = set()
        self.num_unfinished_live_trials = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self.live_trials) >= self.max_concurrent:
            return None
        if self.batch and self.num_unfinished_live_trials > 0 and not self.live_trials:
            return None
        suggestion = self.searcher.suggest(trial_id)
        if isinstance(suggestion, dict):
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.live_trials:
            return
        self.searcher.on_trial_complete(trial_id, result=result, error=error)
        self.num_unfinished_live_trials -= 1
        if not self.batch or self.num_unfinished_live_trials == 0:
            if self.batch:
                self.live_trials.clear()
            else:
                self.live_trials.discard(trial_id)


class Repeater(_Wrapper):
    """Run each config of ``searcher`` ``repeat`` times; the searcher hears the
    mean of the repeats' metric once all of them ended.

    With ``set_index=True`` each repeat's config gets ``"__trial_index__"`` (0 ...
    repeat-1), e.g. to seed differently.
    """

    def __init__(self, searcher: Searcher, repeat: int = 1, set_index: bool = True) -> None:
        if repeat < 1:
            raise ValueError(f"repeat must be at least 1, not {repeat}")
        super().__init__(searcher)
        self.repeat = repeat
        self._set_index = set_index
        self._current: tuple[str, dict[str, Any]] | None = None  # (group id, config)
        self._given = 0
        self._group_of: dict[str, str] = {}
        self._scores: dict[str, list[dict[str, Any] | None]] = defaultdict(list)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._current is None or self._given >= self.repeat:
            suggestion = self.searcher.suggest(trial_id)
            if not isinstance(suggestion, dict):
                return suggestion
            self._current, self._given = (trial_id, suggestion), 0
        group, config = self._current
        config = copy.deepcopy(config)
        if self._set_index:
            config["__trial_index__"] = self._given
        self._given += 1
        self._group_of[trial_id] = group
        return config

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        group = self._group_of.pop(trial_id, None)
        if group is None:
            return
        self._scores[group].append(None if error else result)
        if len(self._scores[group]) < self.repeat:
            return
        results = [r for r in self._scores.pop(group) if r is not None]
        metric = self.metric
        values = [r[metric] for r in results if metric and metric in r]
        if not values:
            self.searcher.on_trial_complete(group, None, error=True)
            return
        mean = dict(results[-1])
        mean[metric] = sum(values) / len(values)  # type: ignore[index]
        self.searcher.on_trial_complete(group, mean)
