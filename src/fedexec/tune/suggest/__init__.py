"""The classic module path of the search algorithms (Ray 1.x ``ray.tune.suggest``):
``from fedexec.tune.suggest.optuna import OptunaSearch`` works as before. The
same classes as :mod:`fedexec.tune.search`."""

from __future__ import annotations

from typing import Any

from ..search import (
    BasicVariantGenerator,
    ConcurrencyLimiter,
    Repeater,
    SearchAlgorithm,
    Searcher,
)
from ..search import __getattr__ as _search_getattr

__all__ = ["BasicVariantGenerator", "ConcurrencyLimiter", "HyperOptSearch", "OptunaSearch",
           "Repeater", "SearchAlgorithm", "Searcher"]


def __getattr__(name: str) -> Any:
    return _search_getattr(name)
