"""``tune.with_resources`` and ``tune.with_parameters``.

Both return a :class:`Wrapped` trainable (they compose in any order). Objects given
to ``with_parameters`` are put in the object store once per ``fit`` and fetched
once per trial actor, however many trials use them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Wrapped", "with_parameters", "with_resources"]


@dataclass(frozen=True)
class Wrapped:
    """A trainable with resources and/or large parameters attached."""

    trainable: Any
    resources: Any = None  # dict | PlacementGroupFactory | fn(config) -> either
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def __name__(self) -> str:
        return getattr(self.trainable, "__name__", type(self.trainable).__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.trainable(*args, **{**self.parameters, **kwargs})


def _unwrap(trainable: Any) -> Wrapped:
    return trainable if isinstance(trainable, Wrapped) else Wrapped(trainable)


def with_resources(trainable: Any,
                   resources: Mapping[str, float] | Any | Callable[[dict[str, Any]], Any]
                   ) -> Wrapped:
    """``trainable`` with each trial asking for ``resources``: a dict such as
    ``{"cpu": 2, "gpu": 0}``, a ``PlacementGroupFactory``, or a function of the
    trial's config returning either."""
    return replace(_unwrap(trainable), resources=resources)


def with_parameters(trainable: Any, **kwargs: Any) -> Wrapped:
    """``trainable`` getting ``kwargs`` besides its config: a function trainable is
    called as ``fn(config, **kwargs)``, a class trainable's ``setup(config, **kwargs)``.
    Each object is stored once and shared by all trials."""
    wrapped = _unwrap(trainable)
    return replace(wrapped, parameters={**wrapped.parameters, **kwargs})
