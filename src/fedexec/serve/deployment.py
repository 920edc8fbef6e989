"""Deployments and applications: what ``@serve.deployment`` and ``.bind()`` make.

A :class:`Deployment` is a class or function plus its config; ``.bind(*args)``
makes an :class:`Application` (a deployment with its constructor arguments,
which may be other applications: each becomes a handle in the replica). The
classic methods ``deploy``/``get_handle``/``delete`` run a deployment as an
application of its own, named after it, under ``route_prefix`` or ``/<name>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, overload

from .autoscaling import AutoscalingConfig

_DEFAULTS: dict[str, Any] = {
    "num_replicas": 1, "route_prefix": None, "max_ongoing_requests": 100,
    "autoscaling_config": None, "actor_options": None, "user_config": None,
    "health_check_period_s": 10.0, "health_check_timeout_s": 30.0,
    "graceful_shutdown_timeout_s": 20.0,
}
_ALIASES = {"ray_actor_options": "actor_options",
            "max_concurrent_queries": "max_ongoing_requests"}


def _check_config(config: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        key = _ALIASES.get(key, key)
        if key not in _DEFAULTS and key not in ("name", "version"):
            raise TypeError(f"unknown deployment option {key!r}; known: "
                            f"{sorted([*_DEFAULTS, 'name', 'version'])}")
        out[key] = value
    n = out.get("num_replicas")
    if n == "auto":
        out["num_replicas"] = None
        out.setdefault("autoscaling_config", {"min_replicas": 1, "max_replicas": 100})
    elif n is not None and (not isinstance(n, int) or n < 0):
        raise ValueError(f"num_replicas must be an int >= 0, got {n!r}")
    m = out.get("max_ongoing_requests")
    if m is not None and (not isinstance(m, int) or m < 1):
        raise ValueError(f"max_ongoing_requests must be an int >= 1, got {m!r}")
    if out.get("autoscaling_config") is not None:
        AutoscalingConfig.from_value(out["autoscaling_config"])  # validate now
    prefix = out.get("route_prefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix.startswith("/")):
        raise ValueError(f"route_prefix must be a string starting with '/', got {prefix!r}")
    opts = out.get("actor_options")
    if opts is not None and not isinstance(opts, dict):
        raise TypeError(f"actor_options must be a dict of actor options, got {opts!r}")
    return out


@dataclass(frozen=True)
class Deployment:
    """A deployment: ``func_or_class`` and its config (see the module docstring)."""

    func_or_class: Any
    name: str
    config: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:
        if key in _DEFAULTS:
            return self.config.get(key, _DEFAULTS[key])
        raise AttributeError(key)

    @property
    def ray_actor_options(self) -> dict[str, Any] | None:
        return self.config.get("actor_options")

    def options(self, *, func_or_class: Any = None, name: str | None = None,
                **config: Any) -> Deployment:
        """A copy with some options changed (same names as ``@serve.deployment``)."""
        new = {**self.config, **_check_config(config)}
        return replace(self, func_or_class=func_or_class or self.func_or_class,
                       name=name or self.name, config=new)

    def bind(self, *args: Any, **kwargs: Any) -> Application:
        """This deployment with constructor arguments: an application to ``serve.run``."""
        if not inspect.isclass(self.func_or_class) and (args or kwargs):
            raise TypeError(f"function deployment {self.name!r} takes no constructor "
                            "arguments; call .bind() without any")
        return Application(self, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"deployment {self.name!r} cannot be called directly; use "
                        f"serve.run({self.name}.bind()) and a handle, or .deploy()")

    # ------------------------------------------------------------------ classic API
    def deploy(self, *init_args: Any, **init_kwargs: Any) -> None:
        """Run this deployment as its own application (the classic API)."""
        from .api import _run_classic

        _run_classic(self, init_args, init_kwargs)

    def get_handle(self, sync: bool = True) -> Any:
        """A classic handle: ``.remote()`` returns an ``ObjectRef`` (``fedexec.get`` works)."""
        from .handle import DeploymentHandle

        return DeploymentHandle(self.name, self.name, _classic=True)

    def delete(self) -> None:
        """Stop this classic deployment."""
        from .api import delete

        delete(self.name)


@dataclass(frozen=True, eq=False)
class Application:
    """A bound deployment (``Deployment.bind(...)``): what ``serve.run`` takes."""

    deployment: Deployment
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@overload
def deployment(_func_or_class: Callable[..., Any]) -> Deployment: ...


@overload
def deployment(_func_or_class: None = None, **config: Any) -> Callable[[Any], Deployment]: ...


def deployment(_func_or_class: Any = None, *, name: str | None = None,
               **config: Any) -> Any:
    """``@serve.deployment`` or ``@serve.deployment(num_replicas=2, ...)`` on a class
    or a function (see ``LIBRARIES.md`` for the options and their defaults)."""
    checked = _check_config(config)

    def make(target: Any) -> Deployment:
        if not callable(target):
            raise TypeError(f"@serve.deployment decorates a class or a function, got "
                            f"{type(target).__name__}")
        return Deployment(target, name or target.__name__, checked)

    return make(_func_or_class) if _func_or_class is not None else make
