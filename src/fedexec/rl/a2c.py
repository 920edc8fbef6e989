"""A2C: synchronous advantage actor-critic (Mnih et al. 2016, synchronous form).

Each iteration the env runners sample ``train_batch_size`` steps with the current
weights; each trajectory gets advantages in the runner (GAE with ``lambda_``, or
discounted returns minus the value without ``use_gae``); the learner takes one
gradient step per ``microbatch_size`` rows (default: one step on the whole batch)
on::

    loss = -mean(logp(a|s) * A)  +  vf_loss_coeff * 0.5 * mean((V(s) - V_target)^2)
           - entropy_coeff * mean(H(pi(.|s)))

With ``asynchronous=True`` (A3C, see :mod:`fedexec.rl.a3c`) the runners compute
this loss's gradient on their own fragments and the learner applies each gradient
as it arrives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch

from .algorithm import Algorithm
from .config import AlgorithmConfig
from .policy import ActorCriticPolicy
from .sample_batch import SampleBatch

__all__ = ["A2C", "A2CConfig", "A2CPolicy", "a2c_loss"]


class A2CConfig(AlgorithmConfig):
    """A2C's settings (RLlib's classic values): ``lr`` 1e-4, ``train_batch_size``
    500, 2 env runners, ``rollout_fragment_length`` "auto", ``grad_clip`` 40,
    ``use_gae``/``use_critic`` True, ``lambda_`` 1.0, ``vf_loss_coeff`` 0.5,
    ``entropy_coeff`` 0.01, ``microbatch_size`` None (one step on the whole batch),
    ``asynchronous`` False (True: A3C's asynchronous gradient pushes)."""

    renames = {"min_iter_time_s": "min_time_s_per_iteration"}

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or A2C)
        self.lr = 1e-4
        self.train_batch_size = 500
        self.grad_clip = 40.0
        self.use_gae = True
        self.use_critic = True
        self.lambda_ = 1.0
        self.vf_loss_coeff = 0.5
        self.entropy_coeff = 0.01
        self.microbatch_size: int | None = None
        self.asynchronous = False

    def build(self, env: Any = None, logger_creator: Any = None, executor: Any = None) -> Any:
        """The algorithm: A2C, or A3C with ``asynchronous=True``."""
        if self.asynchronous and self.algo_class is A2C:
            from .a3c import A3C

            self.algo_class = A3C
        return super().build(env, logger_creator, executor)

    build_algo = build

    def validate(self) -> None:
        super().validate()
        mb = self.microbatch_size
        if mb is not None and not (isinstance(mb, int) and 0 < mb <= self.train_batch_size):
            raise ValueError(f"microbatch_size must be None or an int in (0, train_batch_size], "
                             f"not {mb!r}")


def a2c_loss(logp: torch.Tensor, advantages: torch.Tensor, values: torch.Tensor,
             value_targets: torch.Tensor, entropy: torch.Tensor, vf_loss_coeff: float,
             entropy_coeff: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss in the module docstring, and its parts."""
    policy_loss = -(logp * advantages.detach()).mean()
    vf_loss = 0.5 * (values - value_targets.detach()).pow(2).mean()
    mean_entropy = entropy.mean()
    total = policy_loss + vf_loss_coeff * vf_loss - entropy_coeff * mean_entropy
    return total, {"policy_loss": float(policy_loss.detach()), "vf_loss": float(vf_loss.detach()),
                   "entropy": float(mean_entropy.detach())}


class A2CPolicy(ActorCriticPolicy):
    """An actor-critic policy with :func:`a2c_loss`."""

    def loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        inputs, values = self.model(batch[SampleBatch.OBS].float())
        dist = self.dist_class(inputs)
        return a2c_loss(dist.logp(batch[SampleBatch.ACTIONS]), batch[SampleBatch.ADVANTAGES],
                        values, batch[SampleBatch.VALUE_TARGETS], dist.entropy(),
                        cfg.vf_loss_coeff, cfg.entropy_coeff)

    def compute_gradients(self, batch: SampleBatch) -> tuple[list[torch.Tensor | None],
                                                             dict[str, float]]:
        """The loss's gradient on ``batch`` (one tensor per parameter, clipped by
        ``grad_clip``) and its stats: what an A3C runner sends to the learner."""
        loss, stats = self.loss(self.to_tensors(batch))
        self.model.zero_grad()
        loss.backward()
        params = list(self.model.parameters())
        clip = self.config.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
        return grads, {**stats, "total_loss": float(loss.detach()), "grad_gnorm": float(norm)}

    def apply_gradients(self, grads: list[torch.Tensor | None]) -> None:
        """One optimizer step with ``grads`` (from :meth:`compute_gradients`)."""
        self.optimizer.zero_grad()
        for param, grad in zip(self.model.parameters(), grads):
            param.grad = None if grad is None else torch.as_tensor(grad).to(param.device)
        self.optimizer.step()


class A2C(Algorithm):
    """Synchronous advantage actor-critic (see the module docstring)."""

    config_class = A2CConfig

    @classmethod
    def get_default_policy_class(cls, config: AlgorithmConfig) -> type:
        return A2CPolicy

    def training_step(self) -> dict[str, Any]:
        cfg = cast(A2CConfig, self.algo_config)
        batch = self.sample()
        stats = self.policy.learn_epochs(batch, 1, cfg.microbatch_size or len(batch),
                                         shuffle=False)
        self.counters["num_env_steps_trained"] += len(batch)
        self.sync_weights()
        return {**stats, "cur_lr": cfg.lr}
