"""Replay buffers (uniform and prioritized) and schedules, on tiny cases."""

from __future__ import annotations

import numpy as np
import pytest

from fedexec.rl.replay_buffer import PrioritizedReplayBuffer, ReplayBuffer, SumTree
from fedexec.rl.schedules import PiecewiseSchedule, linear_schedule


def rows(start: int, n: int) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + n)
    return {"obs": np.stack([ids, -ids], axis=1).astype(np.float32), "actions": ids % 2,
            "rewards": ids.astype(np.float32)}


def test_ring_keeps_the_last_capacity_rows_and_their_columns_together():
    buf = ReplayBuffer(5, seed=0)
    buf.add(rows(0, 3))
    buf.add(rows(3, 4))  # 7 rows into 5 slots: 0 and 1 are overwritten
    assert len(buf) == 5 and buf.num_added == 7
    out = buf.sample(400)
    assert set(out["rewards"].tolist()) == {2.0, 3.0, 4.0, 5.0, 6.0}
    np.testing.assert_array_equal(out["obs"][:, 0], out["rewards"])
    np.testing.assert_array_equal(out["obs"][:, 1], -out["rewards"])
    np.testing.assert_array_equal(out["actions"], out["rewards"].astype(int) % 2)


def test_a_batch_larger_than_the_buffer_keeps_its_tail():
    buf = ReplayBuffer(4, seed=0)
    buf.add(rows(0, 10))
    assert sorted(set(buf.sample(200)["rewards"].tolist())) == [6.0, 7.0, 8.0, 9.0]


def test_uniform_sampling_frequencies():
    buf = ReplayBuffer(4, seed=1)
    buf.add(rows(0, 4))
    counts = np.bincount(buf.sample(40000)["rewards"].astype(int), minlength=4) / 40000
    np.testing.assert_allclose(counts, 0.25, atol=0.01)


def test_empty_buffer_and_bad_capacity_raise():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3).sample(1)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)


def test_sum_tree_sums_and_finds_by_prefix_mass():
    tree = SumTree(5)
    tree.set(np.arange(5), np.array([1.0, 2.0, 3.0, 4.0, 0.0]))
    assert tree.total == 10.0
    # prefix ranges: [0,1) -> 0, [1,3) -> 1, [3,6) -> 2, [6,10) -> 3
    assert [tree.find(m) for m in (0.0, 0.99, 1.0, 2.9, 3.0, 5.99, 6.0, 9.99)] == \
        [0, 0, 1, 1, 2, 2, 3, 3]


def test_prioritized_sampling_follows_priority_to_the_alpha():
    buf = PrioritizedReplayBuffer(4, alpha=0.5, seed=2)
    buf.add(rows(0, 4))
    buf.update_priorities(np.arange(4), np.array([1.0, 4.0, 9.0, 16.0]))
    out = buf.sample(40000, beta=1.0)
    freq = np.bincount(out["rewards"].astype(int), minlength=4) / 40000
    expected = np.array([1.0, 2.0, 3.0, 4.0]) / 10.0  # sqrt of the priorities, normalised
    np.testing.assert_allclose(freq, expected, atol=0.01)
    # importance weights (N * P(i))^-beta / max_j: with beta=1, P_min / P(i)
    for i in range(4):
        w = out["weights"][out["rewards"] == i]
        np.testing.assert_allclose(w, expected[0] / expected[i], rtol=1e-5)
    np.testing.assert_array_equal(out["batch_indexes"], out["rewards"].astype(int))


def test_prioritized_new_rows_get_the_highest_priority_seen():
    buf = PrioritizedReplayBuffer(8, alpha=1.0, seed=3)
    buf.add(rows(0, 2))
    buf.update_priorities(np.array([0, 1]), np.array([5.0, 1.0]))
    buf.add(rows(2, 1))  # gets priority 5
    freq = np.bincount(buf.sample(30000)["rewards"].astype(int), minlength=3) / 30000
    np.testing.assert_allclose(freq, [5 / 11, 1 / 11, 5 / 11], atol=0.015)
    with pytest.raises(ValueError, match="> 0"):
        buf.update_priorities(np.array([0]), np.array([0.0]))


def test_prioritized_state_round_trip_samples_the_same():
    a = PrioritizedReplayBuffer(6, seed=4)
    a.add(rows(0, 5))
    a.update_priorities(np.arange(5), np.arange(1.0, 6.0))
    b = PrioritizedReplayBuffer(6, seed=4)
    b.set_state(a.get_state())
    np.testing.assert_array_equal(a.sample(50)["rewards"], b.sample(50)["rewards"])


def test_piecewise_and_linear_schedules():
    eps = linear_schedule(1.0, 0.02, 10000)
    assert eps(0) == 1.0
    assert eps(5000) == pytest.approx(0.51)
    assert eps(10000) == pytest.approx(0.02) and eps(10**6) == pytest.approx(0.02)
    sched = PiecewiseSchedule([(0, 0.0), (10, 1.0), (20, 0.5)])
    assert [sched(t) for t in (-5, 5, 10, 15, 30)] == [0.0, 0.5, 1.0, 0.75, 0.5]
    with pytest.raises(ValueError, match="increase"):
        PiecewiseSchedule([(5, 1.0), (5, 2.0)])
