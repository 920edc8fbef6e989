"""``PopulationBasedTraining`` (Jaderberg et al., 2017).

Every ``perturbation_interval`` of ``time_attr`` a trial is ranked against the
population by its latest metric. A trial in the top ``quantile_fraction`` keeps
a checkpoint (class trainables are asked to save now; function trainables use
their latest reported one). A trial in the bottom quantile **exploits**: it is
restarted from a top trial's checkpoint, with that trial's config **explored**:
each key of ``hyperparam_mutations`` is resampled with ``resample_probability``,
else perturbed (numbers multiplied by one of ``perturbation_factors``; a list's
value moved to a neighbouring entry).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from typing import Any

from ..search.sample import Domain, Float, Integer
from .trial_scheduler import TrialScheduler

__all__ = ["PopulationBasedTraining", "explore"]


class _State:
    def __init__(self) -> None:
        self.last_score: float | None = None
        self.last_perturbation_time = 0.0


def explore(config: dict[str, Any], mutations: dict[str, Any], resample_probability: float,
            perturbation_factors: tuple[float, float], rng: random.Random,
            custom_explore_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
            ) -> dict[str, Any]:
    """A mutated copy of ``config`` (see the module docstring)."""
    new = copy.deepcopy(config)
    _explore_into(new, mutations, resample_probability, perturbation_factors, rng)
    if custom_explore_fn is not None:
        new = custom_explore_fn(new)
    return new


def _explore_into(config: dict[str, Any], mutations: dict[str, Any], p: float,
                  factors: tuple[float, float], rng: random.Random) -> None:
    for key, spec in mutations.items():
        if isinstance(spec, dict):
            config.setdefault(key, {})
            _explore_into(config[key], spec, p, factors, rng)
            continue
        current = config.get(key)
        resample = rng.random() < p or current is None
        if isinstance(spec, (list, tuple)):
            values = list(spec)
            if resample or current not in values:
                config[key] = rng.choice(values)
            else:
                i = values.index(current) + rng.choice((-1, 1))
                config[key] = values[min(max(i, 0), len(values) - 1)]
        elif isinstance(spec, Domain):
            if resample or not isinstance(current, (int, float)):
                config[key] = spec.sample(random_state=rng.getrandbits(32))
            else:
                config[key] = _perturb(current, rng.choice(factors), spec)
        elif callable(spec):
            if resample or not isinstance(current, (int, float)):
                config[key] = spec()
            else:
                config[key] = _perturb(current, rng.choice(factors), None)
        else:
            raise TypeError(f"hyperparam_mutations[{key!r}] must be a list, a tune domain, a "
                            f"function or a dict, not {spec!r}")


def _perturb(value: float, factor: float, domain: Domain | None) -> float:
    out = value * factor
    if isinstance(domain, (Float, Integer)) and domain.lower is not None:
        out = max(out, domain.lower)
        if isinstance(domain, Integer):
            out = min(out, domain.upper - 1)
        elif domain.upper is not None:
            out = min(out, domain.upper)
    return round(out) if isinstance(value, int) and not isinstance(value, bool) else out


class PopulationBasedTraining(TrialScheduler):
    """Population Based Training.

    Args:
        time_attr: the result field measuring progress (``time_total_s``).
        metric, mode: the metric and ``"min"``/``"max"``.
        perturbation_interval: rank and exploit every this much ``time_attr``.
        burn_in_period: no perturbation before this ``time_attr``.
        hyperparam_mutations: ``{key: list | tune domain | fn() | nested dict}``.
        quantile_fraction: the share of the population that is top (and bottom).
        resample_probability: the chance a key is resampled rather than perturbed.
        perturbation_factors: the factors numbers are multiplied by.
        custom_explore_fn: ``fn(config) -> config`` applied after the mutations.
        seed: for reproducible exploration.
    """

    def __init__(self, time_attr: str = "time_total_s", metric: str | None = None,
                 mode: str | None = None, perturbation_interval: float = 60.0,
                 burn_in_period: float = 0.0,
                 hyperparam_mutations: dict[str, Any] | None = None,
                 quantile_fraction: float = 0.25, resample_probability: float = 0.25,
                 perturbation_factors: tuple[float, float] = (1.2, 0.8),
                 custom_explore_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 log_config: bool = True, require_attrs: bool = True, synch: bool = False,
                 seed: int | None = None) -> None:
        if not hyperparam_mutations and custom_explore_fn is None:
            raise ValueError("PopulationBasedTraining needs hyperparam_mutations or "
                             "custom_explore_fn: what may it change?")
        if not 0 <= quantile_fraction <= 0.5:
            raise ValueError(f"quantile_fraction must be in [0, 0.5], not {quantile_fraction}")
        if perturbation_interval <= 0:
            raise ValueError("perturbation_interval must be positive")
        super().__init__(metric, mode)
        self._time_attr = time_attr
        self._interval = perturbation_interval
        self._burn_in = burn_in_period
        self._mutations = hyperparam_mutations or {}
        self._quantile = quantile_fraction
        self._resample = resample_probability
        self._factors = perturbation_factors
        self._custom = custom_explore_fn
        self._rng = random.Random(seed)
        self._state: dict[str, _State] = {}
        self.num_perturbations = 0

    def on_trial_add(self, controller: Any, trial: Any) -> None:
        self._require_metric()
        self._state[trial.trial_id] = _State()

    def on_trial_result(self, controller: Any, trial: Any, result: dict[str, Any]) -> str:
        t, score = result.get(self._time_attr), self._score(result)
        state = self._state.setdefault(trial.trial_id, _State())
        if t is None or score is None:
            return TrialScheduler.CONTINUE
        state.last_score = score
        if t < self._burn_in or t - state.last_perturbation_time < self._interval:
            return TrialScheduler.CONTINUE
        state.last_perturbation_time = float(t)
        lower, upper = self._quantiles(controller)
        if trial.trial_id in upper:
            controller.request_checkpoint(trial)
            return TrialScheduler.CONTINUE
        if trial.trial_id not in lower:
            return TrialScheduler.CONTINUE
        donors = [d for d in (controller.get_trial(u) for u in upper)
                  if d is not None and d.latest_checkpoint is not None]
        if not donors:
            return TrialScheduler.CONTINUE
        donor = self._rng.choice(donors)
        new_config = explore(donor.config, self._mutations, self._resample, self._factors,
                             self._rng, self._custom)
        self.num_perturbations += 1
        controller.exploit(trial, new_config, donor)
        return TrialScheduler.NOOP

    def _quantiles(self, controller: Any) -> tuple[list[str], list[str]]:
        scored = [(s.last_score, tid) for tid, s in self._state.items()
                  if s.last_score is not None and (trial := controller.get_trial(tid)) is not None
                  and not trial.is_finished()]
        if len(scored) <= 1:
            return [], []
        scored.sort()
        n = math.ceil(len(scored) * self._quantile)
        n = min(n, len(scored) // 2)
        if n == 0:
            return [], []
        return [tid for _, tid in scored[:n]], [tid for _, tid in scored[-n:]]

    def on_trial_complete(self, controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._state.pop(trial.trial_id, None)

    def on_trial_error(self, controller: Any, trial: Any) -> None:
        self._state.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return f"PopulationBasedTraining: {self.num_perturbations} perturbations"
