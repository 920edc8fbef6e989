"""DQN (Mnih et al. 2015) with double Q (van Hasselt et al. 2016), the dueling
head (Wang et al. 2016), n-step returns and prioritized replay.

Data flow of one ``training_step``::

    env runners (epsilon-greedy, epsilon from the global step count that rides
    along with the weights) --sample()--> n-step rows --add--> replay buffer
    replay buffer --sample(train_batch_size)--> loss (below) --> Adam step
        --|td_error| + eps--> new priorities
    every target_network_update_freq steps: target <- online (tau=1: a copy)

The loss of a row ``(s, a, R, s', terminated, n)`` (``R`` the n-step discounted
reward, ``n`` the steps it spans)::

    a*     = argmax_a' Q_online(s', a')     (double_q)   or argmax of Q_target
    target = R + gamma^n * (1 - terminated) * Q_target(s', a*)
    loss   = mean_i w_i * huber(Q_online(s_i, a_i) - target_i)

Dueling: ``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from .algorithm import Algorithm
from .config import AlgorithmConfig
from .env import obs_size
from .models import build_mlp
from .policy import TorchPolicy
from .replay_buffer import PrioritizedReplayBuffer, ReplayBuffer
from .sample_batch import SampleBatch
from .schedules import linear_schedule

__all__ = ["DQN", "DQNConfig", "DQNPolicy", "DuelingQModel", "dqn_loss", "dueling_q_values",
           "n_step_rows", "q_targets"]

N_STEPS = "n_steps"
TIMESTEP_KEY = "_global_timestep"


class DQNConfig(AlgorithmConfig):
    """DQN's settings, with RLlib's classic defaults: ``lr`` 5e-4, ``train_batch_size``
    32, ``rollout_fragment_length`` 4 (``"auto"``: 4), 0 env runners (sampling here),
    ``replay_buffer_config`` (prioritized, capacity 50000, alpha 0.6, beta 0.4,
    eps 1e-6; a ``type`` without "Prioritized" is uniform),
    ``num_steps_sampled_before_learning_starts`` 1000, ``target_network_update_freq``
    500 env steps, ``tau`` 1.0, ``double_q``/``dueling`` True, ``hiddens`` [256] (the
    Q heads' layers), ``n_step`` 1, ``exploration_config`` epsilon 1.0 -> 0.02 over
    10000 steps, ``td_error_loss_fn`` "huber", ``grad_clip`` 40,
    ``training_intensity`` None (one update per sampling round; a number: replayed
    rows per sampled step), ``min_sample_timesteps_per_iteration`` 1000."""

    renames = {"learning_starts": "num_steps_sampled_before_learning_starts",
               "timesteps_per_iteration": "min_sample_timesteps_per_iteration",
               "min_iter_time_s": "min_time_s_per_iteration"}

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or DQN)
        self.lr = 5e-4
        self.train_batch_size = 32
        self.rollout_fragment_length = "auto"
        self.num_env_runners = 0
        self.grad_clip = 40.0
        self.adam_epsilon = 1e-8
        self.replay_buffer_config: dict[str, Any] = {
            "type": "MultiAgentPrioritizedReplayBuffer", "capacity": 50000,
            "prioritized_replay_alpha": 0.6, "prioritized_replay_beta": 0.4,
            "prioritized_replay_eps": 1e-6}
        self.num_steps_sampled_before_learning_starts = 1000
        self.target_network_update_freq = 500
        self.tau = 1.0
        self.double_q = True
        self.dueling = True
        self.hiddens: list[int] = [256]
        self.n_step = 1
        self.exploration_config: dict[str, Any] = {
            "type": "EpsilonGreedy", "initial_epsilon": 1.0, "final_epsilon": 0.02,
            "epsilon_timesteps": 10000}
        self.td_error_loss_fn = "huber"
        self.training_intensity: float | None = None
        self.min_sample_timesteps_per_iteration = 1000
        self.num_atoms = 1
        self.noisy = False

    def training(self, **kwargs: Any) -> DQNConfig:
        """DQN's settings (see the class docstring) and the common ones;
        ``replay_buffer_config`` is merged into the current one."""
        if kwargs.get("replay_buffer_config") is not None:
            kwargs["replay_buffer_config"] = {**self.replay_buffer_config,
                                              **kwargs["replay_buffer_config"]}
        self._set(**kwargs)
        return self

    def get_rollout_fragment_length(self) -> int:
        if self.rollout_fragment_length == "auto":
            return 4
        return super().get_rollout_fragment_length()

    def validate(self) -> None:
        super().validate()
        if self.num_atoms != 1 or self.noisy:
            raise ValueError("distributional (num_atoms > 1) and noisy DQN are not implemented "
                             "in fedexec.rl: use num_atoms=1, noisy=False")
        if not (isinstance(self.n_step, int) and self.n_step >= 1):
            raise ValueError(f"n_step must be an int >= 1, not {self.n_step!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], not {self.tau}")

    @property
    def prioritized_replay(self) -> bool:
        return "prioritized" in str(self.replay_buffer_config.get("type", "")).lower()


# -- the maths ---------------------------------------------------------------------------
def dueling_q_values(value: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """``Q = V + A - mean(A)`` (``value`` of shape ``[B]`` or ``[B, 1]``, ``advantages`` ``[B, A]``)."""
    return value.reshape(-1, 1) + advantages - advantages.mean(dim=-1, keepdim=True)


def q_targets(rewards: torch.Tensor, terminateds: torch.Tensor, next_q_target: torch.Tensor,
              next_q_online: torch.Tensor | None, gamma: float,
              n_steps: torch.Tensor | None = None) -> torch.Tensor:
    """The TD targets (see the module docstring); ``next_q_online`` None: plain
    DQN's ``max_a Q_target(s', a)``, else double Q."""
    if next_q_online is None:
        best = next_q_target.max(dim=-1).values
    else:
        best = next_q_target.gather(-1, next_q_online.argmax(dim=-1, keepdim=True)).squeeze(-1)
    discount = gamma if n_steps is None else torch.pow(torch.as_tensor(gamma), n_steps.float())
    return rewards.float() + discount * (1.0 - terminateds.float()) * best


def dqn_loss(q_selected: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None,
             loss_fn: str = "huber") -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, td_error)``: the (importance-weighted) mean Huber or squared TD error."""
    td_error = q_selected - targets.detach()
    if loss_fn == "huber":
        per_row = nn.functional.huber_loss(q_selected, targets.detach(), reduction="none",
                                           delta=1.0)
    elif loss_fn == "mse":
        per_row = 0.5 * td_error.pow(2)
    else:
        raise ValueError(f"td_error_loss_fn must be 'huber' or 'mse', not {loss_fn!r}")
    if weights is not None:
        per_row = per_row * weights
    return per_row.mean(), td_error.detach()


