"""Every scheduler's decisions, on scripted trainables whose scores are fixed by
their config, so where each trial must stop is known in advance. Run on the
native and local backends."""

from __future__ import annotations

import json
import os
import random

import pytest

from _tune_trainables import Accumulating, Scripted
from fedexec import tune
from fedexec.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
)
from fedexec.tune.schedulers.pbt import explore

pytestmark = pytest.mark.timeout(120)


def fit(ex, tmp_path, space, scheduler, *, stop=None, concurrent=None, trainable=Scripted,
        checkpoint_frequency=0):
    tuner = tune.Tuner(
        trainable, param_space=space, executor=ex,
        tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler,
                                    max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(storage_path=str(tmp_path), stop=stop, verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(
                                      checkpoint_frequency=checkpoint_frequency)))
    return tuner.fit()


def iterations(results):
    return [r.metrics["training_iteration"] for r in results]


def test_fifo_runs_every_trial_to_its_stop(native_or_local_ex, tmp_path):
    grid = tune.grid_search([[1], [2], [3]])
    results = fit(native_or_local_ex, tmp_path, {"scores": grid}, FIFOScheduler(),
                  stop={"training_iteration": 4})
    assert iterations(results) == [4, 4, 4]
    assert all(r.metrics["done"] for r in results)


def test_asha_stops_trials_below_the_rung_cutoff(native_or_local_ex, tmp_path):
    # one at a time: trial 0 sets each rung, 1 and 2 fall below it at the first
    # rung, 3 is better everywhere and runs to max_t
    grid = tune.grid_search([[4], [3], [2], [5]])
    asha = ASHAScheduler(max_t=8, grace_period=1, reduction_factor=2)
    results = fit(native_or_local_ex, tmp_path, {"scores": grid}, asha, concurrent=1)
    assert iterations(results) == [8, 1, 1, 8]


def test_asha_with_brackets_never_runs_past_max_t(native_or_local_ex, tmp_path):
    grid = tune.grid_search([[s] for s in range(8, 0, -1)])  # later trials are worse
    asha = ASHAScheduler(max_t=9, grace_period=1, reduction_factor=3, brackets=2, seed=0)
    results = fit(native_or_local_ex, tmp_path, {"scores": grid}, asha)
    its = iterations(results)
    assert max(its) == 9 and min(its) < 9 and all(1 <= i <= 9 for i in its)


def test_hyperband_pauses_at_milestones_then_keeps_the_best(native_or_local_ex, tmp_path):
    # max_t 9, rf 3: one bracket of 9 trials with milestones 1, 3, 9; all trials
    # pause at 1 (resources released: 2 CPUs for 9 trials), the best 3 resume from
    # their checkpoints to 3, the best one runs to 9
    grid = tune.grid_search([[s] for s in range(1, 10)])
    hb = HyperBandScheduler(max_t=9, reduction_factor=3)
    results = fit(native_or_local_ex, tmp_path, {"scores": grid}, hb)
    assert iterations(results) == [1, 1, 1, 1, 1, 1, 3, 3, 9]
    resumed = [r for r in results if r.metrics["loaded_from"] == r.metrics["trial_id"]]
    assert len(resumed) >= 2  # kept trials that paused resumed from their own checkpoints
    assert results.num_terminated == 9


def test_a_trial_stopped_while_it_pauses_ends_terminated(native_or_local_ex, tmp_path):
    # max_t 3, rf 3: one bracket of 3 trials, milestone 1, the best goes on. The
    # worst (score 1) is slow to save its pause checkpoint: the bracket is decided,
    # stopping it, while it is still pausing; it must end TERMINATED, not PAUSED
    grid = tune.grid_search([[1], [2], [3]])
    hb = HyperBandScheduler(max_t=3, reduction_factor=3)
    results = fit(native_or_local_ex, tmp_path, {"scores": grid, "save_delay": (3, 1)}, hb)
    assert iterations(results) == [1, 1, 3]
    assert results.num_terminated == 3


