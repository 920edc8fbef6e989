"""Environments: ``register_env``, how an env spec becomes envs, and spaces.

An env spec (``config.env``) is a name given to :func:`register_env`, a
gymnasium id (``"CartPole-v1"``, made with ``gymnasium.make(id, **env_config)``),
or an env class (called with the :class:`EnvContext`). The driver turns the spec
into a *creator* once (:func:`env_creator_for`) and ships that creator to the env
runners, so names registered in the driver work in every runner process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["EnvContext", "env_creator_for", "get_env_creator", "obs_size", "preprocess_obs",
           "register_env", "registered_envs"]

_REGISTRY: dict[str, Callable[..., Any]] = {}


class EnvContext(dict):
    """``env_config`` as the creator gets it, with which runner and env it is for."""

    def __init__(self, env_config: dict[str, Any], worker_index: int = 0,
                 num_workers: int = 0, vector_index: int = 0,
                 recreated_worker: bool = False) -> None:
        super().__init__(env_config or {})
        self.worker_index = worker_index
        self.num_workers = num_workers
        self.vector_index = vector_index
        self.recreated_worker = recreated_worker


def register_env(name: str, env_creator: Callable[[EnvContext], Any]) -> None:
    """Make ``name`` usable as ``config.environment(name)``.

    Args:
        name: the name.
        env_creator: ``creator(env_config) -> gymnasium.Env`` (``env_config`` is an
            :class:`EnvContext`, a dict with ``worker_index``/``vector_index``).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"an env's name must be a non-empty string, not {name!r}")
    if not callable(env_creator):
        raise TypeError(f"register_env({name!r}, ...) needs a callable creator(env_config), "
                        f"not {type(env_creator).__name__}")
    _REGISTRY[name] = env_creator


def registered_envs() -> dict[str, Callable[..., Any]]:
    """A copy of this process's registered names (for shipping to other processes)."""
    return dict(_REGISTRY)


def get_env_creator(name: str) -> Callable[..., Any] | None:
    return _REGISTRY.get(name)


def _make_gym(env_id: str, context: EnvContext) -> Any:
    import gymnasium

    return gymnasium.make(env_id, **dict(context))


def _make_from_class(cls: type, context: EnvContext) -> Any:
    return cls(context)


def env_creator_for(env: Any, extra_registry: dict[str, Callable[..., Any]] | None = None
                    ) -> Callable[[EnvContext], Any]:
    """The creator of the env ``env`` names (see the module docstring).

    Raises:
        ValueError: ``env`` is a string that is neither registered nor a gymnasium id.
    """
    if isinstance(env, str):
        creator = (extra_registry or {}).get(env) or _REGISTRY.get(env)
        if creator is not None:
            return creator
        import gymnasium

        try:
            gymnasium.spec(env)
        except gymnasium.error.Error as exc:
            raise ValueError(f"unknown environment {env!r}: not registered with "
                             "fedexec.rl.register_env(name, creator) and not a gymnasium id "
                             f"({exc})") from None
        return functools.partial(_make_gym, env)
    if isinstance(env, type):
        return functools.partial(_make_from_class, env)
    if callable(env):
        return env
    raise ValueError(f"config.env must be a gymnasium id, a register_env name or an env "
                     f"class, not {env!r}")


# -- spaces -------------------------------------------------------------------------
def _check_obs_space(space: Any) -> None:
    from gymnasium import spaces

    if not isinstance(space, (spaces.Box, spaces.Discrete)):
        raise ValueError(f"observation space {space} is not supported: fedexec.rl handles Box "
                         "and Discrete observations (wrap the env to flatten others)")


def obs_size(space: Any) -> int:
    """The length of the flat float vector an observation becomes."""
    from gymnasium import spaces

    _check_obs_space(space)
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    return int(np.prod(space.shape))


def preprocess_obs(space: Any, obs: Any) -> np.ndarray:
    """One observation as a flat float32 vector (Discrete: one-hot)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        out = np.zeros(int(space.n), dtype=np.float32)
        out[int(obs) - int(space.start)] = 1.0
        return out
    return np.asarray(obs, dtype=np.float32).reshape(-1)


def to_env_action(space: Any, action: Any, clip_actions: bool, normalize_actions: bool) -> Any:
    """A policy's action as the env takes it: an int for Discrete; for Box, with
    ``normalize_actions`` the policy's [-1, 1] range mapped onto the bounds, else
    with ``clip_actions`` clipped to them."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return int(action) + int(space.start)
    if isinstance(space, spaces.Box):
        action = np.asarray(action, dtype=space.dtype).reshape(space.shape)
        bounded = np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))
        if normalize_actions and bounded:
            action = space.low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (space.high - space.low)
        elif clip_actions or (normalize_actions and bounded):
            action = np.clip(action, space.low, space.high)
        return action.astype(space.dtype)
    return action
