"""Turning a ``param_space`` into concrete configs.

A param_space is nested dicts/lists whose leaves are constants, :class:`Domain`
objects or ``{"grid_search": [...]}`` markers. A *path* is the tuple of keys
(and list indices) leading to a leaf. Resolving one variant:

1. pick one value on every grid axis (the axes multiply: ``itertools.product``
   over the axes in path order, the last path varying fastest);
2. sample every non-function domain;
3. call the ``sample_from`` functions, each seeing ``spec.config`` (the config
   resolved so far); a function touching a value not resolved yet is retried
   after the others, so functions may depend on each other in any order.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .sample import Domain, Function

__all__ = [
    "Path",
    "assign",
    "flatten_dict",
    "format_vars",
    "generate_variants",
    "grid_axes",
    "has_grid",
    "leaf_paths",
    "resolve",
    "unflatten_dict",
]

Path = tuple[Any, ...]


def _is_grid(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and "grid_search" in value


def leaf_paths(space: Any, prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every ``(path, leaf)`` of ``space``; grid markers and domains are leaves."""
    if _is_grid(space) or isinstance(space, Domain):
        yield prefix, space
    elif isinstance(space, Mapping):
        for key, value in space.items():
            yield from leaf_paths(value, (*prefix, key))
    elif isinstance(space, list):
        for i, value in enumerate(space):
            yield from leaf_paths(value, (*prefix, i))
    else:
        yield prefix, space


def grid_axes(space: Any) -> list[tuple[Path, list[Any]]]:
    """The grid axes of ``space``: ``(path, values)`` in path order."""
    return [(p, list(v["grid_search"])) for p, v in leaf_paths(space) if _is_grid(v)]


def has_grid(space: Any) -> bool:
    return bool(grid_axes(space))


def assign(config: Any, path: Path, value: Any) -> None:
    """Set the leaf at ``path`` of ``config`` (in place)."""
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _get(config: Any, path: Path) -> Any:
    for key in path:
        config = config[key]
    return config


class _Unresolved(Exception):
    """A ``sample_from`` function read a value that is not resolved yet."""


class _Guard(dict):
    """``spec.config`` while functions run: reading an unresolved value raises."""

    def __getitem__(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        if isinstance(value, Domain):
            raise _Unresolved(key)
        return _guard(value)

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __getattr__(self, key: str) -> Any:  # spec.config.x, as Ray's AttrDict
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def _guard(value: Any) -> Any:
    return _Guard(value) if isinstance(value, dict) and not isinstance(value, _Guard) else value


class _Spec(dict):
    """What ``sample_from`` functions get: ``spec.config`` (also ``spec["config"]``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config=_Guard(config))

    @property
    def config(self) -> Any:
        return self["config"]


def resolve(space: Any, grid_point: Mapping[Path, Any] | None = None,
            rng: np.random.Generator | None = None) -> tuple[dict[Path, Any], Any]:
    """One concrete config of ``space`` (a deep copy) and the values it drew.

    Args:
        space: the param_space.
        grid_point: the value to use on each grid axis (by path).
        rng: the random generator for the domains.

    Returns:
        ``(resolved_vars, config)``: ``resolved_vars`` maps each grid/domain path
        to its value, ``config`` is the nested config.
    """
    rng = rng if rng is not None else np.random.default_rng()
    config = copy.deepcopy(space)
    resolved: dict[Path, Any] = {}
    functions: list[tuple[Path, Function]] = []
    for path, leaf in list(leaf_paths(config)):
        if _is_grid(leaf):
            value = (grid_point or {}).get(path, leaf["grid_search"][0])
            if isinstance(value, Function):
                functions.append((path, value))
                assign(config, path, value)
                continue
            if isinstance(value, Domain):
                value = value.sample(random_state=rng)
        elif isinstance(leaf, Function):
            functions.append((path, leaf))
            continue
        elif isinstance(leaf, Domain):
            value = leaf.sample(random_state=rng)
        else:
            continue
        resolved[path] = value
        if path:
            assign(config, path, value)
        else:
            config = value
    pending = functions
    while pending:
        waiting: list[tuple[Path, Function]] = []
        for path, fn in pending:
            try:
                value = fn.sample(spec=_Spec(config), random_state=rng)
            except _Unresolved:
                waiting.append((path, fn))
                continue
            resolved[path] = value
            assign(config, path, value)
        if len(waiting) == len(pending):
            names = ", ".join("/".join(map(str, p)) for p, _ in waiting)
            raise ValueError(f"sample_from functions at {names} depend on each other in a cycle "
                             "(or on a value that is never resolved)")
        pending = waiting
    return resolved, config


def generate_variants(space: Any, num_samples: int = 1,
                      rng: np.random.Generator | None = None,
                      ) -> Iterator[tuple[dict[Path, Any], Any]]:
    """Every variant of ``space``: the grid (the product of its axes) repeated
    ``num_samples`` times, domains sampled anew for each."""
    rng = rng if rng is not None else np.random.default_rng()
    axes = grid_axes(space)
    for _ in range(num_samples):
        for values in itertools.product(*(vals for _, vals in axes)):
            yield resolve(space, {p: v for (p, _), v in zip(axes, values)}, rng)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 20 else text[:17] + "..."


def format_vars(resolved: Mapping[Path, Any]) -> str:
    """``"x=1,lr=0.01"``: the short tag of a variant (last path element as name)."""
    parts = []
    for path, value in resolved.items():
        name = str(path[-1]) if path else "value"
        parts.append(f"{name}={_short(value)}")
    return ",".join(parts)


def flatten_dict(d: Mapping[str, Any], delimiter: str = "/",
                 prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a/b": 1}`` (nested dicts only)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{delimiter}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_dict(value, delimiter, name))
        else:
            out[name] = value
    return out


def unflatten_dict(d: Mapping[str, Any], delimiter: str = "/") -> dict[str, Any]:
    """The inverse of :func:`flatten_dict`."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        node = out
        *parents, last = key.split(delimiter)
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def get_path(config: Any, path: Path) -> Any:
    """The leaf of ``config`` at ``path``."""
    return _get(config, path)
