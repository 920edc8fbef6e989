"""The maths of fedexec.rl on tiny cases computed by hand: discounted sums, GAE,
PPO's clipped objective, the running mean/std filter, the action distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedexec.rl.filters import MeanStdFilter, RunningStat
from fedexec.rl.models import Categorical, DiagGaussian
from fedexec.rl.postprocessing import compute_advantages, compute_gae, discount_cumsum
from fedexec.rl.ppo import clipped_surrogate
from fedexec.rl.sample_batch import SampleBatch, concat_samples


def test_discount_cumsum_by_hand():
    out = discount_cumsum(np.array([1.0, 2.0, 3.0]), 0.5)
    # y2 = 3; y1 = 2 + 0.5*3 = 3.5; y0 = 1 + 0.5*3.5 = 2.75
    assert out.tolist() == pytest.approx([2.75, 3.5, 3.0])


def test_gae_by_hand():
    rewards = np.array([1.0, 0.0, 2.0])
    values = np.array([0.5, 1.0, 1.5])
    gamma, lam, last_r = 0.9, 0.8, 2.0
    # deltas: d0 = 1 + .9*1.0 - .5 = 1.4; d1 = 0 + .9*1.5 - 1 = .35; d2 = 2 + .9*2 - 1.5 = 2.3
    # advantages (gamma*lambda = .72): a2 = 2.3; a1 = .35 + .72*2.3 = 2.006;
    # a0 = 1.4 + .72*2.006 = 2.84432
    adv, targets = compute_gae(rewards, values, last_r, gamma, lam)
    assert adv.tolist() == pytest.approx([2.84432, 2.006, 2.3], rel=1e-5)
    assert targets.tolist() == pytest.approx([3.34432, 3.006, 3.8], rel=1e-5)


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value():
    rewards = np.array([1.0, 1.0, 1.0, 1.0])
    values = np.array([0.3, -0.2, 0.7, 0.1])
    adv, targets = compute_gae(rewards, values, 0.0, 0.99, 1.0)
    returns = [sum(0.99**k for k in range(4 - t)) for t in range(4)]
    assert targets.tolist() == pytest.approx(returns, rel=1e-5)
    assert adv.tolist() == pytest.approx((np.array(returns) - values).tolist(), rel=1e-5)


def test_compute_advantages_without_gae_bootstraps_from_last_r():
    batch = SampleBatch(rewards=np.array([1.0, 1.0], dtype=np.float32),
                        vf_preds=np.array([0.5, 0.25], dtype=np.float32))
    compute_advantages(batch, last_r=10.0, gamma=0.5, use_gae=False)
    # R1 = 1 + .5*10 = 6; R0 = 1 + .5*6 = 4
    assert batch["value_targets"].tolist() == pytest.approx([4.0, 6.0])
    assert batch["advantages"].tolist() == pytest.approx([3.5, 5.75])


def test_ppo_clipped_surrogate_by_hand():
    old_logp = torch.log(torch.tensor([0.5, 0.5, 0.5, 0.5]))
    new_p = torch.tensor([0.8, 0.8, 0.2, 0.2])  # ratios 1.6, 1.6, 0.4, 0.4
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    out = clipped_surrogate(torch.log(new_p), old_logp, adv, clip_param=0.2)
    # A>0, r=1.6: min(1.6, 1.2) = 1.2; A<0, r=1.6: min(-1.6, -1.2) = -1.6
    # A>0, r=0.4: min(0.4, 0.8) = 0.4;  A<0, r=0.4: min(-0.4, -0.8) = -0.8
    assert out.tolist() == pytest.approx([1.2, -1.6, 0.4, -0.8], rel=1e-5)


def test_ppo_clipped_surrogate_has_no_gradient_where_clipped():
    logp = torch.log(torch.tensor([0.8, 0.2])).requires_grad_()
    out = clipped_surrogate(logp, torch.log(torch.tensor([0.5, 0.5])),
                            torch.tensor([1.0, 1.0]), clip_param=0.2)
    out.sum().backward()
    assert logp.grad is not None
    assert logp.grad[0].item() == 0.0  # ratio 1.6 clipped at 1.2: constant
    assert logp.grad[1].item() == pytest.approx(0.4)  # d(ratio)/d(logp) = ratio


def test_running_stats_merged_from_pieces_equal_the_whole():
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(300, 4))
    whole, a, b = RunningStat((4,)), RunningStat((4,)), RunningStat((4,))
    for row in data:
        whole.push(row)
    for row in data[:100]:
        a.push(row)
    for row in data[100:]:
        b.push(row)
    a.merge(b)
    assert a.n == 300
    np.testing.assert_allclose(a.mean, data.mean(axis=0))
    np.testing.assert_allclose(a.std, data.std(axis=0, ddof=1))
    np.testing.assert_allclose(whole.std, a.std)


def test_mean_std_filter_sync_through_deltas():
    rng = np.random.default_rng(1)
    driver, r1, r2 = MeanStdFilter((2,)), MeanStdFilter((2,)), MeanStdFilter((2,))
    seen = rng.normal(5.0, 3.0, size=(200, 2))
    for row in seen[:120]:
        r1(row)
    for row in seen[120:]:
        r2(row)
    driver.merge_delta(r1.take_delta())
    driver.merge_delta(r2.take_delta())
    np.testing.assert_allclose(driver.stat.mean, seen.mean(axis=0))
    r1.set_state(driver.get_state())
    out = r1(np.array([5.0, 5.0]), update=False)
    expected = (5.0 - seen.mean(axis=0)) / (seen.std(axis=0, ddof=1) + 1e-8)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert r1.take_delta()["n"] == 0


def test_numpy_acting_matches_torch_log_probs():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 3))
    actions, logp = Categorical.sample_numpy(logits, True, rng)
    expected = torch.distributions.Categorical(logits=torch.tensor(logits)).log_prob(
        torch.tensor(actions))
    np.testing.assert_allclose(logp, expected.numpy(), rtol=1e-6)
    assert set(actions.tolist()) == {0, 1, 2}
    assert Categorical.sample_numpy(logits, False, rng)[0].tolist() == \
        logits.argmax(axis=1).tolist()
    inputs = rng.normal(size=(64, 4))
    actions, logp = DiagGaussian.sample_numpy(inputs, True, rng)
    dist = DiagGaussian(torch.tensor(inputs))
    np.testing.assert_allclose(logp, dist.logp(torch.tensor(actions, dtype=torch.float64))
                               .numpy(), rtol=1e-4)


def test_sample_batch_minibatches_and_episodes():
    batch = SampleBatch(eps_id=np.array([7, 7, 7, 9, 9, 4]), x=np.arange(6))
    assert [b["x"].tolist() for b in batch.split_by_episode()] == [[0, 1, 2], [3, 4], [5]]
    sizes = [len(m) for m in batch.minibatches(4, rng=np.random.default_rng(0))]
    assert sizes == [4, 2]
    assert sorted(np.concatenate([m["x"] for m in batch.minibatches(
        4, rng=np.random.default_rng(0))]).tolist()) == list(range(6))
    assert len(concat_samples([batch, batch.slice(0, 2)])) == 8
