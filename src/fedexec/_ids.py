"""Unique ids: a random per-process prefix plus a counter, as hex strings.

Cheap enough for the submit hot path (no ``os.urandom`` per id) and unique across
processes and hosts with overwhelming probability (64 random bits per process).
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(8).hex()
_counter = itertools.count(1)


def new_id() -> str:
    """A fresh 28-hex-digit id, unique across the cluster."""
    return f"{_PREFIX}{next(_counter):012x}"


def task_of(result_id: str) -> str:
    """The id of the task (or call) whose result ``result_id`` is: a result's id is
    its task's :func:`new_id` plus a two-digit index."""
    return result_id[:28]


def _reset_after_fork() -> None:  # a forked child must not repeat its parent's ids
    global _PREFIX, _counter
    _PREFIX = os.urandom(8).hex()
    _counter = itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
