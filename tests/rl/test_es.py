"""ES: centered ranks, the gradient estimate and Adam on tiny cases and a quadratic,
the shared noise table read from the object store by two runners, and learning."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gymnasium = pytest.importorskip("gymnasium")

from fedexec.rl import ESConfig  # noqa: E402
from fedexec.rl.es import ES, Adam, centered_ranks, create_noise, es_gradient  # noqa: E402


def test_centered_ranks_by_hand():
    ranks = centered_ranks(np.array([[3.0, 1.0], [2.0, 10.0]]))
    np.testing.assert_allclose(ranks, [[1 / 6, -0.5], [-1 / 6, 0.5]], rtol=1e-6)
    # only the order counts: an outlier weighs what any other best return weighs
    np.testing.assert_allclose(centered_ranks(np.array([1.0, 2.0, 1e9])), [-0.5, 0.0, 0.5])
    assert centered_ranks(np.array([7.0])).tolist() == [0.0]


def test_es_gradient_by_hand():
    noise = np.array([1.0, 0.0, 0.0, 1.0, 2.0], dtype=np.float32)
    # pair 0 uses eps = noise[0:2] = (1, 0), pair 1 eps = noise[2:4] = (0, 1)
    returns = np.array([[4.0, 1.0],
                        [2.0, 3.0]])
    ranks = centered_ranks(returns)  # 4 -> 0.5, 1 -> -0.5, 2 -> -1/6, 3 -> 1/6
    g = es_gradient(noise, np.array([0, 2]), returns, dim=2)
    expected = ((ranks[0, 0] - ranks[0, 1]) * np.array([1.0, 0.0])
                + (ranks[1, 0] - ranks[1, 1]) * np.array([0.0, 1.0])) / 4
    np.testing.assert_allclose(g, expected, rtol=1e-6)
    np.testing.assert_allclose(g, [0.25, -1 / 12], rtol=1e-6)


def test_adam_first_step_is_stepsize_against_the_gradients_sign():
    opt = Adam(3, stepsize=0.1)
    theta, ratio = opt.update(np.ones(3, np.float32), np.array([2.0, -0.5, 1e-3]))
    np.testing.assert_allclose(theta, [0.9, 1.1, 0.9], rtol=1e-4)
    assert ratio == pytest.approx(0.1, rel=1e-3)


def quadratic_returns(theta, noise, offsets, sigma, center):
    dim = len(theta)
    out = []
    for offset in offsets:
        eps = noise[offset:offset + dim]
        out.append([-np.sum((theta + sigma * eps - center) ** 2),
                    -np.sum((theta - sigma * eps - center) ** 2)])
    return np.array(out)


def test_es_estimate_points_uphill_on_a_quadratic_and_adam_climbs_it():
    """f(theta) = -|theta - c|^2: the estimate is aligned with the true gradient
    2 (c - theta), and ES steps with Adam reach c."""
    rng = np.random.default_rng(0)
    dim, sigma = 6, 0.05
    noise = create_noise(100_000, seed=1)
    center = rng.normal(size=dim)
    theta = np.zeros(dim, dtype=np.float32)
    offsets = rng.integers(0, len(noise) - dim + 1, size=500)
    g = es_gradient(noise, offsets, quadratic_returns(theta, noise, offsets, sigma, center), dim)
    cosine = g @ center / (np.linalg.norm(g) * np.linalg.norm(center))
    assert cosine > 0.9

    opt = Adam(dim, stepsize=0.05)
    start = np.linalg.norm(theta - center)
    for _ in range(200):
        offsets = rng.integers(0, len(noise) - dim + 1, size=50)
        g = es_gradient(noise, offsets,
                        quadratic_returns(theta, noise, offsets, sigma, center), dim)
        theta, _ = opt.update(theta, -g)
    assert np.linalg.norm(theta - center) < 0.1 * start


def test_noise_table_is_seeded_float32():
    a, b = create_noise(1000, 3), create_noise(1000, 3)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert abs(a.mean()) < 0.1 and abs(a.std() - 1) < 0.1


def small_config(seed=0, runners=2, **training):
    settings = {"noise_size": 2_000_000, "episodes_per_batch": 50, "train_batch_size": 2000,
                "model": {"fcnet_hiddens": [32]}, **training}
    return (ESConfig().environment("CartPole-v1").debugging(seed=seed)
            .env_runners(num_env_runners=runners).training(**settings))


@pytest.mark.timeout(150)
def test_two_runners_read_the_noise_table_from_the_object_store(tmp_path):
    algo = small_config(seed=3, episodes_per_batch=20, train_batch_size=400).build()
    try:
        assert isinstance(algo, ES) and algo.noise_ref is not None
        result = algo.train()
        stats = result["info"]["learner"]["default_policy"]["learner_stats"]
        assert stats["episodes_this_iter"] >= 20 and result["timesteps_total"] >= 400
        # each runner holds the table it read through the driver's one ref, and it is
        # the driver's table (not one the runner made itself)
        seen = algo.env_runner_group.foreach_runner(
            lambda r: (r._es_noise[0], float(r._es_noise[1][::997].sum()), r.pid()))
        assert len(seen) == 2 and len({pid for _, _, pid in seen}) == 2
        for ref_id, checksum, _ in seen:
            assert ref_id == algo.noise_ref.id
            assert checksum == pytest.approx(float(algo.noise[::997].sum()), rel=1e-6)
        # the runners never made a noise table: the first is still the one they read
        algo.train()
        again = algo.env_runner_group.foreach_runner(lambda r: r._es_noise[0])
        assert again == [algo.noise_ref.id] * 2
        path = algo.save(str(tmp_path / "es"))
        theta = algo.get_policy().get_flat()
        adam_t = algo.get_policy().es_optimizer.t
    finally:
        algo.stop()
    restored = ES.from_checkpoint(path)
    try:
        np.testing.assert_array_equal(restored.get_policy().get_flat(), theta)
        assert restored.get_policy().es_optimizer.t == adam_t == 2
    finally:
        restored.stop()


@pytest.mark.timeout(60)
def test_es_without_runner_actors_samples_here():
    algo = small_config(runners=0, episodes_per_batch=10, train_batch_size=200,
                        noise_size=100_000).build()
    try:
        assert algo.noise_ref is None and algo.env_runner_group.local_runner is not None
        theta = algo.get_policy().get_flat()
        result = algo.train()
        assert result["timesteps_total"] >= 200
        assert np.isfinite(result["episode_reward_mean"])
        assert not np.array_equal(algo.get_policy().get_flat(), theta)
    finally:
        algo.stop()


def test_noise_table_smaller_than_the_policy_is_refused():
    with pytest.raises(ValueError, match="noise_size"):
        small_config(runners=0, noise_size=100).build()


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_es_runs_and_improves_on_cartpole():
    algo = small_config(seed=0).build()
    try:
        first = algo.train()
        for _ in range(3):
            result = algo.train()
        greedy = algo.evaluate()["evaluation"]["episode_reward_mean"]
        assert result["episode_reward_mean"] > first["episode_reward_mean"]
        assert greedy > max(100.0, 2 * first["episode_reward_mean"]), (first, greedy)
    finally:
        algo.stop()
