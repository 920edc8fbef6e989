"""PPO end to end on the native backend: learning CartPole with the classic tuned
settings, checkpoints, custom envs, env runners (weights, filters, failures)."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from _backend_support import exited, poll_until
from fedexec.rl import Algorithm, PPOConfig, register_env
from fedexec.rl._cli import examples, load_experiments


def small_config(env: str = "CartPole-v1", runners: int = 2, **training) -> PPOConfig:
    return (PPOConfig().environment(env)
            .env_runners(num_env_runners=runners, observation_filter="MeanStdFilter")
            .training(train_batch_size=400, minibatch_size=64, num_epochs=2,
                      model={"fcnet_hiddens": [16]}, **training)
            .debugging(seed=0))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ppo_reaches_150_on_cartpole_within_100k_steps_with_the_classic_settings(native_ex):
    spec = load_experiments(examples()["cartpole-ppo"])["cartpole-ppo"]
    assert spec["config"]["framework"] == "tf" and spec["config"]["num_sgd_iter"] == 6
    with pytest.warns(UserWarning, match="runs this config on torch"):
        config = PPOConfig.from_dict({**spec["config"], "env": spec["env"], "seed": 0})
    algo = config.build(executor=native_ex)
    try:
        history = []
        while True:
            result = algo.train()
            history.append((result["timesteps_total"], result["episode_reward_mean"]))
            if result["episode_reward_mean"] >= 150 or result["timesteps_total"] >= 100_000:
                break
    finally:
        algo.stop()
    print("steps, mean return per iteration:", history)
    assert result["episode_reward_mean"] >= 150, history
    assert result["timesteps_total"] <= 100_000


@pytest.mark.timeout(180)
def test_result_keys_weights_broadcast_and_filters_synced(native_ex):
    algo = small_config().build(executor=native_ex)
    try:
        result = algo.train()
        for key in ("episode_reward_mean", "episode_return_mean", "episode_reward_max",
                    "episode_reward_min", "episode_len_mean", "episodes_this_iter",
                    "timesteps_total", "num_env_steps_sampled_lifetime", "training_iteration",
                    "time_total_s"):
            assert key in result, key
        assert result["timesteps_total"] == result["num_env_steps_sampled_lifetime"] >= 400
        assert result["training_iteration"] == 1
        stats = result["info"]["learner"]["default_policy"]["learner_stats"]
        assert {"policy_loss", "vf_loss", "kl", "entropy"} <= set(stats)
        group = algo.env_runner_group
        assert len(set(group.pids())) == 2 and os.getpid() not in group.pids()
        learner = algo.get_policy().get_weights()
        for weights in group.foreach_runner("get_weights"):
            for name, value in learner.items():
                np.testing.assert_array_equal(weights[name], value)
        driver_filter = algo.filter.get_state()
        assert driver_filter["stat"]["n"] >= 400  # both runners' observations merged
        states = group.foreach_runner(lambda runner: runner.filter.get_state())
        assert states == [driver_filter, driver_filter]
        evaluation = algo.evaluate()["evaluation"]
        assert evaluation["episodes_this_iter"] == 10
        assert evaluation["episode_reward_mean"] == evaluation["episode_return_mean"] > 0
    finally:
        algo.stop()


@pytest.mark.timeout(120)
def test_zero_env_runners_samples_in_the_driver_and_evaluation_interval(native_ex):
    config = small_config(runners=0).evaluation(evaluation_interval=2, evaluation_duration=3)
    algo = config.build(executor=native_ex)
    try:
        assert algo.env_runner_group.runners == []
        assert algo.env_runner_group.local_runner is not None
        result = algo.train()
        assert result["timesteps_total"] >= 400 and result["num_healthy_workers"] == 1
        assert "evaluation" not in result
        result = algo.train()
        assert result["evaluation"]["episodes_this_iter"] == 3
    finally:
        algo.stop()


@pytest.mark.timeout(180)
def test_a_sigkilled_env_runner_is_replaced_and_training_continues(native_ex):
    algo = small_config().build(executor=native_ex)
    try:
        first = algo.train()
        pids = algo.env_runner_group.pids()
        os.kill(pids[0], signal.SIGKILL)
        assert poll_until(lambda: exited(pids[0]), timeout=30)
        second = algo.train()
        assert second["env_runners"]["num_env_runner_restarts"] == 1
        assert second["env_runners"]["num_healthy_env_runners"] == 2
        assert second["timesteps_total"] >= first["timesteps_total"] + 400
        now = algo.env_runner_group.pids()
        assert pids[0] not in now and pids[1] in now
        # the new runner got the current weights
        replacement = algo.env_runner_group.foreach_runner("get_weights")[0]
        for name, value in algo.get_policy().get_weights().items():
            np.testing.assert_array_equal(replacement[name], value)
        third = algo.train()
        assert third["training_iteration"] == 3
    finally:
        algo.stop()


@pytest.mark.timeout(180)
def test_checkpoint_round_trip_gives_identical_greedy_actions(native_ex, tmp_path):
    algo = small_config(runners=1).build(executor=native_ex)
    try:
        algo.train()
        algo.train()
        path = algo.save(str(tmp_path / "ckpt"))
        rng = np.random.default_rng(0)
        observations = rng.normal(0.0, 1.0, size=(50, 4)).astype(np.float32)
        before = [algo.compute_single_action(o, explore=False) for o in observations]
    finally:
        algo.stop()
    with open(os.path.join(path, "algorithm_state.json")) as f:
        state = json.load(f)
    assert state["checkpoint_version"] == "1.0" and state["algorithm"] == "PPO"
    assert os.path.exists(os.path.join(path, "policy_state.pt"))
    assert os.path.exists(os.path.join(path, "filter_state.json"))
    restored = Algorithm.from_checkpoint(path, executor=native_ex)
    try:
        assert type(restored).__name__ == "PPO" and restored.iteration == 2
        after = [restored.compute_single_action(o, explore=False) for o in observations]
        assert after == before
        assert len(set(after)) == 2  # the observations exercise both actions
        assert restored.train()["training_iteration"] == 3
    finally:
        restored.stop()


class Corridor:
    """Walk right (action 1) from 0 to ``length``: reward -0.1 per step, +1 at the end."""

    def __init__(self, config):
        import gymnasium as gym

        self.length = int(config.get("length", 5))
        self.worker_index = config.worker_index
        self.observation_space = gym.spaces.Box(0.0, float(self.length), (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.pos = 0

    def reset(self, *, seed=None, options=None):
        self.pos = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.pos = max(0, self.pos + (1 if action == 1 else -1))
        done = self.pos >= self.length
        return (np.array([self.pos], np.float32), 1.0 if done else -0.1, done, self.pos > 50,
                {"worker": self.worker_index})


@pytest.mark.timeout(180)
def test_a_custom_env_from_register_env_runs_in_the_runners(native_ex):
    register_env("corridor-test", lambda config: Corridor(config))
    config = (PPOConfig().environment("corridor-test", env_config={"length": 4})
              .env_runners(num_env_runners=2)
              .training(train_batch_size=200, minibatch_size=50, num_epochs=3, lr=1e-3,
                        model={"fcnet_hiddens": [8]})
              .debugging(seed=0))
    algo = config.build(executor=native_ex)
    try:
        result = algo.train()
        assert result["timesteps_total"] >= 200 and result["episodes_this_iter"] > 0
        indices = algo.env_runner_group.foreach_runner(lambda r: r.envs[0].worker_index)
        assert sorted(indices) == [1, 2]
        assert algo.compute_single_action(np.array([1.0], np.float32)) in (0, 1)
    finally:
        algo.stop()
    with pytest.raises(ValueError, match="unknown environment 'no-such-env'"):
        PPOConfig().environment("no-such-env").build(executor=native_ex)


@pytest.mark.timeout(180)
def test_continuous_actions_with_a_gaussian_policy(native_ex):
    algo = (PPOConfig().environment("Pendulum-v1")
            .env_runners(num_env_runners=0, num_envs_per_env_runner=2)
            .training(train_batch_size=400, minibatch_size=100, num_epochs=2)
            .debugging(seed=0).build(executor=native_ex))
    try:
        result = algo.train()
        assert result["timesteps_total"] == 400 and result["episodes_this_iter"] == 2
        assert np.isfinite(result["info"]["learner"]["default_policy"]["learner_stats"]
                           ["total_loss"])
        action = algo.compute_single_action(np.array([1.0, 0.0, 0.0], np.float32), explore=True)
        assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0
    finally:
        algo.stop()


@pytest.mark.timeout(120)
def test_runs_on_the_local_backend_too(local_ex):
    algo = small_config(runners=1).build(executor=local_ex)
    try:
        assert algo.train()["timesteps_total"] >= 400
    finally:
        algo.stop()


def test_num_gpus_without_a_gpu_says_what_to_do():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(ValueError, match="torch sees no GPU"):
        small_config(runners=0).resources(num_gpus=1).build()


@pytest.mark.timeout(180)
def test_without_restarts_a_dead_env_runner_fails_the_iteration(native_ex):
    import fedexec

    algo = small_config(runners=1).fault_tolerance(restart_failed_env_runners=False) \
        .build(executor=native_ex)
    try:
        pid = algo.env_runner_group.pids()[0]
        os.kill(pid, signal.SIGKILL)
        assert poll_until(lambda: exited(pid), timeout=30)
        with pytest.raises(fedexec.ActorDiedError):
            algo.train()
    finally:
        algo.stop()


@pytest.mark.timeout(60)
def test_more_env_runners_than_the_cluster_can_hold_is_refused_not_a_hang(native_ex):
    cpus = int(native_ex.cluster_resources()["CPU"])
    with pytest.raises(ValueError, match=rf"{cpus + 1} env runners .* need {cpus + 1} CPUs, "
                                         rf"and the cluster has {cpus}: lower num_env_runners"):
        small_config(runners=cpus + 1).build(executor=native_ex)
    algo = small_config(runners=cpus + 1).env_runners(num_cpus_per_env_runner=0.5) \
        .build(executor=native_ex)  # fractional CPUs fit
    algo.stop()
