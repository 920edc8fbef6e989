"""The trial actors of one experiment: creating them with a trial's resources,
keeping finished ones for reuse, and ending them.

State::

    records  every live actor (ActorRecord: handle, resource shape, node, which
             trainables it has unpickled, the controller's trials on it)
    idle     shape -> actors with no trial, kept for reuse (they hold their shape's
             resources while alive, so the controller counts them as used)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import fedexec

from ..resources import resources_to_options
from .trial_actor import TrialActor

__all__ = ["ActorManager", "ActorRecord"]

Shape = tuple[tuple[str, float], ...]


def shape_of(bundle: dict[str, float]) -> Shape:
    return tuple(sorted(bundle.items()))


@dataclass(eq=False)
class ActorRecord:
    handle: Any
    shape: Shape
    node: str | None = None
    trainables: set[str] = field(default_factory=set)
    lives: list[Any] = field(default_factory=list)  # its trials: the current one, then queued


class ActorManager:
    """Creates, reuses and ends the trial actors on ``executor``."""

    def __init__(self, executor: fedexec.Executor) -> None:
        self._ex = executor
        self.records: set[ActorRecord] = set()
        self.idle: dict[Shape, list[ActorRecord]] = {}

    def acquire(self, bundle: dict[str, float], reuse: bool) -> ActorRecord:
        """An actor with ``bundle``'s resources: an idle one when ``reuse``, else new."""
        shape = shape_of(bundle)
        pool = self.idle.get(shape)
        if reuse and pool:
            return pool.pop()
        options = resources_to_options(bundle)
        handle = self._ex.options(**options, max_restarts=0).actor(TrialActor)
        record = ActorRecord(handle, shape)
        self.records.add(record)
        return record

    def release(self, record: ActorRecord, keep: bool) -> None:
        """The actor's trial ended: keep it idle for another trial, or end it."""
        if keep and record in self.records:
            self.idle.setdefault(record.shape, []).append(record)
        else:
            self.kill(record)

    def kill(self, record: ActorRecord) -> None:
        self.records.discard(record)
        pool = self.idle.get(record.shape)
        if pool and record in pool:
            pool.remove(record)
        with contextlib.suppress(Exception):
            self._ex.kill(record.handle)

    def idle_resources(self) -> dict[str, float]:
        """The resources held by idle actors."""
        total: dict[str, float] = {}
        for shape, pool in self.idle.items():
            for key, value in shape:
                total[key] = total.get(key, 0.0) + value * len(pool)
        return total

    def drop_idle(self, keep_shape: Shape | None = None) -> bool:
        """End one idle actor (not of ``keep_shape``); False if there is none."""
        for shape, pool in self.idle.items():
            if pool and shape != keep_shape:
                self.kill(pool[-1])
                return True
        return False

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let every actor stop its trial and clean up its kept trainable (a busy one
        once its current call returns), then end every actor."""
        refs = []
        for record in self.records:
            with contextlib.suppress(Exception):
                refs.append(record.handle.shutdown.remote())
        if refs:
            with contextlib.suppress(Exception):
                self._ex.wait(refs, num_returns=len(refs), timeout=timeout)
        for record in list(self.records):
            self.kill(record)
        self.idle.clear()
