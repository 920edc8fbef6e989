"""``Algorithm``: the base of every algorithm, a ``tune.Trainable``.

One object owns, in the process that builds it (the driver, or a Tune trial)::

    config (AlgorithmConfig) ─▶ env creator ─▶ probe env: spaces
    policy      the learner's TorchPolicy (cuda with num_gpus)
    filter      the global observation filter
    env_runner_group   EnvRunner actors (or one runner here with 0 of them)
    episodes    the last metrics_num_episodes_for_smoothing episodes

``train()`` runs ``step()``: the subclass's ``training_step()`` (sample, learn,
``sync_weights()``), then the result dict (episode stats under both spellings,
step counters, ``info/learner/default_policy/learner_stats``, evaluation every
``evaluation_interval`` iterations). Checkpoints: see ``checkpoint.py``.
"""

from __future__ import annotations

import datetime
import os
import random
import time
import warnings
from typing import Any, ClassVar

import numpy as np

from fedexec.tune import Trainable

from . import checkpoint as ckpt
from .config import AlgorithmConfig
from .env import EnvContext, env_creator_for, obs_size, preprocess_obs, to_env_action
from .env_runner_group import EnvRunnerGroup
from .filters import make_filter
from .metrics import EpisodeWindow, episode_stats
from .sample_batch import SampleBatch, concat_samples

__all__ = ["Algorithm"]

DEFAULT_POLICY_ID = "default_policy"


