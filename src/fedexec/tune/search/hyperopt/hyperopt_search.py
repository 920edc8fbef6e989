"""``HyperOptSearch``: suggestions from hyperopt's TPE, one trial at a time.

hyperopt's ``fmin`` owns its loop, so this drives its lower-level pieces: a
``Trials`` store, a ``Domain`` of the space, and ``tpe.suggest`` for one new
trial id per :meth:`suggest`; results are written into the trial documents and
the store refreshed. The param_space maps onto hyperopt expressions
(``hp.uniform``, ``hp.quniform``, ``hp.loguniform``, ``hp.normal``, ``hp.choice``;
integer domains are sampled as floats, then rounded and kept in range).
"""

from __future__ import annotations

import copy
import math
import sys
from functools import partial
from typing import Any

import numpy as np

from ..._extras import require
from .._convert import domains_of, unflatten_suggestion
from ..sample import Categorical, Domain, Float, Integer
from ..searcher import Searcher

__all__ = ["HyperOptSearch"]


def _expression(hp: Any, name: str, domain: Domain) -> Any:
    q = domain.q
    if isinstance(domain, Float):
        if domain.sampler == "normal":
            return hp.qnormal(name, domain.mean, domain.sd, q) if q else hp.normal(
                name, domain.mean, domain.sd)
        if domain.sampler == "loguniform":
            lo, hi = math.log(domain.lower), math.log(domain.upper)  # type: ignore[arg-type]
            return hp.qloguniform(name, lo, hi, q) if q else hp.loguniform(name, lo, hi)
        return hp.quniform(name, domain.lower, domain.upper, q) if q else hp.uniform(
            name, domain.lower, domain.upper)
    if isinstance(domain, Integer):
        hi = domain.upper if q else domain.upper - 1
        if domain.sampler == "loguniform":
            return hp.qloguniform(name, math.log(domain.lower), math.log(hi + 0.5), q or 1)
        return hp.quniform(name, domain.lower, hi, q or 1)
    if isinstance(domain, Categorical):
        return hp.choice(name, domain.categories)
    raise ValueError(f"HyperOptSearch cannot sample {domain!r} at {name!r}")


def _fit(domain: Domain, value: Any) -> Any:
    """Round integer domains' values and keep them inside the tune range."""
    if isinstance(domain, Integer):
        top = domain.upper if domain.q else domain.upper - 1
        return min(max(round(float(value)), domain.lower), top)
    if isinstance(domain, Float) and domain.sampler != "normal" and domain.q is None:
        lo, hi = float(domain.lower or 0.0), float(domain.upper or 0.0)
        return min(max(float(value), lo), float(np.nextafter(hi, -np.inf)))
    return float(value) if isinstance(domain, Float) else value


class HyperOptSearch(Searcher):
    """Search with hyperopt's TPE (``pip install "fedexec[tune]"``).

    Args:
        space: a param_space of tune primitives (None: the Tuner's param_space).
        metric: the metric to optimise.
        mode: ``"min"`` or ``"max"`` (hyperopt minimises; max is negated).
        points_to_evaluate: configs to try first.
        n_initial_points: random trials before TPE starts modelling.
        random_state_seed: a seed for reproducible suggestions.
        gamma: TPE's quantile splitting good from bad trials.
    """

    def __init__(self, space: dict[str, Any] | None = None, metric: str | None = None,
                 mode: str | None = None,
                 points_to_evaluate: list[dict[str, Any]] | None = None,
                 n_initial_points: int = 20, random_state_seed: int | None = None,
                 gamma: float = 0.25) -> None:
        self._hpo = require("hyperopt", "HyperOptSearch")
        super().__init__(metric, mode)
        self._space_arg = space
        self._points = [copy.deepcopy(p) for p in points_to_evaluate or []]
        self._algo = partial(self._hpo.tpe.suggest, n_startup_jobs=n_initial_points,
                             gamma=gamma)
        self._rng = np.random.default_rng(random_state_seed)
        self._paths: dict[str, Any] = {}
        self._domain: Any = None
        self._trials: Any = None
        self._live: dict[str, dict[str, Any]] = {}
        if space is not None and mode is not None:
            self._setup(space)

    def set_search_properties(self, metric: str | None, mode: str | None,
                              config: dict[str, Any], **spec: Any) -> bool:
        if self._domain is not None:
            return False
        super().set_search_properties(metric, mode, config)
        self._setup(self._space_arg if self._space_arg is not None else config)
        return True

    def _setup(self, space: dict[str, Any]) -> None:
        if self._mode is None:
            raise ValueError("HyperOptSearch needs a mode ('min' or 'max'): pass mode= here or "
                             "in TuneConfig")
        hpo = self._hpo
        self._paths = domains_of(space, "HyperOptSearch")
        expr = {name: _expression(hpo.hp, name, d) for name, (_, d) in self._paths.items()}
        self._domain = hpo.Domain(lambda config: config, expr)
        self._trials = hpo.Trials()

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._domain is None:
            raise RuntimeError("HyperOptSearch was not given a search space: pass space= or a "
                               "param_space to the Tuner")
        hpo = self._hpo
        ids = self._trials.new_trial_ids(1)
        self._trials.refresh()
        if self._points:
            docs = [sys.modules["hyperopt.fmin"].generate_trial(
                ids[0], self._point_values(self._points.pop(0)))]
        else:
            docs = self._algo(ids, self._domain, self._trials,
                              int(self._rng.integers(2**31 - 1)))
        self._trials.insert_trial_docs(docs)
        self._trials.refresh()
        doc = self._trials._dynamic_trials[-1]
        self._live[trial_id] = doc
        vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
        chosen = hpo.space_eval(self._domain.expr, vals)
        fitted = {name: _fit(self._paths[name][1], value) if name in self._paths else value
                  for name, value in chosen.items()}
        return unflatten_suggestion(fitted, self._paths)

    def _point_values(self, point: dict[str, Any]) -> dict[str, Any]:
        values = _flat(point)
        for name, value in values.items():
            domain = self._paths[name][1] if name in self._paths else None
            if isinstance(domain, Categorical):
                values[name] = domain.categories.index(value)  # hp.choice stores the index
        return values

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        doc = self._live.pop(trial_id, None)
        if doc is None:
            return
        hpo = self._hpo
        now = hpo.utils.coarse_utcnow()
        doc["book_time"] = doc["book_time"] or now
        doc["refresh_time"] = now
        if error or result is None or self._metric not in result:
            doc["state"] = hpo.base.JOB_STATE_ERROR
            doc["result"] = {"status": hpo.STATUS_FAIL}
        else:
            value = float(result[self._metric])
            doc["state"] = hpo.base.JOB_STATE_DONE
            doc["result"] = {"loss": value if self._mode == "min" else -value,
                             "status": hpo.STATUS_OK}
        self._trials.refresh()


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flat(value, name))
        else:
            out[name] = value
    return out