def test_median_stopping_rule_stops_a_trial_below_the_median(native_or_local_ex, tmp_path):
    grid = tune.grid_search([[10], [10], [1]])
    rule = MedianStoppingRule(time_attr="training_iteration", grace_period=1,
                              min_samples_required=2)
    results = fit(native_or_local_ex, tmp_path, {"scores": grid}, rule, concurrent=1,
                  stop={"training_iteration": 5})
    assert iterations(results) == [5, 5, 1]


def test_pbt_bottom_trial_exploits_the_top_one(native_or_local_ex, tmp_path):
    # one trial at a time (each needs every CPU): the top one pauses at its first
    # perturbation point (the other waits to run), the bottom one then reaches its
    # own and exploits it
    cpus = native_or_local_ex.cluster_resources()["CPU"]
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=2,
                                  quantile_fraction=0.5, resample_probability=1.0,
                                  hyperparam_mutations={"lr": [0.5, 0.25]}, seed=0)
    results = fit(native_or_local_ex, tmp_path, {"lr": tune.grid_search([1.0, 0.001])}, pbt,
                  stop={"training_iteration": 20},
                  trainable=tune.with_resources(Accumulating, {"cpu": cpus}),
                  checkpoint_frequency=1)
    good, bad = results
    assert good.metrics["loaded_from"] == good.metrics["trial_id"]  # paused, resumed
    assert bad.metrics["loaded_from"] == good.metrics["trial_id"]  # took the top checkpoint
    assert bad.config["lr"] in (0.5, 0.25)  # explored from the top trial's config
    assert bad.metrics["score"] > 1.0  # far above what lr=0.001 alone reaches in 20 steps


def _reports_without_checkpoints(config):
    with open(config["starts"], "a") as f:
        f.write("start\n")
    for i in range(1, 7):
        tune.report({"score": config["lr"] * i})


def test_async_pbt_lets_a_function_trainable_without_checkpoints_run_on(native_or_local_ex,
                                                                      tmp_path):
    # one trial at a time: pausing one that reported no checkpoint would start it
    # over from its first step at every perturbation point
    cpus = native_or_local_ex.cluster_resources()["CPU"]
    starts = tmp_path / "starts"
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=2,
                                  quantile_fraction=0.5, hyperparam_mutations={"lr": [0.5]})
    space = {"lr": tune.grid_search([1.0, 0.001]), "starts": str(starts)}
    results = fit(native_or_local_ex, tmp_path, space, pbt,
                  trainable=tune.with_resources(_reports_without_checkpoints, {"cpu": cpus}))
    assert iterations(results) == [6, 6] and results.num_errors == 0
    assert starts.read_text().count("start") == 2  # each ran once, never started over


def test_synchronous_pbt_ranks_the_whole_population_at_each_point(native_or_local_ex,
                                                                  tmp_path):
    # 4 trials on 2 slots: each pauses at the sync point until all are there; then
    # the bottom half exploits the top half, all at the same step
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=3,
                                  quantile_fraction=0.5, resample_probability=1.0,
                                  hyperparam_mutations={"lr": [0.5, 0.25]}, synch=True, seed=0)
    space = {"lr": tune.grid_search([1.0, 0.001, 0.75, 0.002])}
    results = fit(native_or_local_ex, tmp_path, space, pbt, stop={"training_iteration": 9},
                  trainable=Accumulating, checkpoint_frequency=0, concurrent=2)
    assert iterations(results) == [9, 9, 9, 9]
    with open(os.path.join(results.experiment_path, "pbt_global.txt")) as f:
        log = [json.loads(line) for line in f]
    # at steps 3 and 6 the two worst exploit the two best, at the same step
    assert [(r["trial_step"], r["donor_step"]) for r in log] == [(3, 3)] * 2 + [(6, 6)] * 2
    ids = [r.metrics["trial_id"] for r in results]
    assert {r["trial_id"] for r in log[:2]} == {ids[1], ids[3]}
    assert {r["donor_id"] for r in log[:2]} <= {ids[0], ids[2]}
    assert pbt.num_perturbations == 4
    for r in log:
        with open(os.path.join(results.experiment_path, "pbt_policy_"
                               f"{r['trial_id']}.txt")) as f:
            assert json.dumps(r) in [json.dumps(json.loads(line)) for line in f]
    assert all(r.metrics["loaded_from"] is not None for r in (results[1], results[3]))