def n_step_rows(batch: SampleBatch, n: int, gamma: float) -> SampleBatch:
    """One trajectory's rows with ``n``-step rewards: row ``t`` gets
    ``R_t = sum_{k<m} gamma^k r_{t+k}``, ``new_obs``/``terminateds`` of step
    ``t+m-1`` and ``n_steps = m``, where ``m = min(n, steps left in the trajectory)``."""
    T = len(batch)
    rewards = batch[SampleBatch.REWARDS].astype(np.float32)
    out = SampleBatch(dict(batch))
    ends = np.minimum(np.arange(T) + n, T) - 1
    returns = np.zeros(T, dtype=np.float32)
    for t in range(T):
        returns[t] = sum(gamma ** k * rewards[t + k] for k in range(ends[t] - t + 1))
    out[SampleBatch.REWARDS] = returns
    out[SampleBatch.NEXT_OBS] = batch[SampleBatch.NEXT_OBS][ends]
    out[SampleBatch.TERMINATEDS] = batch[SampleBatch.TERMINATEDS][ends]
    out[N_STEPS] = (ends - np.arange(T) + 1).astype(np.int64)
    return out


# -- the network -------------------------------------------------------------------------
class DuelingQModel(nn.Module):
    """An MLP trunk (``fcnet_hiddens``) and Q heads: an advantage stream and, with
    ``dueling``, a value stream, each with ``hiddens`` relu layers."""

    def __init__(self, obs_dim: int, num_actions: int, model_config: Mapping[str, Any],
                 hiddens: list[int], dueling: bool) -> None:
        super().__init__()
        self.trunk, size = build_mlp(obs_dim, list(model_config.get("fcnet_hiddens", [256])),
                                     model_config.get("fcnet_activation", "relu"))
        self.advantage, _ = build_mlp(size, hiddens, "relu", num_actions)
        self.value = build_mlp(size, hiddens, "relu", 1)[0] if dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.trunk(obs)
        advantages = self.advantage(features)
        if self.value is None:
            return advantages
        return dueling_q_values(self.value(features), advantages)


