"""Which of a trial's checkpoints stay on disk (``CheckpointConfig``).

The latest checkpoint always stays (a retry or a restore resumes from it). With
``num_to_keep`` set, the ``num_to_keep`` best by ``checkpoint_score_attribute``
(in ``checkpoint_score_order``) stay too — or, without a score attribute, the
``num_to_keep`` newest. A checkpoint whose result lacks the score ranks last.
"""

from __future__ import annotations

import math
from typing import Any

from ..config import CheckpointConfig

__all__ = ["ranked", "to_delete"]

Record = tuple[str, dict[str, Any]]


def _score(record: Record, attribute: str, order: str) -> float:
    value = record[1].get(attribute)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return -math.inf
    return float(value) if order == "max" else -float(value)


def ranked(records: list[Record], config: CheckpointConfig) -> list[Record]:
    """``records`` best first (by score), or newest first without a score."""
    attribute = config.checkpoint_score_attribute
    if attribute is None:
        return list(reversed(records))
    return sorted(records, key=lambda r: _score(r, attribute, config.checkpoint_score_order),
                  reverse=True)


def to_delete(records: list[Record], config: CheckpointConfig) -> list[Record]:
    """The records (oldest first) whose checkpoints should be removed now."""
    if config.num_to_keep is None or not records:
        return []
    keep = {id(r) for r in ranked(records, config)[: config.num_to_keep]}
    keep.add(id(records[-1]))
    return [r for r in records if id(r) not in keep]
