"""Task and actor options: validation, defaults and merging.

Options are validated once, when given (``.options(...)``, ``@remote(...)``,
``Executor(...)``), into frozen dataclasses; submitting then costs no validation.
Unknown names, wrong types, negative or NaN resources raise ``ValueError`` (or
``TypeError`` for a wrong type) naming the option.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "ActorOptions",
    "NodeAffinity",
    "PlacementGroupStrategy",
    "TaskOptions",
]


@dataclass(frozen=True, slots=True)
class NodeAffinity:
    """Scheduling strategy: run on node ``node_id`` (``soft=True``: prefer it, but
    run elsewhere if it is gone or full)."""

    node_id: str
    soft: bool = False


@dataclass(frozen=True, slots=True)
class PlacementGroupStrategy:
    """Scheduling strategy: run inside placement group ``placement_group``, in
    bundle ``bundle_index`` (-1: any bundle with room)."""

    placement_group: Any
    bundle_index: int = -1


_STRATEGIES = ("DEFAULT", "SPREAD")
_RUNTIME_ENV_KEYS = ("env_vars", "working_dir", "py_modules")


def _resource(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"option {name!r} must be a number, got {value!r}")
    number = float(value)
    if math.isnan(number) or math.isinf(number) or number < 0:
        raise ValueError(f"option {name!r} must be a finite number >= 0, got {value!r}")
    return number


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"option {name!r} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"option {name!r} must be >= {minimum}, got {value!r}")
    return int(value)


def validate_resources(resources: Any, name: str = "resources") -> dict[str, float]:
    """Check a custom-resources mapping: str keys (not CPU/GPU), numbers >= 0."""
    if resources is None:
        return {}
    if not isinstance(resources, Mapping):
        raise TypeError(f"option {name!r} must be a dict of resource name to amount")
    out = {}
    for key, amount in resources.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"resource names must be non-empty strings, got {key!r}")
        if key in ("CPU", "GPU"):
            raise ValueError(
                f"use num_cpus/num_gpus instead of resources={{{key!r}: ...}}"
            )
        out[key] = _resource(f"{name}[{key!r}]", amount)
    return out


def _strategy(value: Any) -> Any:
    if value is None:
        return "DEFAULT"
    if isinstance(value, str):
        if value.upper() not in _STRATEGIES:
            raise ValueError(
                f"scheduling_strategy must be one of {_STRATEGIES}, NodeAffinity(...) or "
                f"PlacementGroupStrategy(...), got {value!r}"
            )
        return value.upper()
    if isinstance(value, (NodeAffinity, PlacementGroupStrategy)):
        return value
    raise TypeError(f"unsupported scheduling_strategy {value!r}")


def _runtime_env(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError("runtime_env must be a dict")
    unknown = set(value) - set(_RUNTIME_ENV_KEYS)
    if unknown:
        raise ValueError(
            f"unknown runtime_env keys {sorted(unknown)}; known: {list(_RUNTIME_ENV_KEYS)}"
        )
    env = dict(value)
    env_vars = env.get("env_vars")
    if env_vars is not None:
        if not isinstance(env_vars, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
        ):
            raise TypeError("runtime_env['env_vars'] must be a dict of str to str")
        env["env_vars"] = dict(env_vars)
    working_dir = env.get("working_dir")
    if working_dir is not None and not isinstance(working_dir, (str, os.PathLike)):
        raise TypeError("runtime_env['working_dir'] must be a path")
    py_modules = env.get("py_modules")
    if py_modules is not None and not isinstance(py_modules, (list, tuple)):
        raise TypeError("runtime_env['py_modules'] must be a list of paths or modules")
    return env


def _retry_exceptions(value: Any) -> bool | tuple[type[BaseException], ...]:
    if isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    ):
        return tuple(value)
    raise TypeError(
        f"retry_exceptions must be True, False or a list of exception types, got {value!r}"
    )


@dataclass(frozen=True, slots=True)
class _Common:
    num_cpus: float | None = None
    num_gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)
    memory: float = 0.0
    name: str | None = None
    scheduling_strategy: Any = "DEFAULT"
    runtime_env: Mapping[str, Any] | None = None

    def demand(self, default_cpus: float) -> dict[str, float]:
        """The resource shape this asks for (CPU defaulting to ``default_cpus``)."""
        cpus = default_cpus if self.num_cpus is None else self.num_cpus
        d = {"CPU": cpus}
        if self.num_gpus:
            d["GPU"] = self.num_gpus
        if self.memory:
            d["memory"] = self.memory
        d.update(self.resources)
        return {k: v for k, v in d.items() if v}


@dataclass(frozen=True, slots=True)
class TaskOptions(_Common):
    """Options of a task; see API.md "Options". Build with :meth:`make`."""

    max_retries: int = 3
    retry_exceptions: bool | tuple[type[BaseException], ...] = False
    num_returns: int = 1

    @classmethod
    def make(cls, base: TaskOptions | None = None, **opts: Any) -> TaskOptions:
        """Validate ``opts`` and merge them over ``base``."""
        return _merge(cls, base or _DEFAULT_TASK, opts)


@dataclass(frozen=True, slots=True)
class ActorOptions(_Common):
    """Options of an actor; see API.md "Options". Build with :meth:`make`."""

    namespace: str | None = None
    lifetime: str | None = None
    max_restarts: int = 0
    max_task_retries: int = 0
    max_concurrency: int | None = None
    get_if_exists: bool = False

    @classmethod
    def make(cls, base: ActorOptions | None = None, **opts: Any) -> ActorOptions:
        """Validate ``opts`` and merge them over ``base``."""
        return _merge(cls, base or _DEFAULT_ACTOR, opts)

    def concurrency(self, is_async: bool) -> int:
        """How many calls may run at once (1000 for async actors by default)."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        return 1000 if is_async else 1