# -- the policy --------------------------------------------------------------------------
class DQNPolicy(TorchPolicy):
    """Epsilon-greedy acting on a Q-network, the loss above, and a target network.

    ``global_timestep`` (the env steps sampled by all runners) sets epsilon; the
    learner's value travels to the runners inside the weights.
    """

    def __init__(self, observation_space: Any, action_space: Any, config: Any,
                 device: str = "cpu") -> None:
        from gymnasium import spaces

        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"DQN needs a Discrete action space, not {action_space}: use PPO "
                             "or ES for continuous actions")
        super().__init__(observation_space, action_space, config, device)
        self.target_model = copy.deepcopy(self.model)
        self.target_model.requires_grad_(False)
        self.global_timestep = 0
        explore = dict(config.exploration_config)
        self.epsilon = linear_schedule(float(explore.get("initial_epsilon", 1.0)),
                                       float(explore.get("final_epsilon", 0.02)),
                                       int(explore.get("epsilon_timesteps", 10000)))
        self.last_td_error = np.zeros(0, dtype=np.float32)

    def make_model(self) -> nn.Module:
        return DuelingQModel(obs_size(self.observation_space), int(self.action_space.n),
                             self.config.model, list(self.config.hiddens), self.config.dueling)

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.config.lr,
                                eps=self.config.adam_epsilon)

    def compute_actions(self, obs: np.ndarray, explore: bool = True
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        with torch.no_grad():
            q_values = self.model(self._tensor(obs))
        actions = q_values.argmax(dim=-1).cpu().numpy()
        if explore:
            epsilon = self.epsilon(self.global_timestep)
            random = self.rng.random(len(actions)) < epsilon
            actions = np.where(random, self.rng.integers(0, int(self.action_space.n),
                                                          len(actions)), actions)
        return actions, {}

    def postprocess_trajectory(self, batch: SampleBatch) -> SampleBatch:
        return n_step_rows(batch, int(self.config.n_step), float(self.config.gamma))

    def loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        q = self.model(batch[SampleBatch.OBS].float())
        q_selected = q.gather(-1, batch[SampleBatch.ACTIONS].long().unsqueeze(-1)).squeeze(-1)
        next_obs = batch[SampleBatch.NEXT_OBS].float()
        with torch.no_grad():
            next_q_target = self.target_model(next_obs)
            next_q_online = self.model(next_obs) if cfg.double_q else None
        targets = q_targets(batch[SampleBatch.REWARDS], batch[SampleBatch.TERMINATEDS],
                            next_q_target, next_q_online, cfg.gamma, batch.get(N_STEPS))
        loss, td_error = dqn_loss(q_selected, targets, batch.get("weights"),
                                  cfg.td_error_loss_fn)
        self.last_td_error = td_error.cpu().numpy()
        return loss, {"mean_q": float(q_selected.mean().detach()),
                      "mean_td_error": float(td_error.abs().mean()),
                      "cur_epsilon": self.epsilon(self.global_timestep)}

    def update_target(self, tau: float = 1.0) -> None:
        """``target <- tau * online + (1 - tau) * target`` (tau=1: a copy)."""
        with torch.no_grad():
            for target, online in zip(self.target_model.state_dict().values(),
                                      self.model.state_dict().values()):
                target.mul_(1.0 - tau).add_(tau * online)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {**super().get_weights(), TIMESTEP_KEY: np.asarray(self.global_timestep)}

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        weights = dict(weights)
        if TIMESTEP_KEY in weights:
            self.global_timestep = int(weights.pop(TIMESTEP_KEY))
        super().set_weights(weights)

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "target_model": self.target_model.state_dict(),
                "global_timestep": self.global_timestep}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        if "target_model" in state:
            self.target_model.load_state_dict(state["target_model"])
        self.global_timestep = int(state.get("global_timestep", 0))


