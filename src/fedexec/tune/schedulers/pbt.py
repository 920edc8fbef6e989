"""``PopulationBasedTraining`` (Jaderberg et al., 2017).

Every ``perturbation_interval`` of ``time_attr`` a trial is ranked against the
population by its latest metric. A trial in the top ``quantile_fraction`` keeps
a checkpoint (class trainables are asked to save now; function trainables use
their latest reported one). A trial in the bottom quantile **exploits**: it is
restarted from a top trial's checkpoint, with that trial's config **explored**:
each key of ``hyperparam_mutations`` is resampled with ``resample_probability``,
else perturbed (numbers multiplied by one of ``perturbation_factors``; a list's
value moved to a neighbouring entry).

Asynchronous (the default): each trial is ranked on its own, at its own
perturbation points; one that reaches a point while other trials wait to run
(PENDING or PAUSED) pauses if it can resume where it was (a class trainable, or a
function trainable that reported a checkpoint), so a population larger than the
cluster takes turns (the trial behind in ``time_attr`` runs next). Synchronous (``synch=True``): a
trial that reaches the next perturbation point pauses until every unfinished trial
has reached it; then the population is ranked once, the bottom exploits the top
(the pause checkpoints), and all run on to the next point.

With ``log_config`` every exploit is a JSON line in the experiment directory's
``pbt_global.txt`` and in ``pbt_policy_<trial_id>.txt``:
``{"trial_id", "donor_id", "trial_step", "donor_step", "old_config", "new_config"}``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
from collections.abc import Callable
from typing import Any

from ..search.sample import Domain, Float, Integer
from .trial_scheduler import TrialScheduler

logger = logging.getLogger(__name__)

__all__ = ["PopulationBasedTraining", "explore"]


class _State:
    def __init__(self) -> None:
        self.last_score: float | None = None
        self.last_perturbation_time = 0.0
        self.last_train_time = 0.0


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


def _resumable(controller: Any, trial: Any) -> bool:
    """Whether a paused ``trial`` resumes where it was: a class trainable saves when
    it pauses; a function trainable only from the checkpoints it reported (without
    one it would start over at every pause and never get past the first point)."""
    spec = getattr(controller, "spec", None)
    return getattr(spec, "kind", "class") == "class" or trial.latest_checkpoint is not None


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
        log_config: record every exploit (see the module docstring).
        require_attrs: a result without ``time_attr`` or the metric is an error
            (``False``: such a result is passed over, with a warning once).
        synch: synchronous PBT (see the module docstring).
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
        self._log_config = log_config
        self._require_attrs = require_attrs
        self._warned_attrs = False
        self._synch = synch
        self._next_sync = max(float(perturbation_interval), float(burn_in_period))
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
            self._missing_attrs(result)
            return TrialScheduler.CONTINUE
        state.last_score, state.last_train_time = score, float(t)
        if self._synch:
            # pause at the sync point: choose_trial_to_run perturbs once all are there
            return TrialScheduler.PAUSE if t >= self._next_sync else TrialScheduler.CONTINUE
        if t < self._burn_in or t - state.last_perturbation_time < self._interval:
            return TrialScheduler.CONTINUE
        state.last_perturbation_time = float(t)
        lower, upper = self._quantiles(controller)
        if trial.trial_id in upper:
            controller.request_checkpoint(trial)
        elif trial.trial_id in lower and self._exploit(controller, trial, upper):
            return TrialScheduler.NOOP
        waiting = any(other.status in ("PENDING", "PAUSED") for other in controller.get_trials()
                      if other is not trial)
        return TrialScheduler.PAUSE if waiting and _resumable(controller, trial) \
            else TrialScheduler.CONTINUE

    def _missing_attrs(self, result: dict[str, Any]) -> None:
        missing = [k for k in (self._time_attr, self._metric or "") if result.get(k) is None]
        if not missing:
            return  # the metric is NaN: a result not to rank on
        text = (f"PopulationBasedTraining found no {' or '.join(map(repr, missing))} in a "
                f"trial result (keys: {sorted(result)}): report it from the trainable, or "
                "pass require_attrs=False to pass such results over")
        if self._require_attrs:
            raise RuntimeError(text)
        if not self._warned_attrs:
            self._warned_attrs = True
            logger.warning(text)

    def _exploit(self, controller: Any, trial: Any, upper: list[str]) -> bool:
        """Restart ``trial`` from a top trial's checkpoint; False if none has one."""
        donors = [d for d in (controller.get_trial(u) for u in upper)
                  if d is not None and d.latest_checkpoint is not None]
        if not donors:
            return False
        donor = self._rng.choice(donors)
        new_config = explore(donor.config, self._mutations, self._resample, self._factors,
                             self._rng, self._custom)
        self.num_perturbations += 1
        if self._log_config:
            self._log(controller, trial, donor, new_config)
        controller.exploit(trial, new_config, donor)
        return True

    def _log(self, controller: Any, trial: Any, donor: Any, new_config: dict[str, Any]) -> None:
        record = json.dumps({
            "trial_id": trial.trial_id, "donor_id": donor.trial_id,
            "trial_step": self._state[trial.trial_id].last_train_time,
            "donor_step": self._state[donor.trial_id].last_train_time
            if donor.trial_id in self._state else None,
            "old_config": trial.config, "new_config": new_config}, default=repr)
        directory = getattr(controller, "experiment_path", None) or os.path.dirname(
            trial.local_path)
        for name in ("pbt_global.txt", f"pbt_policy_{trial.trial_id}.txt"):
            with open(os.path.join(directory, name), "a") as f:
                f.write(record + "\n")

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

    def _sync(self, controller: Any) -> None:
        """Synchronous mode: once every unfinished trial paused at the sync point,
        the bottom exploits the top (their pause checkpoints); the point moves on."""
        trials = [t for tid in self._state if (t := controller.get_trial(tid)) is not None
                  and not t.is_finished()]
        if not trials or any(t.status != "PAUSED" or
                             self._state[t.trial_id].last_train_time < self._next_sync
                             for t in trials):
            return
        lower, upper = self._quantiles(controller)
        for trial in trials:
            self._state[trial.trial_id].last_perturbation_time = self._next_sync
            if trial.trial_id in lower:
                self._exploit(controller, trial, upper)
        latest = max(self._state[t.trial_id].last_train_time for t in trials)
        self._next_sync = max(self._next_sync + self._interval, latest)

    def choose_trial_to_run(self, controller: Any) -> Any:
        """A PENDING trial, else the PAUSED trial furthest behind in ``time_attr``
        (synchronous: only one behind the sync point, after the perturbation)."""
        if self._synch:
            self._sync(controller)
        trials = controller.get_trials()
        for trial in trials:
            if trial.status == "PENDING":
                return trial
        paused = [(self._state[t.trial_id].last_train_time if t.trial_id in self._state else 0.0,
                   i, t) for i, t in enumerate(trials) if t.status == "PAUSED"]
        if self._synch:
            paused = [p for p in paused if p[0] < self._next_sync]
        return min(paused, key=lambda p: p[:2])[2] if paused else None

    def on_trial_complete(self, controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._state.pop(trial.trial_id, None)

    def on_trial_error(self, controller: Any, trial: Any) -> None:
        self._state.pop(trial.trial_id, None)

    def on_trial_remove(self, controller: Any, trial: Any) -> None:
        self._state.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        mode = f"synchronous, next at {self._next_sync:g}" if self._synch else "asynchronous"
        return f"PopulationBasedTraining ({mode}): {self.num_perturbations} perturbations"
