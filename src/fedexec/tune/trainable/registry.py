"""Named trainables and turning whatever was passed as a trainable into one spec.

A trainable is one of:

- a function ``fn(config)`` that calls ``tune.report`` (also the classic
  ``fn(config, reporter)`` and ``fn(config, checkpoint_dir=None)`` forms);
- a :class:`~fedexec.tune.Trainable` subclass;
- a name registered with :func:`register_trainable`. Libraries provide names
  by registering them when imported; on an unknown name the modules in
  :data:`PROVIDERS` (``fedexec.rl``) are imported, if they exist, and looked in
  again. ``fedexec.rl`` registers each algorithm ("PPO", "DQN" ...) as a
  ``tune.Trainable`` subclass; its config object (``PPOConfig()``, anything
  with ``to_dict()``) may be the Tuner's ``param_space``;
- a **trainer object**: anything with an ``as_trainable()`` method returning a
  function or Trainable subclass (optionally wrapped by ``tune.with_resources``).
  This is the interface ``fedexec.train`` trainers offer (as Ray's
  ``BaseTrainer``): the returned trainable receives the trial's config — the
  sampled ``param_space``, e.g. ``{"train_loop_config": {...}}`` — and reports
  through ``tune.report``; its resources (``default_resource_request(config)`` or
  ``with_resources``) count the trainer's workers as extra bundles;
- any of these wrapped by ``tune.with_resources`` / ``tune.with_parameters``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..resources import PlacementGroupFactory, normalize
from .trainable import Trainable
from .wrappers import Wrapped

__all__ = ["TrainableSpec", "get_trainable_cls", "register_trainable", "resolve"]

_registry: dict[str, Any] = {}

#: modules that register trainables when imported, tried on an unknown name
PROVIDERS: tuple[str, ...] = ("fedexec.rl",)


def register_trainable(name: str, trainable: Any, warn: bool = True) -> None:
    """Make ``trainable`` usable by ``name`` (``tune.Tuner(name)``, ``tune.run(name)``).

    Args:
        name: the name.
        trainable: a function, a Trainable subclass, a trainer (``as_trainable()``)
            or a wrapped trainable.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"a trainable's name must be a non-empty string, not {name!r}")
    _check(trainable)
    _registry[name] = trainable


def get_trainable_cls(name: str) -> Any:
    """The trainable registered as ``name``.

    Raises:
        ValueError: no trainable has that name.
    """
    for provider in PROVIDERS:
        if name in _registry:
            break
        try:  # e.g. fedexec.rl registers its algorithms ("PPO", "DQN" ...) when imported
            importlib.import_module(provider)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (provider + ".").startswith(exc.name + "."):
                raise  # the provider exists but one of its own imports failed
    if name not in _registry:
        known = ", ".join(sorted(_registry)) or "none"
        raise ValueError(f"unknown trainable {name!r} (registered: {known}): register it with "
                         "tune.register_trainable(name, trainable), or pass the function or "
                         "class itself")
    return _registry[name]


def is_registered(name: str) -> bool:
    return name in _registry


def _check(trainable: Any) -> None:
    inner = trainable.trainable if isinstance(trainable, Wrapped) else trainable
    if isinstance(inner, str) or hasattr(inner, "as_trainable"):
        return
    if inspect.isclass(inner):
        if not issubclass(inner, Trainable):
            raise TypeError(f"{inner.__name__} is a class but not a tune.Trainable subclass: "
                            "subclass tune.Trainable or pass a function")
        return
    if not callable(inner):
        raise TypeError(f"{inner!r} is not a trainable: pass a function, a tune.Trainable "
                        "subclass, a registered name or a trainer")


@dataclass
class TrainableSpec:
    """A trainable ready to run: what it is, how it is called, what it needs."""

    name: str
    kind: str  # "function" | "class"
    obj: Any
    resources: Any = None  # as given: dict | PlacementGroupFactory | fn(config) | None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    call_style: str = "config"  # "config" | "reporter" | "checkpoint_dir"
    supports_reset: bool = False

    def resources_for(self, config: dict[str, Any]) -> PlacementGroupFactory:
        """The resource request of a trial with ``config``."""
        spec = self.resources
        if callable(spec) and not isinstance(spec, (Mapping, PlacementGroupFactory)):
            spec = spec(config)
        if spec is None and self.kind == "class":
            spec = self.obj.default_resource_request(config)
        return normalize(spec)


def resolve(trainable: Any) -> TrainableSpec:
    """The :class:`TrainableSpec` of whatever was passed as a trainable."""
    resources: Any = None
    parameters: dict[str, Any] = {}
    name: str | None = None
    for _ in range(8):  # unwrap names, wrappers and trainers, in any nesting
        if isinstance(trainable, str):
            name = name or trainable
            trainable = get_trainable_cls(trainable)
        elif isinstance(trainable, Wrapped):
            resources = trainable.resources if trainable.resources is not None else resources
            parameters = {**trainable.parameters, **parameters}
            trainable = trainable.trainable
        elif not inspect.isclass(trainable) and hasattr(trainable, "as_trainable"):
            name = name or type(trainable).__name__
            trainable = trainable.as_trainable()
        else:
            break
    _check(trainable)
    if inspect.isclass(trainable):
        overrides_reset = getattr(trainable, "reset_config", None) is not Trainable.reset_config
        return TrainableSpec(str(name or trainable.__name__), "class", trainable, resources,
                             parameters, supports_reset=overrides_reset)
    return TrainableSpec(str(name or getattr(trainable, "__name__", "trainable")), "function",
                         trainable, resources, parameters, call_style=_call_style(trainable),
                         supports_reset=True)


def _call_style(fn: Callable[..., Any]) -> str:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return "config"
    names = [p.name for p in params]
    if "checkpoint_dir" in names:
        return "checkpoint_dir"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2 and positional[1].default is inspect.Parameter.empty:
        return "reporter"
    return "config"
