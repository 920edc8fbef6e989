"""Algorithms by name in Tune: ``tune.Tuner("PPO")`` and ``tune.run("PPO")``."""

from __future__ import annotations

import os

import pytest

from fedexec import tune
from fedexec.rl import PPOConfig, register_env

SMALL = {"env": "CartPole-v1", "num_env_runners": 1, "train_batch_size": 200,
         "minibatch_size": 50, "num_epochs": 1, "model": {"fcnet_hiddens": [8]}}


@pytest.mark.timeout(240)
def test_tuner_by_name_with_a_config_object_as_param_space(native_ex, tmp_path):
    config = PPOConfig().environment("CartPole-v1").update_from_dict(SMALL)
    config.training(lr=tune.grid_search([1e-3, 1e-4]))
    grid = tune.Tuner("PPO", param_space=config,
                      tune_config=tune.TuneConfig(metric="episode_reward_mean", mode="max"),
                      run_config=tune.RunConfig(stop={"training_iteration": 2}, verbose=0,
                                                storage_path=str(tmp_path), name="ppo"),
                      executor=native_ex).fit()
    assert grid.num_errors == 0 and len(grid) == 2
    assert sorted(r.config["lr"] for r in grid) == [1e-4, 1e-3]
    for result in grid:
        assert result.metrics["training_iteration"] == 2
        assert result.metrics["timesteps_total"] >= 400
        assert result.metrics["episode_return_mean"] > 0


@pytest.mark.timeout(240)
def test_tune_run_by_name_with_a_dict_and_a_checkpoint_at_end(native_ex, tmp_path):
    analysis = tune.run("PPO", config={**SMALL, "num_workers": 1},
                        stop={"training_iteration": 1}, checkpoint_at_end=True,
                        storage_path=str(tmp_path), name="run", verbose=0, executor=native_ex)
    trial = analysis.trials[0]
    assert trial.last_result["training_iteration"] == 1
    checkpoint = analysis.get_last_checkpoint(trial)
    path = getattr(checkpoint, "path", checkpoint)
    assert os.path.exists(os.path.join(path, "algorithm_state.json"))


def _make_cartpole(config):
    import gymnasium

    return gymnasium.make("CartPole-v1")


@pytest.mark.timeout(240)
def test_register_env_names_reach_the_trials(native_ex, tmp_path):
    register_env("cartpole-from-driver", _make_cartpole)
    grid = tune.Tuner("PPO", param_space={**SMALL, "env": "cartpole-from-driver"},
                      run_config=tune.RunConfig(stop={"training_iteration": 1}, verbose=0,
                                                storage_path=str(tmp_path), name="env"),
                      executor=native_ex).fit()
    assert grid.num_errors == 0, [r.error for r in grid]
    assert grid[0].metrics["timesteps_total"] >= 200
