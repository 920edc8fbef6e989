"""``HyperOptSearch`` (hyperopt is imported only when one is created)."""

from .hyperopt_search import HyperOptSearch

__all__ = ["HyperOptSearch"]