def test_pbt_without_its_attributes_in_a_result_is_an_error(native_or_local_ex, tmp_path):
    pbt = PopulationBasedTraining(time_attr="no_such_attr", perturbation_interval=2,
                                  hyperparam_mutations={"lr": [0.5]})
    with pytest.raises(RuntimeError, match=r"no_such_attr.*require_attrs=False"):
        fit(native_or_local_ex, tmp_path, {"lr": 1.0}, pbt,
            stop={"training_iteration": 3}, trainable=Accumulating)
    lenient = PopulationBasedTraining(time_attr="no_such_attr", perturbation_interval=2,
                                      hyperparam_mutations={"lr": [0.5]}, require_attrs=False)
    results = fit(native_or_local_ex, tmp_path / "lenient", {"lr": 1.0}, lenient,
                  stop={"training_iteration": 3}, trainable=Accumulating)
    assert iterations(results) == [3]


def test_pbt_exploits_function_trainables_through_their_checkpoints(native_or_local_ex, tmp_path):
    from _tune_trainables import checkpointing

    pbt = PopulationBasedTraining(time_attr="training_iteration", metric="count", mode="max",
                                  perturbation_interval=2, quantile_fraction=0.5,
                                  hyperparam_mutations={"n": [12]})
    tuner = tune.Tuner(checkpointing, param_space={"n": tune.grid_search([12, 12])},
                       executor=native_or_local_ex,
                       tune_config=tune.TuneConfig(scheduler=pbt),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert results.num_errors == 0
    # each trial's state reached the end: its own count, or a copy of the donor's
    # checkpoint. A trial that exploits a donor already at 12 has nothing left to
    # report, so its last result is its own from the perturbation point where it
    # exploited (any of 2, 4, ..., 10 when the donor ran far ahead under load), or
    # one step past it when it ran ahead of the decision, as in Ray
    for r in results:
        with r.checkpoint.as_directory() as d:
            assert json.load(open(os.path.join(d, "state.json")))["count"] == 12
        assert 2 <= r.metrics["count"] <= 12
    assert max(r.metrics["count"] for r in results) == 12  # the donor finished itself


def test_pbt_explore_perturbs_or_resamples():
    rng = random.Random(0)
    mutations = {"lr": tune.uniform(0.001, 1.0), "bs": [16, 32, 64],
                 "opt": {"mom": tune.uniform(0, 1)}}
    config = {"lr": 0.1, "bs": 32, "opt": {"mom": 0.5}, "fixed": 7}
    for _ in range(30):  # perturb: numbers times 1.2 or 0.8, list values to a neighbour
        new = explore(config, mutations, 0.0, (1.2, 0.8), rng)
        assert new["lr"] in (pytest.approx(0.12), pytest.approx(0.08))
        assert new["bs"] in (16, 64)
        assert new["opt"]["mom"] in (pytest.approx(0.6), pytest.approx(0.4))
        assert new["fixed"] == 7
    resampled = [explore(config, mutations, 1.0, (1.2, 0.8), rng) for _ in range(30)]
    assert len({c["lr"] for c in resampled}) > 20  # drawn anew from the domain
    assert all(0.001 <= c["lr"] < 1.0 and 0 <= c["opt"]["mom"] < 1 for c in resampled)
    assert {c["bs"] for c in resampled} == {16, 32, 64}
    assert config == {"lr": 0.1, "bs": 32, "opt": {"mom": 0.5}, "fixed": 7}  # not mutated
