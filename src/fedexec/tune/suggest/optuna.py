"""Classic path of :class:`fedexec.tune.search.optuna.OptunaSearch`."""

from ..search.optuna import OptunaSearch

__all__ = ["OptunaSearch"]
