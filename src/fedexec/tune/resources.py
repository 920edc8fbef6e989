"""Trial resources: what one trial asks of the cluster.

A request is a list of *bundles* (resource dicts, keys as in fedexec's
``cluster_resources()``: ``CPU``, ``GPU``, ``memory``, custom names). The trial
actor takes the first bundle; the others are for the actors the trial starts
itself (a ``fedexec.train`` trainer's workers). The controller counts the sum of
all bundles against the cluster when deciding how many trials fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["PlacementGroupFactory", "normalize", "resources_to_options"]

_ALIASES = {"cpu": "CPU", "gpu": "GPU", "num_cpus": "CPU", "num_gpus": "GPU",
            "CPU": "CPU", "GPU": "GPU", "memory": "memory"}


class PlacementGroupFactory:
    """A trial's resources as bundles (as Ray's ``tune.PlacementGroupFactory``).

    Args:
        bundles: resource dicts; the first is the trial actor's own.
        strategy: how the bundles are placed (``"PACK"``, ``"SPREAD"`` ...).
    """

    def __init__(self, bundles: Sequence[Mapping[str, float]], strategy: str = "PACK",
                 **kwargs: Any) -> None:
        if not bundles:
            raise ValueError("PlacementGroupFactory needs at least one bundle")
        self.bundles = [_bundle(b) for b in bundles]
        self.strategy = strategy

    @property
    def required_resources(self) -> dict[str, float]:
        """The sum of the bundles."""
        total: dict[str, float] = {}
        for bundle in self.bundles:
            for key, value in bundle.items():
                total[key] = total.get(key, 0.0) + value
        return total

    @property
    def head_bundle(self) -> dict[str, float]:
        return dict(self.bundles[0])

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PlacementGroupFactory) and other.bundles == self.bundles
                and other.strategy == self.strategy)

    def __hash__(self) -> int:
        return hash((tuple(tuple(sorted(b.items())) for b in self.bundles), self.strategy))

    def __repr__(self) -> str:
        return f"PlacementGroupFactory({self.bundles}, strategy={self.strategy!r})"


def _bundle(spec: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in spec.items():
        if key in ("extra_cpu", "extra_gpu"):
            continue
        if key == "custom_resources":
            out.update({k: float(v) for k, v in dict(value).items()})  # type: ignore[call-overload]
            continue
        if value is None:
            continue
        if float(value) < 0:
            raise ValueError(f"resource {key!r} must not be negative, got {value}")
        out[_ALIASES.get(key, key)] = float(value)
    return out


def normalize(spec: Any) -> PlacementGroupFactory:
    """A request from a dict (``{"cpu": 2, "gpu": 0, "extra_cpu": 1, ...}``: exactly
    those resources), a :class:`PlacementGroupFactory`, or None (one CPU)."""
    if spec is None:
        return PlacementGroupFactory([{"CPU": 1.0}])
    if isinstance(spec, PlacementGroupFactory):
        return spec
    if isinstance(spec, Mapping):
        head = _bundle(spec)  # as given: {"gpu": 1} asks for no CPU, as in Ray
        bundles = [head]
        extra_cpu, extra_gpu = float(spec.get("extra_cpu", 0) or 0), float(
            spec.get("extra_gpu", 0) or 0)
        if extra_cpu or extra_gpu:
            bundles.append({k: v for k, v in (("CPU", extra_cpu), ("GPU", extra_gpu)) if v})
        return PlacementGroupFactory(bundles)
    other = getattr(spec, "bundles", None)
    if other is not None:  # a Ray-style factory of another kind
        return PlacementGroupFactory(list(other), getattr(spec, "strategy", "PACK"))
    raise TypeError(f"resources must be a dict or a PlacementGroupFactory, not {spec!r}")


def resources_to_options(bundle: Mapping[str, float]) -> dict[str, Any]:
    """fedexec actor options for one bundle (``num_cpus``, ``num_gpus``, ``memory``,
    ``resources``)."""
    opts: dict[str, Any] = {"num_cpus": bundle.get("CPU", 0.0)}
    if bundle.get("GPU"):
        opts["num_gpus"] = bundle["GPU"]
    if bundle.get("memory"):
        opts["memory"] = int(bundle["memory"])
    custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU", "memory")}
    if custom:
        opts["resources"] = custom
    return opts
