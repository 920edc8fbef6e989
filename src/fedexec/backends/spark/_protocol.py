"""What the driver and a lease (a Spark task running fedexec tasks) tell each other.

Both sides import this module: the driver, and every Spark Python worker. Messages
are small dataclasses pickled whole by ``multiprocessing.connection`` (which also
frames them and authenticates the peer with an HMAC challenge on the executor's
key before any message is read). Values inside are bytes already pickled by
fedexec (cloudpickle, in band), so a message never unpickles user objects itself.

One lease's conversation::

    lease (Spark Python worker)                    driver (channel thread)
    ───────────────────────────                    ───────────────────────
    Hello(lease_id, pid, host) ───────────────────▶ known, open lease?
                               ◀─────────────────── Welcome(...)     or Stop()
    (initializer, once per process and executor)
    Idle() ───────────────────────────────────────▶ a task fits?     else wait
                               ◀─────────────────── Assign(TaskSpec) or, after
                                                    the linger time, Stop()
    Done(task_id, values | error) ────────────────▶ refs completed; next Assign
      while a task runs, from the task's code:
      Submit/Put/Watch/Fetch/Cancel/Query ────────▶ Reply(req, ...) (Put, Watch:
                                                    no reply; ref ids are made by
                                                    the lease, so a Ready never
                                                    comes before its ref exists)
      Block/Unblock (in a get: lend the CPU)
                               ◀─────────────────── Ready(ref)    a watched ref is done
                               ◀─────────────────── Interrupt(id) cancel: KeyboardInterrupt
                               ◀─────────────────── Exit()        force-cancel: die now

A connection closed while a task runs means the worker process died: the
driver retries the task (``max_retries``) or fails it with ``WorkerCrashedError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Assign",
    "Block",
    "Broken",
    "Cancel",
    "Done",
    "Exit",
    "Fetch",
    "Hello",
    "Idle",
    "Interrupt",
    "LeaseSpec",
    "Put",
    "Query",
    "Ready",
    "Reply",
    "Stop",
    "Submit",
    "TaskSpec",
    "Unblock",
    "Watch",
    "Welcome",
]


# --------------------------------------------------------------------------- setup
@dataclass(slots=True)
class LeaseSpec:
    """What a lease's Spark task carries in its closure: where to connect."""

    address: tuple[str, int]
    authkey: bytes
    lease_id: str
    broadcast_ids: tuple[int, ...] = ()


@dataclass(slots=True)
class Hello:
    """Lease -> driver, first message: who is calling."""

    lease_id: str
    pid: int
    host: str
    addresses: list[str] = field(default_factory=list)  # of this machine (names a node)


@dataclass(slots=True)
class Welcome:
    """Driver -> lease: the executor the lease works for."""

    uid: str  # the executor's id: initializers run once per process and uid
    job_id: str
    namespace: str
    node_id: str
    initializer: bytes | None  # cloudpickled (initializer, initargs)
    sys_path: list[str]  # the driver's import path (so tasks' modules import here)


@dataclass(slots=True)
class Broken:
    """Lease -> driver: the executor's initializer raised (the executor is broken)."""

    message: str


@dataclass(slots=True)
class Idle:
    """Lease -> driver: ready for a task."""


@dataclass(slots=True)
class Stop:
    """Driver -> lease: no work for you; end (the Spark task completes)."""


@dataclass(slots=True)
class Exit:
    """Driver -> lease: the running task was force-cancelled; exit the process now."""


# --------------------------------------------------------------------------- tasks
@dataclass(slots=True)
class TaskSpec:
    """One task to run. ``deps`` maps each ref passed directly as an argument to its
    value: pickled bytes, or the id of the Spark broadcast holding them."""

    task_id: str
    name: str
    fn: bytes
    call: bytes
    deps: dict[str, bytes | int]
    num_returns: int
    retry: Any  # retry_exceptions: a bool, or cloudpickled exception types
    retries: int  # how often retry_exceptions may run it again
    runtime_env: dict[str, Any] | None = None


@dataclass(slots=True)
class Assign:
    """Driver -> lease: run this task."""

    task: TaskSpec


@dataclass(slots=True)
class Done:
    """Lease -> driver: the task finished (the lease is idle again).

    ``values``: one pickled value per return; ``contained``: ids of the refs
    pickled inside them (the driver keeps those alive with the values);
    ``error``: the cloudpickled exception, when the task failed.
    """

    task_id: str
    values: list[bytes] | None
    contained: list[str] = field(default_factory=list)
    error: bytes | None = None


@dataclass(slots=True)
class Interrupt:
    """Driver -> lease: cancel task ``task_id`` (``KeyboardInterrupt`` in it)."""

    task_id: str


@dataclass(slots=True)
class Block:
    """Lease -> driver: task ``task_id`` waits in ``get``: lend its resources."""

    task_id: str


@dataclass(slots=True)
class Unblock:
    """Lease -> driver: task ``task_id`` stopped waiting: take its resources back."""

    task_id: str


# --------------------------------------------------------------------------- the API inside tasks
@dataclass(slots=True)
class Submit:
    """Lease -> driver: a task submitted by the running task ``parent``."""

    req: int
    parent: str
    ref_ids: list[str]  # made by the lease, one per return value
    name: str
    fn: bytes
    call: bytes
    deps: list[str]  # ids of the refs passed directly
    contained: list[str]  # ids of all refs inside the arguments (kept alive)
    options: bytes  # cloudpickled TaskOptions


@dataclass(slots=True)
class Put:
    """Lease -> driver: ``put`` inside task ``parent`` (the id is made by the lease)."""

    ref_id: str
    parent: str
    data: bytes
    contained: list[str]


@dataclass(slots=True)
class Watch:
    """Lease -> driver: send ``Ready`` for these refs when they are done."""

    ref_ids: list[str]


@dataclass(slots=True)
class Ready:
    """Driver -> lease: a watched ref is done. ``data`` is None with ``lazy`` set
    for a large value (fetched on first use) and with ``error`` set on failure."""

    ref_id: str
    data: bytes | None = None
    error: bytes | None = None
    lazy: bool = False


@dataclass(slots=True)
class Fetch:
    """Lease -> driver: the pickled value of ``ref_id`` (answered with a Reply)."""

    req: int
    ref_id: str


@dataclass(slots=True)
class Cancel:
    """Lease -> driver: ``cancel`` (``pending_only``: ``ObjectRef.cancel``)."""

    req: int
    ref_id: str
    force: bool
    recursive: bool
    pending_only: bool = False


@dataclass(slots=True)
class Query:
    """Lease -> driver: ``cluster_resources``, ``available_resources`` or ``nodes``."""

    req: int
    what: str


@dataclass(slots=True)
class Reply:
    """Driver -> lease: the answer to request ``req``: a value, or an error to raise."""

    req: int
    value: Any = None
    error: bytes | None = None
