"""Returns and advantages of one trajectory: discounted sums and GAE.

For a trajectory ``r_0..r_{T-1}`` with value predictions ``V_0..V_{T-1}`` and
``last_r`` (the value of the state after the last step: 0 when the episode
terminated, ``V(s_T)`` when it was truncated or cut by the fragment's end):

    delta_t       = r_t + gamma * V_{t+1} - V_t          (V_T = last_r)
    advantage_t   = sum_k (gamma * lambda)^k * delta_{t+k}     (GAE, Schulman et al. 2016)
    value_target_t = advantage_t + V_t

Without GAE (``use_gae=False``) the advantage is the discounted return
``R_t = r_t + gamma * R_{t+1}`` (``R_T = last_r``), minus ``V_t`` when
``use_critic``.
"""

from __future__ import annotations

import numpy as np

from .sample_batch import SampleBatch

__all__ = ["compute_advantages", "compute_gae", "discount_cumsum"]


def discount_cumsum(x: np.ndarray, gamma: float) -> np.ndarray:
    """``y_t = sum_k gamma^k x_{t+k}`` (computed backwards, in float32)."""
    out = np.zeros(len(x), dtype=np.float32)
    running = 0.0
    for t in range(len(x) - 1, -1, -1):
        running = float(x[t]) + gamma * running
        out[t] = running
    return out


def compute_gae(rewards: np.ndarray, vf_preds: np.ndarray, last_r: float, gamma: float,
                lambda_: float) -> tuple[np.ndarray, np.ndarray]:
    """``(advantages, value_targets)`` of one trajectory (see the module docstring)."""
    values = np.append(np.asarray(vf_preds, dtype=np.float32), np.float32(last_r))
    deltas = np.asarray(rewards, dtype=np.float32) + gamma * values[1:] - values[:-1]
    advantages = discount_cumsum(deltas, gamma * lambda_)
    return advantages, (advantages + values[:-1]).astype(np.float32)


def compute_advantages(batch: SampleBatch, last_r: float, gamma: float = 0.99,
                       lambda_: float = 1.0, use_gae: bool = True,
                       use_critic: bool = True) -> SampleBatch:
    """``batch`` (one trajectory) with ``advantages`` and ``value_targets`` added."""
    rewards = batch[SampleBatch.REWARDS]
    if use_gae:
        advantages, targets = compute_gae(rewards, batch[SampleBatch.VF_PREDS], last_r, gamma,
                                          lambda_)
    else:
        returns = discount_cumsum(np.append(rewards, np.float32(last_r)), gamma)[:-1]
        targets = returns
        advantages = returns - batch[SampleBatch.VF_PREDS] if use_critic else returns
    batch[SampleBatch.ADVANTAGES] = advantages.astype(np.float32)
    batch[SampleBatch.VALUE_TARGETS] = targets.astype(np.float32)
    return batch
