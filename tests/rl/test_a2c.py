"""A2C and A3C: the loss by hand, the gradient path A3C's runners use, and
learning on CartPole (synchronous, and asynchronous with two runner actors)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gymnasium = pytest.importorskip("gymnasium")

from fedexec.rl import A2CConfig, A3CConfig  # noqa: E402
from fedexec.rl.a2c import A2C, A2CPolicy, a2c_loss  # noqa: E402
from fedexec.rl.a3c import A3C  # noqa: E402
from fedexec.rl.sample_batch import SampleBatch  # noqa: E402


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_a2c_loss_by_hand():
    total, stats = a2c_loss(logp=t([-1.0, -2.0]), advantages=t([2.0, -1.0]), values=t([0.0, 1.0]),
                            value_targets=t([1.0, 1.0]), entropy=t([0.5, 0.7]),
                            vf_loss_coeff=0.5, entropy_coeff=0.01)
    # policy: -mean(logp * A) = -mean(-2, 2) = 0; value: 0.5 * mean(1, 0) = 0.25
    assert stats["policy_loss"] == pytest.approx(0.0)
    assert stats["vf_loss"] == pytest.approx(0.25)
    assert stats["entropy"] == pytest.approx(0.6)
    assert float(total) == pytest.approx(0.0 + 0.5 * 0.25 - 0.01 * 0.6)


def make_policy(**training):
    config = (A2CConfig().environment("CartPole-v1").debugging(seed=0)
              .training(model={"fcnet_hiddens": [16]}, **training))
    env = gymnasium.make("CartPole-v1")
    return A2CPolicy(env.observation_space, env.action_space, config)


def toy_batch(n=64):
    rng = np.random.default_rng(0)
    return SampleBatch({"obs": rng.normal(size=(n, 4)).astype(np.float32),
                        "actions": np.ones(n, np.int64),
                        "advantages": np.ones(n, np.float32),
                        "value_targets": np.full(n, 2.0, np.float32)})


def test_a_positive_advantage_makes_its_action_likelier_and_fits_the_value():
    policy = make_policy(lr=1e-2, entropy_coeff=0.0)
    batch = toy_batch()
    obs = torch.as_tensor(batch["obs"])

    def prob_and_value():
        with torch.no_grad():
            logits, values = policy.model(obs)
        return torch.softmax(logits, -1)[:, 1].mean().item(), values.mean().item()

    p0, v0 = prob_and_value()
    for _ in range(50):
        policy.learn_on_batch(batch)
    p1, v1 = prob_and_value()
    assert p1 > p0 + 0.2
    assert abs(v1 - 2.0) < abs(v0 - 2.0) / 2


def test_runner_gradients_applied_by_the_learner_equal_a_learner_step():
    """A3C's path (gradient on a runner, step on the learner) is A2C's step."""
    batch = toy_batch()
    runner, learner, reference = make_policy(), make_policy(), make_policy()
    learner.set_weights(runner.get_weights())
    reference.set_weights(runner.get_weights())
    grads, stats = runner.compute_gradients(batch)
    assert set(stats) >= {"policy_loss", "vf_loss", "entropy", "total_loss", "grad_gnorm"}
    learner.apply_gradients(grads)
    reference.learn_on_batch(batch)
    for a, b in zip(learner.model.parameters(), reference.model.parameters()):
        torch.testing.assert_close(a, b)


def test_a3c_config_is_a2c_asynchronous():
    assert A3CConfig().asynchronous is True
    assert A3CConfig().lr == A2CConfig().lr
    config = A2CConfig().environment("CartPole-v1").training(asynchronous=True)
    assert config.to_dict()["asynchronous"] is True
    with pytest.raises(ValueError, match="microbatch_size"):
        A2CConfig().environment("CartPole-v1").training(microbatch_size=10**6).build()


def improves(algo, iterations):
    first = algo.train()["episode_reward_mean"]
    for _ in range(iterations - 1):
        result = algo.train()
    return first, result


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_a2c_runs_and_improves_on_cartpole():
    algo = (A2CConfig().environment("CartPole-v1").debugging(seed=0)
            .env_runners(num_env_runners=0)
            .training(lr=3e-3, train_batch_size=200, model={"fcnet_hiddens": [64]}).build())
    try:
        assert type(algo) is A2C
        first, last = improves(algo, 100)  # 20,000 env steps, 100 gradient steps
        assert last["timesteps_total"] == 20000
        assert last["episode_reward_mean"] > max(60.0, 2 * first), (first, last)
    finally:
        algo.stop()


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_a3c_runners_push_gradients_asynchronously_and_it_improves():
    algo = (A3CConfig().environment("CartPole-v1").debugging(seed=0)
            .env_runners(num_env_runners=2, rollout_fragment_length=20)
            .training(lr=3e-3, train_batch_size=400, model={"fcnet_hiddens": [64]}).build())
    try:
        assert type(algo) is A3C
        first, last = improves(algo, 50)
        stats = last["info"]["learner"]["default_policy"]["learner_stats"]
        # every gradient came from a runner actor, one per 20-step fragment, from both
        assert set(algo.gradient_pushes) == {0, 1}
        assert min(algo.gradient_pushes.values()) >= 50
        assert stats["num_gradient_pushes"] == last["timesteps_total"] // 20
        assert last["episode_reward_mean"] > max(60.0, 2 * first), (first, last)
    finally:
        algo.stop()


@pytest.mark.timeout(120)
def test_a2c_built_asynchronous_is_a3c_and_survives_a_checkpoint(tmp_path):
    algo = (A2CConfig().environment("CartPole-v1").debugging(seed=2)
            .training(asynchronous=True, train_batch_size=40, model={"fcnet_hiddens": [8]})
            .env_runners(num_env_runners=0, rollout_fragment_length=20).build())
    try:
        assert type(algo) is A3C
        result = algo.train()
        assert result["timesteps_total"] == 40 and algo.gradient_pushes == {0: 2}
        path = algo.save(str(tmp_path / "a3c"))
        obs = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
        actions = [algo.compute_single_action(o, explore=False) for o in obs]
    finally:
        algo.stop()
    from fedexec.rl import Algorithm

    restored = Algorithm.from_checkpoint(path)
    try:
        assert type(restored).__name__ == "A3C"
        assert [restored.compute_single_action(o, explore=False) for o in obs] == actions
    finally:
        restored.stop()
