"""``OptunaSearch`` (optuna is imported only when one is created)."""

from .optuna_search import OptunaSearch

__all__ = ["OptunaSearch"]
