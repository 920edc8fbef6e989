"""Algorithms by name (``"PPO"``, ``"DQN"`` ...), and their names in Tune.

Each built-in algorithm lives in its own module, imported only when its name is
first used; :data:`BUILTIN` maps a name to ``"module:Class"``. Another algorithm
plugs in with :func:`register_algorithm`. ``fedexec.rl`` registers every name
with ``fedexec.tune`` when imported, so ``tune.Tuner("PPO")`` and
``tune.run("PPO")`` work (Tune imports ``fedexec.rl`` on an unknown name).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BUILTIN", "get_algorithm_class", "register_algorithm", "registered_algorithms"]

#: name -> "module:Class" of the algorithms shipped with fedexec.rl
BUILTIN: dict[str, str] = {
    "PPO": "fedexec.rl.ppo:PPO",
    "DQN": "fedexec.rl.dqn:DQN",
    "A2C": "fedexec.rl.a2c:A2C",
    "A3C": "fedexec.rl.a3c:A3C",
    "ES": "fedexec.rl.es:ES",
}

_REGISTRY: dict[str, Any] = dict(BUILTIN)


def register_algorithm(name: str, algorithm: type | str) -> None:
    """Make ``name`` an algorithm (an ``Algorithm`` subclass, or ``"module:Class"``),
    usable by ``Algorithm.from_checkpoint``, the CLI and Tune."""
    _REGISTRY[name] = algorithm
    _register_with_tune(name)


def registered_algorithms() -> list[str]:
    return sorted(_REGISTRY)


def get_algorithm_class(name: str) -> Any:
    """The algorithm class registered as ``name`` (case-insensitive).

    Raises:
        ValueError: no algorithm has that name (or its module is not there).
    """
    key = next((k for k in _REGISTRY if k.lower() == str(name).lower()), None)
    if key is None:
        raise ValueError(f"unknown algorithm {name!r}: use one of "
                         f"{', '.join(registered_algorithms())}, or register it with "
                         "fedexec.rl.register_algorithm(name, cls)")
    target = _REGISTRY[key]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ModuleNotFoundError, AttributeError) as exc:
            if isinstance(exc, ModuleNotFoundError) and exc.name != module:
                raise
            raise ValueError(f"algorithm {key!r} is not available in this fedexec "
                             f"({target} not found)") from None
        _REGISTRY[key] = target
    return target


class _TuneEntry:
    """What Tune holds for a name: the algorithm class, found when a run starts,
    with this process's ``register_env`` names carried along (trials run in
    other processes)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def as_trainable(self) -> type:
        from .env import registered_envs

        cls = get_algorithm_class(self.name)
        envs = registered_envs()
        if not envs:
            return cls
        # a class made here pickles by value, so the envs travel with it
        return type(cls.__name__, (cls,), {"_registered_envs": envs,
                                           "__module__": cls.__module__,
                                           "__qualname__": cls.__qualname__ + "WithEnvs"})


def _register_with_tune(name: str) -> None:
    from fedexec.tune import register_trainable

    register_trainable(name, _TuneEntry(name))


def register_all_with_tune() -> None:
    for name in _REGISTRY:
        _register_with_tune(name)
