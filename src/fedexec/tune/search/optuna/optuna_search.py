"""``OptunaSearch``: suggestions from an optuna study (TPE by default).

Each trial is an optuna trial obtained with ``study.ask(distributions)``; its
intermediate results are ``trial.report``-ed and its end is ``study.tell``-ed
(failed when the trial errored or never reported the metric). The param_space
maps onto optuna's distributions:

=====================================  ========================================
``uniform`` / ``quniform``             ``FloatDistribution(lo, hi, step=q)``
``loguniform``                         ``FloatDistribution(lo, hi, log=True)``
``randint`` / ``qrandint``             ``IntDistribution(lo, hi - 1)`` / ``(lo, hi, step=q)``
``lograndint``                         ``IntDistribution(lo, hi - 1, log=True)``
``choice``                             ``CategoricalDistribution(categories)``
=====================================  ========================================
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ..._extras import require
from .._convert import domains_of, name_of, unflatten_suggestion
from ..sample import Categorical, Domain, Float, Integer
from ..searcher import Searcher

__all__ = ["OptunaSearch"]


def _distribution(ot: Any, name: str, domain: Domain) -> Any:
    dist = ot.distributions
    if isinstance(domain, Float):
        if domain.sampler == "normal":
            raise ValueError(f"OptunaSearch cannot sample randn at {name!r}: optuna has no "
                             "normal distribution; use tune.uniform instead")
        log = domain.sampler == "loguniform"
        if log and domain.q is not None:
            raise ValueError(f"OptunaSearch cannot sample qloguniform at {name!r}: optuna has "
                             "no quantized log distribution; use tune.loguniform")
        return dist.FloatDistribution(domain.lower, domain.upper, log=log, step=domain.q)
    if isinstance(domain, Integer):
        log = domain.sampler == "loguniform"
        if domain.q is not None:
            if log and domain.q != 1:
                raise ValueError(f"OptunaSearch cannot sample qlograndint at {name!r}")
            return dist.IntDistribution(domain.lower, domain.upper, log=log,
                                        step=int(domain.q))
        return dist.IntDistribution(domain.lower, domain.upper - 1, log=log)
    if isinstance(domain, Categorical):
        return dist.CategoricalDistribution(domain.categories)
    raise ValueError(f"OptunaSearch cannot sample {domain!r} at {name!r}")


class OptunaSearch(Searcher):
    """Search with optuna (``pip install "fedexec[tune]"``).

    Args:
        space: a param_space of tune primitives, a dict of optuna distributions, or
            a define-by-run function ``fn(optuna_trial) -> dict | None`` (its
            returned dict holds constants). None: the Tuner's param_space.
        metric: the metric to optimise (a list for multi-objective search).
        mode: ``"min"``/``"max"`` (a list, with a list of metrics).
        points_to_evaluate: configs to try first (``study.enqueue_trial``).
        sampler: an optuna sampler; default ``TPESampler(seed=seed)``.
        seed: the default sampler's seed.
        evaluated_rewards: the metric values of ``points_to_evaluate``, already
            known: they are told to the study instead of being run.
    """

    def __init__(self, space: dict[str, Any] | Callable[..., Any] | None = None,
                 metric: str | list[str] | None = None, mode: str | list[str] | None = None,
                 points_to_evaluate: list[dict[str, Any]] | None = None,
                 sampler: Any = None, seed: int | None = None,
                 evaluated_rewards: list[Any] | None = None) -> None:
        self._ot = require("optuna", "OptunaSearch")
        self._ot.logging.set_verbosity(self._ot.logging.WARNING)
        super().__init__(metric=None, mode=None)
        self._metric_any: Any = metric
        self._mode_any: Any = mode
        self._sampler = sampler
        self._seed = seed
        self._points = [copy.deepcopy(p) for p in points_to_evaluate or []]
        self._rewards = evaluated_rewards
        if evaluated_rewards is not None and len(evaluated_rewards) != len(self._points):
            raise ValueError("evaluated_rewards must have one value per points_to_evaluate")
        self._define_by_run: Callable[..., Any] | None = space if callable(space) else None
        self._space: dict[str, Any] | None = None if callable(space) else space
        self._paths: dict[str, Any] = {}
        self._distributions: dict[str, Any] = {}
        self._study: Any = None
        self._ot_trials: dict[str, Any] = {}
        self._constants: dict[str, dict[str, Any]] = {}
        if (self._space is not None or self._define_by_run) and mode is not None:
            self._setup()

    @property
    def metric(self) -> Any:
        return self._metric_any

    @property
    def mode(self) -> Any:
        return self._mode_any

    def set_search_properties(self, metric: str | None, mode: str | None,
                              config: dict[str, Any], **spec: Any) -> bool:
        if self._study is not None:
            return False
        if self._metric_any is None:
            self._metric_any = metric
        if self._mode_any is None:
            self._mode_any = mode
        if self._space is None and self._define_by_run is None:
            self._space = config
        self._setup()
        return True

    def _setup(self) -> None:
        if self._mode_any is None:
            raise ValueError("OptunaSearch needs a mode ('min' or 'max'): pass mode= here or "
                             "in TuneConfig")
        ot = self._ot
        if self._space is not None:
            self._distributions, self._paths = {}, {}
            for key, value in self._space.items():
                if isinstance(value, ot.distributions.BaseDistribution):
                    self._distributions[key] = value
            flat = domains_of({k: v for k, v in self._space.items()
                               if k not in self._distributions}, "OptunaSearch")
            for name, (path, domain) in flat.items():
                self._paths[name] = (path, domain)
                self._distributions[name] = _distribution(ot, name, domain)
        modes = self._mode_any if isinstance(self._mode_any, list) else [self._mode_any]
        directions = ["minimize" if m == "min" else "maximize" for m in modes]
        sampler = self._sampler or ot.samplers.TPESampler(seed=self._seed)
        self._study = ot.create_study(sampler=sampler, directions=directions)
        for i, point in enumerate(self._points):
            flat_point = _flat(point)
            if self._rewards is not None:
                self._study.add_trial(ot.trial.create_trial(
                    params=flat_point, distributions=self._distributions,
                    values=_as_list(self._rewards[i])))
            else:
                self._study.enqueue_trial(flat_point)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._study is None:
            raise RuntimeError("OptunaSearch was not given a search space: pass space= or a "
                               "param_space to the Tuner")
        if self._define_by_run is not None:
            ot_trial = self._study.ask()
            constants = self._define_by_run(ot_trial) or {}
            params = dict(ot_trial.params)
            self._ot_trials[trial_id] = ot_trial
            return {**unflatten_suggestion(params, {}), **copy.deepcopy(constants)}
        ot_trial = self._study.ask(self._distributions)
        self._ot_trials[trial_id] = ot_trial
        return unflatten_suggestion(dict(ot_trial.params), self._paths)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(self._metric_any, list) or self._metric_any not in result:
            return
        ot_trial = self._ot_trials.get(trial_id)
        step = result.get("training_iteration")
        if ot_trial is not None and step is not None:
            ot_trial.report(float(result[self._metric_any]), int(step))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        ot_trial = self._ot_trials.pop(trial_id, None)
        if ot_trial is None:
            return
        metrics = self._metric_any if isinstance(self._metric_any, list) else [self._metric_any]
        if error or result is None or any(m not in result for m in metrics):
            self._study.tell(ot_trial, state=self._ot.trial.TrialState.FAIL)
            return
        values = [float(result[m]) for m in metrics]
        self._study.tell(ot_trial, values if len(values) > 1 else values[0])

    def add_evaluated_point(self, parameters: dict[str, Any], value: float,
                            error: bool = False, pruned: bool = False,
                            intermediate_values: list[float] | None = None) -> None:
        ot = self._ot
        state = (ot.trial.TrialState.FAIL if error else
                 ot.trial.TrialState.PRUNED if pruned else ot.trial.TrialState.COMPLETE)
        self._study.add_trial(ot.trial.create_trial(
            params=_flat(parameters), distributions=self._distributions,
            values=None if error else _as_list(value), state=state,
            intermediate_values=dict(enumerate(intermediate_values or []))))


def _flat(config: dict[str, Any], prefix: tuple[Any, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, (*prefix, key)))
        else:
            out[name_of((*prefix, key))] = value
    return out


def _as_list(value: Any) -> list[float]:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]

