"""``EnvRunner``: steps a vector of envs with a copy of the policy.

One runs as an actor per ``num_env_runners`` (or in the driver when there are
none). Each holds ``num_envs_per_env_runner`` gymnasium envs and steps them in
lock-step, one batched forward pass of the policy per step::

    set_state(weights, filter_state)   <- once per iteration, weights read from the
                                          object store (one put by the driver)
    sample() -> (SampleBatch, metrics)  rollout_fragment_length steps per env;
        each piece of trajectory (one env, one episode, within the fragment) goes
        through policy.postprocess_trajectory (e.g. GAE), then all are
        concatenated; metrics: finished episodes' returns/lengths, env steps,
        the observation filter's delta
    sample_episodes(n, explore)         whole episodes, for evaluation
    apply(fn, *args)                    fn(runner, *args): algorithms' own work (ES)

Observations are preprocessed (flat float32) and filtered as they arrive;
episodes continue across ``sample()`` calls.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .env import EnvContext, preprocess_obs, to_env_action
from .filters import make_filter
from .sample_batch import SampleBatch, concat_samples

__all__ = ["EnvRunner"]

_STEP_KEYS = (SampleBatch.OBS, SampleBatch.ACTIONS, SampleBatch.REWARDS, SampleBatch.NEXT_OBS,
              SampleBatch.TERMINATEDS, SampleBatch.TRUNCATEDS, SampleBatch.EPS_ID, SampleBatch.T)


class EnvRunner:
    """Envs plus a policy copy (see the module docstring).

    Args:
        config: the algorithm's config.
        policy_class: the :class:`~fedexec.rl.policy.TorchPolicy` subclass to act with.
        env_creator: ``creator(EnvContext) -> env``.
        worker_index: 0 for the driver's runner, 1.. for remote ones.
        num_workers: how many remote runners there are.
        recreated: True when this runner replaces one that died.
    """

    def __init__(self, config: Any, policy_class: type, env_creator: Callable[..., Any],
                 worker_index: int = 0, num_workers: int = 0, recreated: bool = False) -> None:
        import torch

        self.config = config
        self.worker_index = worker_index
        if worker_index > 0:
            torch.set_num_threads(1)  # one CPU per runner
        base_seed = None if config.seed is None else int(config.seed) + 1000 * worker_index
        if base_seed is not None:
            torch.manual_seed(base_seed)
        self.envs = [env_creator(EnvContext(config.env_config, worker_index, num_workers, i,
                                            recreated))
                     for i in range(config.num_envs_per_env_runner)]
        env = self.envs[0]
        self.observation_space = config.observation_space or env.observation_space
        self.action_space = config.action_space or env.action_space
        self.policy = policy_class(self.observation_space, self.action_space, config)
        self.filter = make_filter(config.observation_filter,
                                  (len(preprocess_obs(self.observation_space,
                                                      self.observation_space.sample())),))
        self._rng = np.random.default_rng(base_seed)
        self._seeds = [None if base_seed is None else base_seed + i
                       for i in range(len(self.envs))]
        self._obs: list[np.ndarray] = []
        self._ep_id = [0] * len(self.envs)
        self._ep_t = [0] * len(self.envs)
        self._ep_return = [0.0] * len(self.envs)
        self._next_ep = worker_index * 10**9
        self.num_env_steps = 0

    # -- state from the learner ---------------------------------------------------------
    def set_state(self, weights: Any, filter_state: Any = None) -> None:
        """Take the learner's weights and the global filter."""
        if weights is not None:
            self.policy.set_weights(weights)
        if filter_state is not None:
            self.filter.set_state(filter_state)

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.policy.get_weights()

    def pid(self) -> int:
        return os.getpid()

    def apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(self, *args, **kwargs)`` here (algorithms' own work on runners)."""
        return fn(self, *args, **kwargs)

    def stop(self) -> None:
        for env in self.envs:
            close = getattr(env, "close", None)
            if close is not None:
                close()

    # -- sampling -------------------------------------------------------------------------
    def _reset(self, i: int, update_filter: bool = True) -> np.ndarray:
        seed, self._seeds[i] = self._seeds[i], None  # seed only the first reset
        obs, _ = self.envs[i].reset(seed=seed)
        self._ep_id[i] = self._next_ep
        self._next_ep += 1
        self._ep_t[i] = 0
        self._ep_return[i] = 0.0
        return self.filter(preprocess_obs(self.observation_space, obs), update=update_filter)

    def _step(self, i: int, action: Any) -> tuple[Any, float, bool, bool]:
        env_action = to_env_action(self.action_space, action, self.config.clip_actions,
                                   self.config.normalize_actions)
        obs, reward, terminated, truncated, _ = self.envs[i].step(env_action)
        return obs, float(reward), bool(terminated), bool(truncated)

    def sample(self, explore: bool | None = None) -> tuple[SampleBatch, dict[str, Any]]:
        """One fragment per env (see the module docstring)."""
        explore = self.config.explore if explore is None else explore
        if not self._obs:
            self._obs = [self._reset(i) for i in range(len(self.envs))]
        steps = self.config.get_rollout_fragment_length()
        rows: list[dict[str, list[Any]]] = [self._new_rows() for _ in self.envs]
        pieces: list[SampleBatch] = []
        returns: list[float] = []
        lengths: list[int] = []
        for _ in range(steps):
            actions, extras = self.policy.compute_actions(np.stack(self._obs), explore)
            for i in range(len(self.envs)):
                raw, reward, terminated, truncated = self._step(i, actions[i])
                next_obs = self.filter(preprocess_obs(self.observation_space, raw))
                row = rows[i]
                for key, value in ((SampleBatch.OBS, self._obs[i]),
                                   (SampleBatch.ACTIONS, actions[i]),
                                   (SampleBatch.REWARDS, reward),
                                   (SampleBatch.NEXT_OBS, next_obs),
                                   (SampleBatch.TERMINATEDS, terminated),
                                   (SampleBatch.TRUNCATEDS, truncated),
                                   (SampleBatch.EPS_ID, self._ep_id[i]),
                                   (SampleBatch.T, self._ep_t[i])):
                    row[key].append(value)
                for key, column in extras.items():
                    row.setdefault(key, []).append(column[i])
                self._ep_t[i] += 1
                self._ep_return[i] += reward
                if terminated or truncated:
                    returns.append(self._ep_return[i])
                    lengths.append(self._ep_t[i])
                    pieces.append(self._finish(rows[i]))
                    rows[i] = self._new_rows()
                    self._obs[i] = self._reset(i)
                else:
                    self._obs[i] = next_obs
        pieces.extend(self._finish(r) for r in rows if r[SampleBatch.OBS])
        batch = concat_samples(pieces)
        self.num_env_steps += len(batch)
        return batch, {"episode_returns": returns, "episode_lengths": lengths,
                       "env_steps": len(batch), "filter_delta": self.filter.take_delta()}

    def sample_episodes(self, num_episodes: int, explore: bool = False) -> dict[str, Any]:
        """Run ``num_episodes`` whole episodes on the first env (without updating
        the filter, without disturbing the training episodes' state)."""
        returns: list[float] = []
        lengths: list[int] = []
        env = self.envs[0]
        for _ in range(num_episodes):
            obs, _ = env.reset()
            total, t, done = 0.0, 0, False
            while not done:
                flat = self.filter(preprocess_obs(self.observation_space, obs), update=False)
                actions, _ = self.policy.compute_actions(flat[None], explore)
                obs, reward, terminated, truncated, _ = env.step(to_env_action(
                    self.action_space, actions[0], self.config.clip_actions,
                    self.config.normalize_actions))
                total += float(reward)
                t += 1
                done = bool(terminated or truncated)
            returns.append(total)
            lengths.append(t)
        self._obs = []  # the first env was reset: the next sample() starts new episodes
        return {"episode_returns": returns, "episode_lengths": lengths}

    def _new_rows(self) -> dict[str, list[Any]]:
        return {key: [] for key in _STEP_KEYS}

    def _finish(self, rows: dict[str, list[Any]]) -> SampleBatch:
        batch = SampleBatch({key: np.asarray(values) for key, values in rows.items()})
        batch[SampleBatch.REWARDS] = batch[SampleBatch.REWARDS].astype(np.float32)
        batch[SampleBatch.OBS] = batch[SampleBatch.OBS].astype(np.float32)
        batch[SampleBatch.NEXT_OBS] = batch[SampleBatch.NEXT_OBS].astype(np.float32)
        return self.policy.postprocess_trajectory(batch)
