"""Shared by the searchers that wrap other libraries: split a param_space into
the domains they sample (by flat name ``"a/b"``) and the rest, and put their
suggestions back into nested configs."""

from __future__ import annotations

from typing import Any

from .sample import Domain, Function
from .variant_generator import Path, has_grid, leaf_paths

__all__ = ["SEP", "domains_of", "name_of", "unflatten_suggestion"]

SEP = "/"


def name_of(path: Path) -> str:
    return SEP.join(str(p) for p in path)


def domains_of(space: dict[str, Any], searcher: str) -> dict[str, tuple[Path, Domain]]:
    """``{"a/b": (path, domain)}`` for every sampled leaf of ``space``.

    Raises:
        ValueError: the space has a grid search or ``sample_from`` (which
            ``searcher`` cannot sample).
    """
    if has_grid(space):
        raise ValueError(f"{searcher} cannot search a grid_search; use tune.choice(...) "
                         "instead, or the default BasicVariantGenerator for grids")
    out: dict[str, tuple[Path, Domain]] = {}
    for path, leaf in leaf_paths(space):
        if isinstance(leaf, Function):
            raise ValueError(f"{searcher} cannot sample tune.sample_from at "
                             f"{name_of(path)!r}; use a fixed-range primitive "
                             "(uniform, choice, ...)")
        if isinstance(leaf, Domain):
            out[name_of(path)] = (path, leaf)
    return out


def unflatten_suggestion(values: dict[str, Any],
                         paths: dict[str, tuple[Path, Domain]]) -> dict[str, Any]:
    """Nested dict of the suggested values (``values`` keyed by flat name)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        path = paths[name][0] if name in paths else tuple(name.split(SEP))
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out
