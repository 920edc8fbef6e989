"""Trainables: the ``Trainable`` class API, the in-trial session (``report``,
``get_checkpoint``, ``get_context``), wrappers and the name registry."""

from .registry import get_trainable_cls, register_trainable
from .session import get_checkpoint, get_context, report
from .trainable import Trainable
from .wrappers import with_parameters, with_resources

__all__ = [
    "Trainable",
    "get_checkpoint",
    "get_context",
    "get_trainable_cls",
    "register_trainable",
    "report",
    "with_parameters",
    "with_resources",
]