@dataclass(frozen=True, slots=True)
class MethodOptions:
    """Options of one actor-method call (``handle.method.options(...)``)."""

    num_returns: int = 1
    name: str | None = None

    @classmethod
    def make(cls, base: MethodOptions | None = None, **opts: Any) -> MethodOptions:
        """Validate ``opts`` and merge them over ``base``."""
        return _merge(cls, base or MethodOptions(), opts)


_CHECKS: dict[str, Any] = {
    "num_cpus": lambda v: None if v is None else _resource("num_cpus", v),
    "num_gpus": lambda v: _resource("num_gpus", v),
    "memory": lambda v: _resource("memory", v),
    "resources": validate_resources,
    "name": lambda v: _optional_str("name", v),
    "namespace": lambda v: _optional_str("namespace", v),
    "scheduling_strategy": _strategy,
    "runtime_env": _runtime_env,
    "max_retries": lambda v: _int("max_retries", v, -1),
    "retry_exceptions": _retry_exceptions,
    "num_returns": lambda v: _int("num_returns", v, 1),
    "lifetime": lambda v: _lifetime(v),
    "max_restarts": lambda v: _int("max_restarts", v, -1),
    "max_task_retries": lambda v: _int("max_task_retries", v, -1),
    "max_concurrency": lambda v: None if v is None else _int("max_concurrency", v, 1),
    "get_if_exists": lambda v: _bool("get_if_exists", v),
}


def _optional_str(name: str, v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise TypeError(f"option {name!r} must be a string, got {v!r}")
    return v


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"option {name!r} must be True or False, got {v!r}")
    return v


def _lifetime(v: Any) -> str | None:
    if v is None or v == "detached":
        return v  # type: ignore[no-any-return]
    raise ValueError(f"option 'lifetime' must be None or 'detached', got {v!r}")


_O = TypeVar("_O", "TaskOptions", "ActorOptions", "MethodOptions")


def _merge(cls: type[_O], base: _O, opts: dict[str, Any]) -> _O:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(opts) - names)
    if unknown:
        raise ValueError(
            f"unknown {_KIND[cls]} option(s) {unknown}; valid options are {sorted(names)}"
        )
    if not opts:
        return base
    checked = {k: _CHECKS[k](v) for k, v in opts.items()}
    return dataclasses.replace(base, **checked)


_KIND = {TaskOptions: "task", ActorOptions: "actor", MethodOptions: "actor method"}
_DEFAULT_TASK = TaskOptions()
_DEFAULT_ACTOR = ActorOptions()

TASK_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(TaskOptions))
ACTOR_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(ActorOptions))


def check_option_names(opts: Mapping[str, Any]) -> None:
    """``ValueError`` for a name that is neither a task nor an actor option."""
    unknown = sorted(set(opts) - TASK_OPTION_NAMES - ACTOR_OPTION_NAMES)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown}; task options are {sorted(TASK_OPTION_NAMES)}, "
            f"actor options are {sorted(ACTOR_OPTION_NAMES)}"
        )
