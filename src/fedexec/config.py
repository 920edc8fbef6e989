"""The runtime configuration: built once from ``Executor(...)``/``init(...)``
arguments and handed to the backend. Nothing reads the environment at import."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .options import ActorOptions, TaskOptions, validate_resources

__all__ = ["RuntimeConfig"]


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything a backend is started with (see ``Executor`` for the meaning)."""

    address: str | None = None
    max_workers: int | None = None
    initializer: Callable[..., Any] | None = None
    initargs: tuple[Any, ...] = ()
    num_cpus: float | None = None
    num_gpus: float | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    object_store_memory: int | None = None
    namespace: str | None = None
    token: str | None = None
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    task_defaults: TaskOptions = field(default_factory=TaskOptions)
    actor_defaults: ActorOptions = field(default_factory=ActorOptions)

    @classmethod
    def make(cls, **kwargs: Any) -> RuntimeConfig:
        """Validate the ``Executor`` arguments (``ValueError``/``TypeError``)."""
        mw = kwargs.get("max_workers")
        if mw is not None:
            if isinstance(mw, bool) or not isinstance(mw, numbers.Integral):
                raise TypeError(f"max_workers must be an int, got {mw!r}")
            if mw <= 0:
                raise ValueError("max_workers must be greater than 0")
        init = kwargs.get("initializer")
        if init is not None and not callable(init):
            raise TypeError("initializer must be a callable")
        for name in ("num_cpus", "num_gpus"):
            v = kwargs.get(name)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, numbers.Real):
                    raise TypeError(f"{name} must be a number, got {v!r}")
                if math.isnan(v) or math.isinf(v) or v < 0:
                    raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        osm = kwargs.get("object_store_memory")
        if osm is not None and (not isinstance(osm, numbers.Integral) or osm <= 0):
            raise ValueError(f"object_store_memory must be a positive int, got {osm!r}")
        kwargs["resources"] = validate_resources(kwargs.get("resources"))
        kwargs["initargs"] = tuple(kwargs.get("initargs") or ())
        return cls(**kwargs)

    def cpu_count(self, detected: int) -> float:
        """CPUs to offer: ``num_cpus``, else ``max_workers``, else ``detected``."""
        if self.num_cpus is not None:
            return float(self.num_cpus)
        if self.max_workers is not None:
            return float(self.max_workers)
        return float(detected)
