"""Search algorithms (``fedexec.tune.search``), as Ray's ``ray.tune.search``.

``BasicVariantGenerator`` (the default: grid times num_samples, random sampling),
``OptunaSearch`` (``tune.search.optuna``) and ``HyperOptSearch``
(``tune.search.hyperopt``), and the wrappers ``ConcurrencyLimiter`` and
``Repeater``. Optuna and hyperopt are imported only when such a searcher is
created.
"""

from __future__ import annotations

import importlib
from typing import Any

from .basic_variant import BasicVariantGenerator
from .sample import (
    Categorical,
    Domain,
    Float,
    Function,
    Integer,
    choice,
    grid_search,
    lograndint,
    loguniform,
    qlograndint,
    qloguniform,
    qrandint,
    qrandn,
    quniform,
    randint,
    randn,
    sample_from,
    uniform,
)
from .searcher import ConcurrencyLimiter, Repeater, SearchAlgorithm, Searcher

__all__ = [
    "BasicVariantGenerator",
    "Categorical",
    "ConcurrencyLimiter",
    "Domain",
    "Float",
    "Function",
    "HyperOptSearch",
    "Integer",
    "OptunaSearch",
    "Repeater",
    "SearchAlgorithm",
    "Searcher",
    "choice",
    "create_searcher",
    "grid_search",
    "lograndint",
    "loguniform",
    "qlograndint",
    "qloguniform",
    "qrandint",
    "qrandn",
    "quniform",
    "randint",
    "randn",
    "sample_from",
    "uniform",
]

_LAZY = {"OptunaSearch": ".optuna", "HyperOptSearch": ".hyperopt"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_searcher(search_alg: str, **kwargs: Any) -> Searcher:
    """A searcher by name: ``"variant_generator"``/``"random"``, ``"optuna"``, ``"hyperopt"``."""
    names = {"variant_generator": BasicVariantGenerator, "random": BasicVariantGenerator}
    if search_alg in names:
        return names[search_alg](**kwargs)
    if search_alg == "optuna":
        return __getattr__("OptunaSearch")(**kwargs)
    if search_alg == "hyperopt":
        return __getattr__("HyperOptSearch")(**kwargs)
    raise ValueError(f"unknown search algorithm {search_alg!r}: use one of "
                     "'variant_generator', 'random', 'optuna', 'hyperopt'")