class Algorithm(Trainable):
    """The base class of algorithms (see the module docstring and ``fedexec.rl``).

    Args:
        config: an :class:`AlgorithmConfig` or a flat dict (old spellings accepted).
        env: the environment, overriding ``config.env`` (classic ``PPO(config, env)``).
        logger_creator: accepted for compatibility.
        executor: where the env runner actors run (default: the current executor).
    """

    #: the config class (``get_default_config()`` makes one)
    config_class: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    #: False for algorithms that do not sample through env runners' ``sample()``
    uses_env_runners: ClassVar[bool] = True
    #: ``register_env`` names carried into Tune trials (set by the Tune hook)
    _registered_envs: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: AlgorithmConfig | dict[str, Any] | None = None, env: Any = None,
                 logger_creator: Any = None, executor: Any = None, **kwargs: Any) -> None:
        self._executor = executor
        if isinstance(config, AlgorithmConfig):
            cfg = config.copy()
            cfg.algo_class = type(self)
        else:
            cfg = self.get_default_config().update_from_dict(config or {})
        if env is not None:
            cfg.environment(env)
        self._pending_config: AlgorithmConfig | None = cfg
        super().__init__(cfg.to_dict(), logger_creator=logger_creator, **kwargs)
        self.config: Any = self.algo_config

    # -- what subclasses provide ---------------------------------------------------------
    @classmethod
    def get_default_config(cls) -> AlgorithmConfig:
        """A fresh config of this algorithm, with its defaults."""
        return cls.config_class(algo_class=cls)

    @classmethod
    def get_default_policy_class(cls, config: AlgorithmConfig) -> type:
        """The policy class (a ``TorchPolicy`` subclass) learning and acting."""
        raise NotImplementedError(f"{cls.__name__} must define get_default_policy_class()")

    def training_step(self) -> dict[str, Any]:
        """One round of sampling and learning; returns the learner's stats."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step()")

    # -- setup --------------------------------------------------------------------------
    def setup(self, config: dict[str, Any], **parameters: Any) -> None:
        """Build the policy, the filter and the env runners. Subclasses that need more
        state override it and call ``super().setup(config)`` first."""
        cfg = self._pending_config or self.get_default_config().update_from_dict(config)
        self._pending_config = None
        self.algo_config: Any = cfg
        cfg.validate()
        import torch

        if cfg.seed is not None:
            random.seed(cfg.seed)
            np.random.seed(cfg.seed)
            torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.env_creator = env_creator_for(cfg.env, type(self)._registered_envs)
        obs_space, act_space = cfg.observation_space, cfg.action_space
        if obs_space is None or act_space is None:
            probe = self.env_creator(EnvContext(cfg.env_config, 0, cfg.num_env_runners, 0))
            obs_space, act_space = obs_space or probe.observation_space, \
                act_space or probe.action_space
            getattr(probe, "close", lambda: None)()
        self.observation_space, self.action_space = obs_space, act_space
        device = "cpu"
        # the learner uses the CPUs it was given (small models and a loaded machine
        # make more math threads much slower, not faster)
        torch.set_num_threads(max(1, int(cfg.num_cpus_for_main_process)))
        if cfg.num_gpus:
            if not torch.cuda.is_available():
                raise ValueError(f"num_gpus={cfg.num_gpus} but torch sees no GPU here: set "
                                 "num_gpus=0 or run where a GPU is visible")
            device = "cuda"
        self.policy_class = self.get_default_policy_class(cfg)
        self.policy = self.policy_class(obs_space, act_space, cfg, device=device)
        self.filter = make_filter(cfg.observation_filter, (obs_size(obs_space),))
        self.episodes = EpisodeWindow(cfg.metrics_num_episodes_for_smoothing)
        self.counters: dict[str, int] = {"num_env_steps_sampled": 0, "num_env_steps_trained": 0}
        self._steps_this_iter = 0
        self._eval_group: EnvRunnerGroup | None = None
        self.env_runner_group: EnvRunnerGroup | None = None
        if self.uses_env_runners:
            self.env_runner_group = EnvRunnerGroup(cfg, self.policy_class, self.env_creator,
                                                   executor=self._executor)
            self.sync_weights()

    @property
    def workers(self) -> EnvRunnerGroup | None:
        """The classic name of :attr:`env_runner_group`."""
        return self.env_runner_group

    # -- helpers for training_step ------------------------------------------------------
    def sample(self, num_steps: int | None = None) -> SampleBatch:
        """At least ``num_steps`` (default ``train_batch_size``) env steps from the
        runners, recorded in the episode stats, counters and filter."""
        assert self.env_runner_group is not None
        pieces = self.env_runner_group.sample(num_steps or self.algo_config.train_batch_size)
        for _, metrics in pieces:
            self.record_metrics(metrics)
        return concat_samples([batch for batch, _ in pieces])

    def record_metrics(self, metrics: dict[str, Any]) -> None:
        """Take one runner's ``sample()`` metrics (episodes, env steps, filter delta)."""
        self.episodes.add(metrics.get("episode_returns", []), metrics.get("episode_lengths", []))
        steps = int(metrics.get("env_steps", 0))
        self.counters["num_env_steps_sampled"] += steps
        self._steps_this_iter += steps
        self.filter.merge_delta(metrics.get("filter_delta"))

    def sync_weights(self) -> None:
        """Send the learner's weights and the global filter to every runner."""
        if self.env_runner_group is not None:
            self.env_runner_group.sync(self.policy.get_weights(), self.filter.get_state())

    # -- an iteration -------------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        cfg = self.algo_config
        start = time.monotonic()
        self._steps_this_iter = 0
        stats = self.training_step()
        while (self._steps_this_iter < cfg.min_sample_timesteps_per_iteration
               or (cfg.min_time_s_per_iteration
                   and time.monotonic() - start < cfg.min_time_s_per_iteration)):
            stats = self.training_step()
        result = self._result(stats)
        interval = cfg.evaluation_interval
        if interval and (self.iteration + 1) % interval == 0:
            result.update(self.evaluate())
        return result

    def _result(self, stats: dict[str, Any]) -> dict[str, Any]:
        episodes = self.episodes.stats()
        group = self.env_runner_group
        healthy = group.num_healthy_runners if group else 0
        restarts = group.num_restarts if group else 0
        sampled, trained = (self.counters["num_env_steps_sampled"],
                            self.counters["num_env_steps_trained"])
        counts = {"num_env_steps_sampled": sampled, "num_env_steps_trained": trained,
                  "num_env_steps_sampled_lifetime": sampled,
                  "num_env_steps_sampled_this_iter": self._steps_this_iter}
        return {
            **episodes, **counts,
            "timesteps_total": sampled,
            "num_healthy_workers": healthy, "num_remote_worker_restarts": restarts,
            "info": {"learner": {DEFAULT_POLICY_ID: {"learner_stats": stats}}, **counts},
            "env_runners": {**episodes, "num_healthy_env_runners": healthy,
                            "num_env_runner_restarts": restarts},
            "sampler_results": dict(episodes),
        }

    # -- evaluation and acting ------------------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        """``evaluation_duration`` episodes with the current policy (explore per
        ``evaluation_config``, default False), on ``evaluation_num_env_runners``
        runners (0: in this process)."""
        cfg = self.algo_config
        if self._eval_group is None:
            eval_cfg = cfg.copy().update_from_dict(cfg.evaluation_config or {})
            eval_cfg.num_env_runners = cfg.evaluation_num_env_runners
            self._eval_group = EnvRunnerGroup(eval_cfg, self.policy_class, self.env_creator,
                                              executor=self._executor)
        self._eval_group.sync(self.policy.get_weights(), self.filter.get_state())
        explore = bool(self._eval_group.config.explore)
        out = self._eval_group.sample_episodes(int(cfg.evaluation_duration), explore)
        stats: dict[str, Any] = episode_stats(out["episode_returns"], out["episode_lengths"])
        stats["episodes_this_iter"] = len(out["episode_returns"])
        return {"evaluation": stats}

    def compute_single_action(self, observation: Any = None, state: Any = None, *,
                              explore: bool | None = None,
                              policy_id: str = DEFAULT_POLICY_ID, **kwargs: Any) -> Any:
        """The env action for one raw observation (filtered with the global filter,
        unsquashed to the action space). ``explore`` None: ``config.explore``."""
        if observation is None:
            observation = (kwargs.get("input_dict") or {}).get("obs")
        policy = self.get_policy(policy_id)
        flat = self.filter(preprocess_obs(self.observation_space, observation), update=False)
        explore = self.algo_config.explore if explore is None else explore
        action = policy.compute_single_action(flat, explore=bool(explore), preprocessed=True)
        return to_env_action(self.action_space, action, self.algo_config.clip_actions,
                             self.algo_config.normalize_actions)

    def get_policy(self, policy_id: str = DEFAULT_POLICY_ID) -> Any:
        """The learner's policy (there is one, ``"default_policy"``)."""
        if policy_id != DEFAULT_POLICY_ID:
            raise KeyError(f"no policy {policy_id!r}: fedexec.rl has one policy, "
                           f"{DEFAULT_POLICY_ID!r}")
        return self.policy

    def get_weights(self) -> dict[str, Any]:
        return {DEFAULT_POLICY_ID: self.policy.get_weights()}

    def set_weights(self, weights: dict[str, Any]) -> None:
        self.policy.set_weights(weights.get(DEFAULT_POLICY_ID, weights))
        self.sync_weights()

    # -- checkpoints ----------------------------------------------------------------------
    def save(self, checkpoint_dir: str | None = None) -> str:
        """Write a checkpoint (``checkpoint_dir``, default: a new
        ``~/fedexec_results/<algo>_<env>_<time>/checkpoint_<iter>``) and return its path."""
        if checkpoint_dir is None and self.trial_id == "default":
            stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            env = str(self.algo_config.env).replace("/", "_")
            checkpoint_dir = os.path.join(
                os.path.expanduser("~/fedexec_results"), f"{type(self).__name__}_{env}_{stamp}",
                f"checkpoint_{self.iteration:06d}")
        return super().save(checkpoint_dir)

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        import torch

        from fedexec import __version__

        config, pickled = ckpt.write_config(checkpoint_dir, self.algo_config.to_dict())
        ckpt.write_json(os.path.join(checkpoint_dir, ckpt.STATE_FILE), {
            "checkpoint_version": ckpt.CHECKPOINT_VERSION,
            "algorithm": self._algorithm_name(),
            "fedexec_version": __version__,
            "config": config, "config_pickled": pickled,
            "counters": dict(self.counters),
            "episodes": self.episodes.get_state(),
            "policy_ids": [DEFAULT_POLICY_ID],
            "extra": self.get_extra_state(),
        })
        torch.save(self.policy.get_state(), os.path.join(checkpoint_dir, ckpt.POLICY_FILE))
        ckpt.write_json(os.path.join(checkpoint_dir, ckpt.FILTER_FILE), self.filter.get_state())

    def load_checkpoint(self, checkpoint: Any) -> None:
        import torch

        directory = os.fspath(checkpoint)
        state = ckpt.read_state(directory)
        self.counters.update(state.get("counters", {}))
        self.episodes.set_state(state.get("episodes", {}))
        self.policy.set_state(torch.load(os.path.join(directory, ckpt.POLICY_FILE),
                                         map_location=self.policy.device, weights_only=False))
        filter_path = os.path.join(directory, ckpt.FILTER_FILE)
        if os.path.exists(filter_path):
            import json

            with open(filter_path, encoding="utf-8") as f:
                self.filter.set_state(json.load(f))
        self.set_extra_state(state.get("extra") or {})
        self.sync_weights()

    def get_extra_state(self) -> dict[str, Any]:
        """JSON-able state a subclass keeps in ``algorithm_state.json``."""
        return {}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Take what :meth:`get_extra_state` returned."""

    @classmethod
    def from_checkpoint(cls, path: Any, **kwargs: Any) -> Algorithm:
        """A new algorithm (of the class the checkpoint names) restored from ``path``."""
        from .registry import get_algorithm_class

        path = os.fspath(getattr(path, "path", path))
        state = ckpt.read_state(path)
        algo_cls = cls if cls is not Algorithm else get_algorithm_class(state["algorithm"])
        config = algo_cls.get_default_config()
        for key, value in state["config"].items():
            try:
                config.update_from_dict({key: value})
            except ValueError:  # a setting this version does not know: leave it
                warnings.warn(f"checkpoint setting {key!r} is not known to this fedexec and "
                              "is ignored", UserWarning, stacklevel=2)
        algo = algo_cls(config=config, **kwargs)
        algo.restore(path)
        return algo

    def _algorithm_name(self) -> str:
        from .registry import BUILTIN

        for klass in type(self).__mro__:
            if klass.__name__ in BUILTIN:
                return klass.__name__
        return type(self).__name__

    # -- the end --------------------------------------------------------------------------
    def cleanup(self) -> None:
        for group in (self.env_runner_group, self._eval_group):
            if group is not None:
                group.stop()

    @classmethod
    def default_resource_request(cls, config: Any) -> Any:
        """A Tune trial's bundles: this process, then one per env runner."""
        from fedexec.tune import PlacementGroupFactory

        cfg = config if isinstance(config, AlgorithmConfig) else \
            cls.get_default_config().update_from_dict(config or {})
        head = {"CPU": cfg.num_cpus_for_main_process, "GPU": cfg.num_gpus}
        runner = {"CPU": cfg.num_cpus_per_env_runner, "GPU": cfg.num_gpus_per_env_runner}
        n = cfg.num_env_runners if cls.uses_env_runners else 0
        n += cfg.evaluation_num_env_runners
        return PlacementGroupFactory([head] + [runner] * n)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(env={self.algo_config.env!r})"
