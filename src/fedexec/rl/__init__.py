"""``fedexec.rl``: reinforcement learning on gymnasium with distributed env runners
(RLlib's role), a client of fedexec's public API only; torch and gymnasium are
imported when an algorithm is built.

Use::

    from fedexec.rl import PPOConfig
    algo = (PPOConfig().environment("CartPole-v1")
            .env_runners(num_env_runners=2, observation_filter="MeanStdFilter")
            .training(lr=3e-4, num_epochs=6, model={"fcnet_hiddens": [32]})
            .build())
    result = algo.train()            # result["episode_reward_mean"] ...
    path = algo.save()               # Algorithm.from_checkpoint(path)

Modules, bottom up::

    config.py        AlgorithmConfig: builder methods, old spellings, to_dict/from_dict
    env.py           register_env, env creators, observation preprocessing, action unsquashing
    sample_batch.py  SampleBatch (numpy columns), concat_samples
    postprocessing.py discounted sums and GAE
    filters.py       NoFilter, MeanStdFilter (synced across runners each iteration)
    models.py        torch MLP policy/value network, Categorical and DiagGaussian
    policy.py        TorchPolicy (act, postprocess, loss, learn), ActorCriticPolicy (GAE)
    env_runner.py    EnvRunner: vector of envs + policy copy; one per actor
    env_runner_group.py  the runner actors, weight broadcast, replacement of dead runners
    metrics.py       episode stats window; checkpoint.py: the checkpoint directory format
    algorithm.py     Algorithm (a tune.Trainable): setup, train(), evaluate, save/restore
    registry.py      algorithms by name ("PPO" -> fedexec.rl.ppo:PPO); Tune names
    ppo.py dqn.py a2c.py a3c.py es.py   one module per algorithm
    _cli.py          ``fedexec rl ...``; examples/*.yaml the tuned examples

How an algorithm plugs in (``ppo.py`` is the reference, ~150 lines):

1. **Config**: ``class XConfig(AlgorithmConfig)`` whose ``__init__(self,
   algo_class=None)`` calls ``super().__init__(algo_class=algo_class or X)`` and
   then assigns its settings and defaults as attributes (``self.target_network_update_freq
   = 500``); ``.training(name=...)`` then accepts them. Old spellings go in the
   class attribute ``renames = {"old": "new"}``. Override ``validate()`` (call super).
2. **Policy**: subclass ``policy.TorchPolicy`` (or ``ActorCriticPolicy`` for GAE):
   ``loss(batch) -> (loss, stats)`` on a dict of tensors; optionally
   ``make_model()``, ``compute_actions(obs, explore)`` (must return
   ``(actions, extras)``; extras become SampleBatch columns),
   ``postprocess_trajectory(batch)``, ``get_state``/``set_state`` (e.g. a target net).
   Learning helpers: ``learn_on_batch(batch)``, ``learn_epochs(batch, epochs, size)``.
3. **Algorithm**: ``class X(Algorithm)`` with ``config_class = XConfig``,
   ``get_default_policy_class(cls, config)`` and ``training_step() -> stats``.
   Inside it: ``self.sample(n)`` (a SampleBatch from the runners, metrics and
   filter recorded), ``self.policy`` (the learner), ``self.sync_weights()``,
   ``self.counters["num_env_steps_trained"]``, ``self.rng``. Extra state: override
   ``setup(config)`` (call super first), ``get_extra_state``/``set_extra_state`` for
   checkpoints, ``cleanup()``. Set ``uses_env_runners = False`` to manage workers
   yourself (then call ``self.record_metrics({...})`` with episode returns/lengths and
   env steps). Asynchronous work: ``self.env_runner_group.submit(i, method_or_fn,
   *args)`` -> ref, ``.get(i, ref) -> (ok, value)`` (a dead runner is replaced and
   ok is False), ``.foreach_runner(fn)``, ``EnvRunner.apply(fn)`` runs
   ``fn(runner, ...)`` on a runner (its ``envs``, ``policy``, ``filter``).
4. **Name**: add ``"X": "fedexec.rl.x:X"`` to ``registry.BUILTIN`` (PPO, DQN, A2C,
   A3C, ES are there already) or call ``register_algorithm("X", X)``; the name then
   works in Tune, the CLI and ``Algorithm.from_checkpoint``. Tuned examples:
   ``examples/<name>.yaml``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import AlgorithmConfig
from .env import register_env
from .registry import get_algorithm_class, register_algorithm, register_all_with_tune

__all__ = [
    "A2C", "A3C", "DQN", "ES", "PPO",
    "A2CConfig", "A3CConfig", "Algorithm", "AlgorithmConfig", "DQNConfig", "ESConfig", "PPOConfig",
    "get_algorithm_class", "register_algorithm", "register_env",
]

_LAZY = {
    "Algorithm": "algorithm",
    "PPO": "ppo", "PPOConfig": "ppo",
    "DQN": "dqn", "DQNConfig": "dqn",
    "A2C": "a2c", "A2CConfig": "a2c",
    "A3C": "a3c", "A3CConfig": "a3c",
    "ES": "es", "ESConfig": "es",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_all_with_tune()