# -- the algorithm -----------------------------------------------------------------------
_REPLAY_COLUMNS = (SampleBatch.OBS, SampleBatch.ACTIONS, SampleBatch.REWARDS,
                   SampleBatch.NEXT_OBS, SampleBatch.TERMINATEDS, N_STEPS)


class DQN(Algorithm):
    """Deep Q-learning (see the module docstring)."""

    config_class = DQNConfig

    @classmethod
    def get_default_policy_class(cls, config: AlgorithmConfig) -> type:
        return DQNPolicy

    def setup(self, config: dict[str, Any], **parameters: Any) -> None:
        super().setup(config, **parameters)
        cfg = cast(DQNConfig, self.algo_config)
        replay = cfg.replay_buffer_config
        capacity = int(replay.get("capacity", 50000))
        self.replay_buffer: ReplayBuffer = (
            PrioritizedReplayBuffer(capacity, float(replay.get("prioritized_replay_alpha", 0.6)),
                                    seed=cfg.seed)
            if cfg.prioritized_replay else ReplayBuffer(capacity, seed=cfg.seed))
        self._last_target_update = 0
        self.counters.setdefault("num_target_updates", 0)

    def _updates_per_round(self, sampled: int) -> int:
        intensity = cast(DQNConfig, self.algo_config).training_intensity
        if not intensity:
            return 1
        return max(1, round(sampled * float(intensity) / self.algo_config.train_batch_size))

    def training_step(self) -> dict[str, Any]:
        cfg = cast(DQNConfig, self.algo_config)
        envs = max(1, cfg.num_env_runners) * cfg.num_envs_per_env_runner
        batch = self.sample(cfg.get_rollout_fragment_length() * envs)
        self.replay_buffer.add({k: batch[k] for k in _REPLAY_COLUMNS})
        sampled = self.counters["num_env_steps_sampled"]
        stats: dict[str, Any] = {}
        if sampled >= cfg.num_steps_sampled_before_learning_starts:
            replay = cfg.replay_buffer_config
            for _ in range(self._updates_per_round(len(batch))):
                rows = self.replay_buffer.sample(
                    cfg.train_batch_size, beta=float(replay.get("prioritized_replay_beta", 0.4)))
                indexes = rows.pop("batch_indexes")
                stats = self.policy.learn_on_batch(SampleBatch(rows))
                if isinstance(self.replay_buffer, PrioritizedReplayBuffer):
                    eps = float(replay.get("prioritized_replay_eps", 1e-6))
                    self.replay_buffer.update_priorities(
                        indexes, np.abs(self.policy.last_td_error) + eps)
                self.counters["num_env_steps_trained"] += cfg.train_batch_size
            if sampled - self._last_target_update >= cfg.target_network_update_freq:
                self.policy.update_target(cfg.tau)
                self._last_target_update = sampled
                self.counters["num_target_updates"] += 1
        self.policy.global_timestep = sampled
        self.sync_weights()
        return {**stats, "cur_epsilon": self.policy.epsilon(sampled),
                "replay_buffer_size": len(self.replay_buffer),
                "num_target_updates": self.counters["num_target_updates"]}

    def get_extra_state(self) -> dict[str, Any]:
        return {"last_target_update": self._last_target_update}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._last_target_update = int(state.get("last_target_update", 0))
