"""What searchers and schedulers optimise: a metric and a mode."""

from __future__ import annotations


class Objective:
    """A metric and ``"min"``/``"max"`` mode, either given here or taken later
    from the Tuner (the base of :class:`Searcher` and :class:`TrialScheduler`)."""

    def __init__(self, metric: str | None = None, mode: str | None = None) -> None:
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        self._metric = metric
        self._mode = mode

    @property
    def metric(self) -> str | None:
        return self._metric

    @property
    def mode(self) -> str | None:
        return self._mode

    def _adopt(self, metric: str | None, mode: str | None) -> None:
        """Take the Tuner's metric and mode where none were given here."""
        if self._metric is None and metric is not None:
            self._metric = metric
        if self._mode is None and mode is not None:
            self._mode = mode
