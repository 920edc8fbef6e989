"""Trial schedulers (``fedexec.tune.schedulers``), as Ray's ``ray.tune.schedulers``."""

from __future__ import annotations

from .async_hyperband import ASHAScheduler, AsyncHyperBandScheduler
from .hyperband import HyperBandScheduler
from .median_stopping_rule import MedianStoppingRule
from .pbt import PopulationBasedTraining
from .trial_scheduler import FIFOScheduler, TrialScheduler

__all__ = [
    "ASHAScheduler",
    "AsyncHyperBandScheduler",
    "FIFOScheduler",
    "HyperBandScheduler",
    "MedianStoppingRule",
    "PopulationBasedTraining",
    "TrialScheduler",
    "create_scheduler",
]


def create_scheduler(scheduler: str, **kwargs: object) -> TrialScheduler:
    """A scheduler by name: ``"fifo"``, ``"async_hyperband"``/``"asha"``,
    ``"hyperband"``, ``"median_stopping_rule"``, ``"pbt"``."""
    table: dict[str, type[TrialScheduler]] = {
        "fifo": FIFOScheduler, "async_hyperband": AsyncHyperBandScheduler,
        "asha": AsyncHyperBandScheduler, "hyperband": HyperBandScheduler,
        "median_stopping_rule": MedianStoppingRule, "pbt": PopulationBasedTraining}
    if scheduler not in table:
        raise ValueError(f"unknown scheduler {scheduler!r}: use one of {sorted(table)}")
    return table[scheduler](**kwargs)  # type: ignore[arg-type]
