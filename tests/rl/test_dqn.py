"""DQN: its maths by hand on tiny cases, its acting, and learning on CartPole."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gymnasium = pytest.importorskip("gymnasium")

from fedexec.rl import DQNConfig  # noqa: E402
from fedexec.rl.dqn import (  # noqa: E402
    DQN,
    DQNPolicy,
    DuelingQModel,
    dqn_loss,
    dueling_q_values,
    n_step_rows,
    q_targets,
)
from fedexec.rl.sample_batch import SampleBatch  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks on a loaded 2-core machine: more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def t(x):
    return torch.tensor(x, dtype=torch.float32)


# -- maths ----------------------------------------------------------------------------
def test_double_q_target_by_hand():
    rewards, terminateds = t([1.0, 0.5]), t([0.0, 1.0])
    next_q_target = t([[1.0, 5.0], [3.0, 2.0]])
    next_q_online = t([[2.0, 1.0], [0.0, 9.0]])
    # double Q: the online net picks a* = 0 for row 0, the target net values it (1.0)
    double = q_targets(rewards, terminateds, next_q_target, next_q_online, gamma=0.9)
    np.testing.assert_allclose(double.numpy(), [1.0 + 0.9 * 1.0, 0.5])
    # plain DQN: max of the target net (5.0); a terminated row never bootstraps
    plain = q_targets(rewards, terminateds, next_q_target, None, gamma=0.9)
    np.testing.assert_allclose(plain.numpy(), [1.0 + 0.9 * 5.0, 0.5])
    # n-step rows discount by gamma ** n
    nstep = q_targets(rewards, terminateds, next_q_target, next_q_online, 0.9, t([2.0, 1.0]))
    np.testing.assert_allclose(nstep.numpy(), [1.0 + 0.81 * 1.0, 0.5], rtol=1e-6)


def test_dueling_aggregation_by_hand_and_in_the_model():
    q = dueling_q_values(t([1.0, -1.0]), t([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]]))
    np.testing.assert_allclose(q.numpy(), [[0.0, 1.0, 2.0], [-3.0, -3.0, 3.0]])
    model = DuelingQModel(4, 3, {"fcnet_hiddens": [8], "fcnet_activation": "relu"}, [5], True)
    obs = torch.randn(6, 4)
    features = model.trunk(obs)
    value, adv = model.value(features), model.advantage(features)
    np.testing.assert_allclose(model(obs).detach().numpy(),
                               (value + adv - adv.mean(-1, keepdim=True)).detach().numpy(),
                               rtol=1e-6)
    # the mean advantage is 0, so the mean Q over actions is V(s)
    np.testing.assert_allclose(model(obs).mean(-1).detach().numpy(),
                               value.squeeze(-1).detach().numpy(), rtol=1e-5, atol=1e-6)
    plain = DuelingQModel(4, 3, {"fcnet_hiddens": [8]}, [5], dueling=False)
    assert plain.value is None and plain(obs).shape == (6, 3)


def test_huber_loss_and_importance_weights_by_hand():
    q, target = t([1.5, 0.0]), t([1.0, 2.0])  # td errors 0.5 and -2
    loss, td = dqn_loss(q, target)
    np.testing.assert_allclose(td.numpy(), [0.5, -2.0])
    assert float(loss) == pytest.approx((0.5 * 0.25 + (2.0 - 0.5)) / 2)
    weighted, _ = dqn_loss(q, target, weights=t([2.0, 0.0]))
    assert float(weighted) == pytest.approx(2.0 * 0.125 / 2)
    mse, _ = dqn_loss(q, target, loss_fn="mse")
    assert float(mse) == pytest.approx((0.125 + 2.0) / 2)


def test_n_step_rows_by_hand():
    batch = SampleBatch({"obs": np.arange(4.0)[:, None], "actions": np.zeros(4),
                         "rewards": np.array([1.0, 2.0, 3.0, 4.0]),
                         "new_obs": np.arange(1.0, 5.0)[:, None],
                         "terminateds": np.array([False, False, False, True])})
    out = n_step_rows(batch, 2, 0.5)
    np.testing.assert_allclose(out["rewards"], [1 + 0.5 * 2, 2 + 0.5 * 3, 3 + 0.5 * 4, 4])
    np.testing.assert_array_equal(out["new_obs"][:, 0], [2.0, 3.0, 4.0, 4.0])
    np.testing.assert_array_equal(out["terminateds"], [False, False, True, True])
    np.testing.assert_array_equal(out["n_steps"], [2, 2, 2, 1])
    np.testing.assert_array_equal(out["obs"], batch["obs"])


# -- the policy -------------------------------------------------------------------------
def make_policy(**training):
    config = DQNConfig().environment("CartPole-v1").training(
        model={"fcnet_hiddens": [16]}, hiddens=[8], **training).debugging(seed=0)
    env = gymnasium.make("CartPole-v1")
    return DQNPolicy(env.observation_space, env.action_space, config)


def test_epsilon_greedy_follows_the_global_timestep_carried_by_the_weights():
    learner, runner = make_policy(), make_policy()
    obs = np.zeros((4000, 4), dtype=np.float32)
    greedy = learner.compute_actions(obs, explore=False)[0]
    assert len(set(greedy.tolist())) == 1  # the same obs: the same greedy action
    runner.set_weights(learner.get_weights())  # timestep 0: epsilon 1, uniform actions
    share = np.mean(runner.compute_actions(obs, explore=True)[0] == greedy[0])
    assert 0.45 < share < 0.55
    learner.global_timestep = 10**6  # epsilon 0.02: greedy but for 1% of the actions
    runner.set_weights(learner.get_weights())
    assert runner.global_timestep == 10**6
    share = np.mean(runner.compute_actions(obs, explore=True)[0] == greedy[0])
    assert 0.98 < share < 1.0


def test_target_network_update_copies_or_mixes():
    policy = make_policy()
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(1.0)
    before = [p.clone() for p in policy.target_model.parameters()]
    policy.update_target(tau=0.5)
    for b, online, target in zip(before, policy.model.parameters(),
                                 policy.target_model.parameters()):
        torch.testing.assert_close(target, 0.5 * b + 0.5 * online)
    policy.update_target()
    for online, target in zip(policy.model.parameters(), policy.target_model.parameters()):
        torch.testing.assert_close(target, online)


def test_gradient_steps_fit_a_fixed_batch():
    policy = make_policy(lr=1e-2, double_q=False)
    rng = np.random.default_rng(0)
    batch = SampleBatch({"obs": rng.normal(size=(32, 4)).astype(np.float32),
                         "actions": rng.integers(0, 2, 32), "rewards": np.ones(32, np.float32),
                         "new_obs": rng.normal(size=(32, 4)).astype(np.float32),
                         "terminateds": np.ones(32, bool), "n_steps": np.ones(32, np.int64)})
    first = policy.learn_on_batch(batch)["total_loss"]
    for _ in range(100):
        last = policy.learn_on_batch(batch)["total_loss"]
    assert last < 0.1 * first  # terminated rows: the target is the reward, 1.0


def test_dqn_needs_discrete_actions():
    config = DQNConfig().environment("Pendulum-v1")
    with pytest.raises(ValueError, match="Discrete"):
        config.build()


def test_distributional_settings_are_refused():
    with pytest.raises(ValueError, match="num_atoms"):
        DQNConfig().environment("CartPole-v1").training(num_atoms=51).build()


# -- learning ---------------------------------------------------------------------------
def random_return(episodes: int = 50) -> float:
    env = gymnasium.make("CartPole-v1")
    env.action_space.seed(0)
    total = 0.0
    for i in range(episodes):
        env.reset(seed=i)
        done = False
        while not done:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            total += float(r)
            done = term or trunc
    return total / episodes


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_dqn_clearly_beats_random_on_cartpole():
    algo = (DQNConfig().environment("CartPole-v1").debugging(seed=0)
            .training(model={"fcnet_hiddens": [64], "fcnet_activation": "relu"}, hiddens=[64])
            .build())
    try:
        for _ in range(20):  # 20,000 env steps
            result = algo.train()
        assert result["timesteps_total"] == 20000
        stats = result["info"]["learner"]["default_policy"]["learner_stats"]
        assert stats["cur_epsilon"] == pytest.approx(0.02)
        assert stats["num_target_updates"] == 20000 // 500 - 1  # at 1000 (learning starts), 1500, ..., 20000
        greedy = algo.evaluate()["evaluation"]["episode_reward_mean"]
        baseline = random_return()
        assert baseline < 30  # CartPole's random policy lasts ~22 steps
        assert greedy >= 100 and greedy > 4 * baseline, (greedy, baseline)
    finally:
        algo.stop()


@pytest.mark.timeout(120)
def test_dqn_with_a_runner_actor_learns_and_checkpoints(tmp_path):
    algo = (DQNConfig().environment("CartPole-v1").debugging(seed=1)
            .env_runners(num_env_runners=1)
            .training(model={"fcnet_hiddens": [16]}, hiddens=[16], target_network_update_freq=100,
                      num_steps_sampled_before_learning_starts=100)
            .reporting(min_sample_timesteps_per_iteration=300).build())
    try:
        assert isinstance(algo, DQN)
        result = algo.train()
        stats = result["info"]["learner"]["default_policy"]["learner_stats"]
        assert result["timesteps_total"] >= 300 and stats["num_target_updates"] >= 2
        assert result["info"]["num_env_steps_trained"] > 0
        # the runner acts with the learner's epsilon: it received the global step count
        [runner_t] = algo.env_runner_group.foreach_runner(lambda r: r.policy.global_timestep)
        assert runner_t == result["timesteps_total"]
        path = algo.save(str(tmp_path / "ckpt"))
        obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
        actions = [algo.compute_single_action(o, explore=False) for o in obs]
        target = [p.detach().clone() for p in algo.get_policy().target_model.parameters()]
    finally:
        algo.stop()
    restored = DQN.from_checkpoint(path)
    try:
        assert [restored.compute_single_action(o, explore=False) for o in obs] == actions
        for a, b in zip(target, restored.get_policy().target_model.parameters()):
            torch.testing.assert_close(a, b)
        assert restored.get_policy().global_timestep == result["timesteps_total"]
    finally:
        restored.stop()
