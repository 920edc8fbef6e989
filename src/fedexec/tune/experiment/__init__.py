"""``Trial`` (as Ray's ``ray.tune.experiment.Trial``)."""

from .trial import Trial

__all__ = ["Trial"]
