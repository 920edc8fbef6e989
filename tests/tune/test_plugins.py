"""Trainables that other libraries plug in: algorithms by name (the way
``fedexec.rl`` registers "PPO" when imported) with a config object as the
param_space, and ``fedexec.train``-style trainers whose workers' resources count
against the cluster."""

from __future__ import annotations

import sys

import pytest

from fedexec import tune
from fedexec.tune.trainable import registry

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def algorithms_provider(monkeypatch):
    """``_tune_algorithms`` as a provider of names (as ``fedexec.rl`` is), not yet
    imported: looking a name up must import it."""
    monkeypatch.setattr(registry, "PROVIDERS", (*registry.PROVIDERS, "_tune_algorithms"))
    monkeypatch.delitem(sys.modules, "_tune_algorithms", raising=False)
    name = "HILLCLIMB_TEST"
    registry._registry.pop(name, None)
    yield name
    registry._registry.pop(name, None)


def test_an_algorithm_runs_by_name_with_its_config_object(native_ex, tmp_path,
                                                          algorithms_provider):
    name = algorithms_provider
    assert "_tune_algorithms" not in sys.modules
    algorithm = tune.get_trainable_cls(name)  # imports the provider, which registers it
    algos = sys.modules["_tune_algorithms"]
    assert algorithm is algos.HillClimb
    config = algos.HillClimbConfig().training(lr=tune.grid_search([0.1, 0.25]), target=2.0)
    results = tune.Tuner(name, param_space=config, executor=native_ex,
                         tune_config=tune.TuneConfig(metric="episode_reward_mean", mode="max"),
                         run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0,
                                                   stop={"training_iteration": 3})).fit()
    assert [r.config for r in results] == [{"lr": 0.1, "target": 2.0},
                                           {"lr": 0.25, "target": 2.0}]
    assert [r.metrics["training_iteration"] for r in results] == [3, 3]
    # x_{n+1} = x_n - 2 lr (x_n - 2): after 3 steps x = 2 (1 - (1 - 2 lr)^3)
    for r in results:
        lr = r.config["lr"]
        assert r.metrics["x"] == pytest.approx(2 * (1 - (1 - 2 * lr) ** 3))
    assert results.get_best_result().config["lr"] == 0.25
    analysis = tune.run(name, config={"lr": 0.5, "target": 1.0}, stop={"training_iteration": 1},
                        storage_path=str(tmp_path), executor=native_ex, verbose=0)
    assert analysis.trials[0].last_result["x"] == pytest.approx(1.0)


def test_an_unknown_name_says_how_to_register_one():
    with pytest.raises(ValueError, match="register_trainable"):
        tune.Tuner("NO_SUCH_ALGORITHM_ANYWHERE")


def test_param_space_must_be_a_dict_or_a_config_object():
    with pytest.raises(TypeError, match="to_dict"):
        tune.Tuner(lambda config: None, param_space=[1, 2])


def test_trainer_workers_count_against_the_cluster(native_ex, tmp_path):
    from _tune_trainables import WorkerTrainer

    # each trial: its actor (no CPU) + 2 workers of 1 CPU: on 2 CPUs one trial at a time
    trainer = WorkerTrainer(num_workers=2, train_loop_config={"lr": 1.0})
    results = tune.Tuner(trainer, param_space={"train_loop_config": {
        "lr": tune.grid_search([0.5, 1.0, 2.0])}}, executor=native_ex,
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    assert results.num_errors == 0, results.errors
    squares = sum(k * k for k in range(8))
    assert [r.metrics["loss"] for r in results] == [0.25 * squares, squares, 4 * squares]
    for r in results:  # the loss came from two worker processes, not the trial's own
        pids = r.metrics["worker_pids"]
        assert len(set(pids)) == 2 and r.metrics["trial_pid"] not in pids
    assert results.get_best_result().config == {"train_loop_config": {"lr": 0.5}}
    with pytest.raises(ValueError, match="lower the trial's resources"):
        tune.Tuner(WorkerTrainer(num_workers=3, train_loop_config={"lr": 1.0}),
                   executor=native_ex,
                   run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
