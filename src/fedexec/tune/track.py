"""``tune.track.log(**metrics)``: the earliest reporting API, the same as
``tune.report(**metrics)``."""

from __future__ import annotations

from typing import Any

from .trainable.session import report

__all__ = ["log"]


def log(**metrics: Any) -> None:
    """Report one result of the calling trial (``tune.report(**metrics)``)."""
    report(**metrics)
