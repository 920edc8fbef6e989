"""The backend registry: built-in backends, ``register()``, and the
``fedexec.backends`` entry-point group (re-exported by ``fedexec.backends``).

A factory is a callable ``factory(config) -> Backend`` with a ``capabilities``
attribute (a backend class is one). Built-ins are imported lazily, so
``import fedexec`` does not import Dask or Spark. This module knows backends only
by name and factory: it never imports ``base`` (which imports it).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..exceptions import BackendUnavailableError

if TYPE_CHECKING:
    from ..config import RuntimeConfig
    from .base import Backend

__all__ = ["CAPABILITIES", "available", "backends_with", "capabilities", "create",
           "get_factory", "names", "register"]

#: Every capability name a backend may declare (see API.md "Backend capabilities").
CAPABILITIES = frozenset(
    {
        "actors",
        "async_actors",
        "named_actors",
        "actor_restarts",
        "zero_copy",
        "placement_groups",
        "multi_node",
        "gpus",
        "cancel_running",
        "worker_processes",
        "lineage_reconstruction",
        "spilling",
    }
)

Factory = Callable[["RuntimeConfig"], "Backend"]

# name -> (module:attribute, the pip extra that brings its dependencies)
_BUILTIN: dict[str, tuple[str, str | None]] = {
    "dask": ("fedexec.backends.dask:DaskBackend", "dask"),
    "local": ("fedexec.backends.local:LocalBackend", None),
    "native": ("fedexec.backends.native:NativeBackend", None),
    "spark": ("fedexec.backends.spark:SparkBackend", "spark"),
}

_registered: dict[str, Factory] = {}
_lock = threading.Lock()
_entry_points_loaded = False


def register(name: str, factory: Factory) -> None:
    """Make ``Executor(backend=name)`` use ``factory(config)``.

    ``factory`` must have a ``capabilities`` attribute (a frozenset of names from
    ``CAPABILITIES``); a ``Backend`` subclass has one.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a backend name must be a non-empty string")
    caps = getattr(factory, "capabilities", None)
    if not isinstance(caps, frozenset) or not caps <= CAPABILITIES:
        raise ValueError(
            f"backend factory {factory!r} needs a 'capabilities' frozenset drawn from "
            f"{sorted(CAPABILITIES)}"
        )
    with _lock:
        _registered[name] = factory


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="fedexec.backends"):
        if ep.name not in _registered and ep.name not in _BUILTIN:
            try:
                register(ep.name, ep.load())
            except Exception:  # a broken plug-in must not break fedexec
                continue


def names() -> list[str]:
    """Every known backend name, available or not."""
    _load_entry_points()
    return sorted(set(_BUILTIN) | set(_registered))


def get_factory(name: str) -> Factory:
    """The factory for ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
        BackendUnavailableError: its optional dependency is missing.
    """
    if name not in _registered and name not in _BUILTIN:
        # A plug-in's name: only now scan the installed entry points (~50 ms of
        # importlib.metadata; a built-in name never needs it, and plug-ins cannot
        # take a built-in's name).
        _load_entry_points()
    if name in _registered:
        return _registered[name]
    if name not in _BUILTIN:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(names())}")
    target, extra = _BUILTIN[name]
    module, _, attr = target.partition(":")
    try:
        factory: Factory = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        hint = f'pip install "fedexec[{extra}]"' if extra else "reinstall fedexec"
        raise BackendUnavailableError(
            f"the {name!r} backend needs a package that is not installed ({exc.name}); "
            f"run: {hint}"
        ) from exc
    except AttributeError as exc:  # a partial install: the module lacks its backend
        raise BackendUnavailableError(
            f"the {name!r} backend is broken in this installation ({exc}); reinstall fedexec"
        ) from exc
    return factory


def capabilities(name: str) -> frozenset[str]:
    """The capabilities backend ``name`` declares (see API.md)."""
    return frozenset(get_factory(name).capabilities)  # type: ignore[attr-defined]


def available() -> list[str]:
    """Names of the backends usable here (their dependencies are installed)."""
    out = []
    for name in names():
        try:
            get_factory(name)
        except BackendUnavailableError:
            continue
        out.append(name)
    return out


def backends_with(capability: str) -> list[str]:
    """Names of the known backends declaring ``capability`` (available or not)."""
    out = []
    for name in names():
        try:
            if capability in capabilities(name):
                out.append(name)
        except BackendUnavailableError:
            continue
    return out


def create(name: str, config: RuntimeConfig) -> Backend:
    """Instantiate backend ``name``."""
    return get_factory(name)(config)


