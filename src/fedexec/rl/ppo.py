"""PPO: proximal policy optimisation (Schulman et al. 2017), clipped objective.

Per iteration: sample ``train_batch_size`` steps from the env runners (GAE
advantages computed there), standardise the advantages over the batch, run
``num_epochs`` passes of Adam steps over shuffled minibatches of
``minibatch_size``, adapt the KL coefficient, and broadcast the new weights.

Loss per step (``ratio = exp(logp - logp_old)``)::

    surrogate = min(A * ratio, A * clip(ratio, 1 - clip_param, 1 + clip_param))
    vf_loss   = min((V - value_target)^2, vf_clip_param)
    loss      = mean(-surrogate + vf_loss_coeff * vf_loss - entropy_coeff * entropy)
                + kl_coeff * mean(KL(old || new))

``kl_coeff`` is multiplied by 1.5 when the iteration's KL exceeds
``2 * kl_target`` and halved below ``kl_target / 2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .algorithm import Algorithm
from .config import AlgorithmConfig
from .policy import ActorCriticPolicy
from .sample_batch import SampleBatch

__all__ = ["PPO", "PPOConfig", "PPOTorchPolicy", "clipped_surrogate"]


class PPOConfig(AlgorithmConfig):
    """PPO's settings (RLlib's classic defaults): ``lr`` 5e-5, ``train_batch_size``
    4000, ``minibatch_size`` 128, ``num_epochs`` 30, ``lambda_`` 1.0, ``clip_param``
    0.3, ``vf_clip_param`` 10, ``vf_loss_coeff`` 1.0, ``entropy_coeff`` 0,
    ``kl_coeff`` 0.2, ``kl_target`` 0.01, ``use_gae``/``use_critic`` True."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or PPO)
        self.lr = 5e-5
        self.train_batch_size = 4000
        self.minibatch_size = 128
        self.num_epochs = 30
        self.shuffle_sequences = True
        self.lambda_ = 1.0
        self.use_gae = True
        self.use_critic = True
        self.kl_coeff = 0.2
        self.kl_target = 0.01
        self.vf_loss_coeff = 1.0
        self.entropy_coeff = 0.0
        self.clip_param = 0.3
        self.vf_clip_param = 10.0

    def validate(self) -> None:
        super().validate()
        if self.minibatch_size > self.train_batch_size:
            raise ValueError(f"minibatch_size ({self.minibatch_size}) must not exceed "
                             f"train_batch_size ({self.train_batch_size})")
        if self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, not {self.num_epochs}")


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      clip_param: float) -> torch.Tensor:
    """PPO's per-step clipped surrogate objective (to maximise)."""
    ratio = torch.exp(logp - old_logp)
    return torch.min(advantages * ratio,
                     advantages * torch.clamp(ratio, 1.0 - clip_param, 1.0 + clip_param))


class PPOTorchPolicy(ActorCriticPolicy):
    """The actor-critic policy with PPO's loss and an adaptive KL coefficient."""

    def __init__(self, observation_space: Any, action_space: Any, config: Any,
                 device: str = "cpu") -> None:
        super().__init__(observation_space, action_space, config, device)
        self.kl_coeff = float(config.kl_coeff)

    def loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        inputs, values = self.model(batch[SampleBatch.OBS])
        dist = self.dist_class(inputs)
        old_dist = self.dist_class(batch[SampleBatch.ACTION_DIST_INPUTS])
        surrogate = clipped_surrogate(dist.logp(batch[SampleBatch.ACTIONS]),
                                      batch[SampleBatch.ACTION_LOGP],
                                      batch[SampleBatch.ADVANTAGES], cfg.clip_param)
        kl = old_dist.kl(dist).mean()
        entropy = dist.entropy().mean()
        if cfg.use_critic:
            vf_err = (values - batch[SampleBatch.VALUE_TARGETS]) ** 2
            vf_loss = torch.clamp(vf_err, 0.0, cfg.vf_clip_param).mean()
        else:
            vf_loss = torch.zeros((), device=values.device)
        total = (-surrogate.mean() + cfg.vf_loss_coeff * vf_loss
                 - cfg.entropy_coeff * entropy)
        if self.kl_coeff > 0:
            total = total + self.kl_coeff * kl
        return total, {"policy_loss": float(-surrogate.mean().detach()),
                       "vf_loss": float(vf_loss.detach()), "kl": float(kl.detach()),
                       "entropy": float(entropy.detach())}

    def update_kl(self, sampled_kl: float) -> None:
        """Adapt ``kl_coeff`` to the iteration's mean KL."""
        if sampled_kl > 2.0 * self.config.kl_target:
            self.kl_coeff *= 1.5
        elif sampled_kl < 0.5 * self.config.kl_target:
            self.kl_coeff *= 0.5

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "kl_coeff": self.kl_coeff}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.kl_coeff = float(state.get("kl_coeff", self.kl_coeff))


class PPO(Algorithm):
    """Proximal policy optimisation (see the module docstring)."""

    config_class = PPOConfig

    @classmethod
    def get_default_policy_class(cls, config: AlgorithmConfig) -> type:
        return PPOTorchPolicy

    def training_step(self) -> dict[str, Any]:
        cfg = self.algo_config
        batch = self.sample()
        adv = batch[SampleBatch.ADVANTAGES]
        batch[SampleBatch.ADVANTAGES] = (adv - adv.mean()) / max(1e-4, float(adv.std()))
        stats = self.policy.learn_epochs(batch, cfg.num_epochs, cfg.minibatch_size,
                                         shuffle=cfg.shuffle_sequences, rng=self.rng)
        self.policy.update_kl(stats.get("kl", 0.0))
        self.counters["num_env_steps_trained"] += len(batch)
        self.sync_weights()
        return {**stats, "cur_kl_coeff": self.policy.kl_coeff, "cur_lr": cfg.lr}
