"""Classic path of :class:`fedexec.tune.search.hyperopt.HyperOptSearch`."""

from ..search.hyperopt import HyperOptSearch

__all__ = ["HyperOptSearch"]
