"""The messages between the controller (driver) and a trial actor.

Every call is ``actor.step(Command) -> Batch``: one round trip carries the
acknowledgement of the results decided so far, the commands (start a trial, save,
stop) and, back, every result reported since the previous call. A start may be
sent *queued*, behind the call of the actor's current trial (calls to an actor
run in order): it starts the next trial as soon as the current one ended,
without waiting for the driver, or is refused if that trial is still running. Checkpoints
travel as ``("path", dir)`` (same node as the driver: the directory is already in
the trial directory) or ``("bytes", tar archive)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batch", "Command", "StartSpec"]


@dataclass(slots=True)
class StartSpec:
    """Start one trial on the actor."""

    trial_id: str
    trial_name: str
    trial_dir: str
    experiment_name: str
    trainable_key: str
    trainable_blob: bytes | None  # None: the actor has it cached under the key
    kind: str                     # "function" | "class"
    call_style: str
    config: dict[str, Any]
    checkpoint: tuple[str, Any] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # name -> ObjectRef
    resources: dict[str, float] = field(default_factory=dict)
    window: int = 1
    stop: dict[str, Any] | None = None
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool = False
    driver_node: str = ""
    reuse_instance: bool = False


@dataclass(slots=True)
class Command:
    """What the controller wants from the actor in this round trip."""

    start: StartSpec | None = None
    ack: int = 0          # results decided so far (flow control)
    save: bool = False    # make a checkpoint now (class trainables)
    stop: bool = False    # end the trial (after the save, if both)
    timeout: float = 1.0  # how long to wait for a new result
    queued: bool = False  # start only if the actor's previous trial has ended, else refuse


@dataclass(slots=True)
class Batch:
    """What happened on the actor since the previous round trip."""

    results: list[dict[str, Any]]
    finished: bool = False  # the trial's thread ended
    failed: bool = False    # ... by raising: ``raise_error()`` raises it
    saved: tuple[str, Any] | None = None
    clean: bool = True      # the actor can take another trial
    refused: bool = False   # a queued start found the previous trial still running
