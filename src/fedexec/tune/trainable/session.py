"""What a running trial talks to: ``tune.report``, ``tune.get_checkpoint``,
``tune.get_context``.

Inside a trial actor each trial has one :class:`Session`; the trial's own thread
finds it thread-locally (or, when the process runs one trial, as the only one).
Reported results go into the session's :class:`Outbox`, which the actor drains in
batches for the controller. The outbox lets the trial run ``window`` results ahead
of the controller's acknowledgements: with a scheduler that decides on every
result the window is 1 (the trial waits for the decision, as in Ray); with FIFO
it is large, so a trial reports without waiting for a round trip.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..checkpoint import Checkpoint, pack
from ..error import TuneError

__all__ = [
    "Outbox",
    "Session",
    "TrialContext",
    "get_checkpoint",
    "get_context",
    "get_trial_dir",
    "get_trial_id",
    "get_trial_name",
    "get_trial_resources",
    "report",
]

_HOST = socket.gethostname()
_DICT_CHECKPOINT = "_dict_checkpoint.pkl"
METADATA = ".tune_metadata.json"


def write_metadata(directory: str, iteration: int, time_total: float) -> None:
    """Record the counters a checkpoint was taken at (read back on restore)."""
    with open(os.path.join(directory, METADATA), "w") as f:
        json.dump({"training_iteration": iteration, "time_total_s": time_total}, f)


def read_metadata(directory: str) -> tuple[int, float]:
    """``(training_iteration, time_total_s)`` of a checkpoint (zeros if unknown)."""
    try:
        with open(os.path.join(directory, METADATA)) as f:
            meta = json.load(f)
        return int(meta["training_iteration"]), float(meta["time_total_s"])
    except (OSError, ValueError, KeyError):
        return 0, 0.0


class StopTrial(BaseException):
    """Raised in a trial's thread (from ``report``) to end it: the controller
    stopped it. A BaseException, so the user's ``except Exception`` lets it pass."""


class Outbox:
    """Results of one trial waiting to be collected, with flow control.

    ``put`` (trial thread) blocks while ``window`` results are unacknowledged (a
    result with a checkpoint: until it is acknowledged);
    ``take`` (actor thread) hands over everything buffered, waiting up to
    ``timeout`` for a result or the end; ``ack(n)`` says the first ``n`` results
    are decided. ``call(fn)`` runs ``fn`` in the trial's thread between two steps
    (or right away once the trial ended), for saves that must not overlap a step.
    """

    def __init__(self, window: int) -> None:
        self.window = max(1, window)
        self._cond = threading.Condition()
        self._buffer: list[dict[str, Any]] = []
        self._produced = 0
        self._acked = 0
        self._requests: list[tuple[Any, Future[Any]]] = []
        self.stopping = False
        self.finished = False

    def put(self, result: dict[str, Any]) -> None:
        with self._cond:
            if self.stopping and not result.get("done"):
                raise StopTrial
            self._buffer.append(result)
            self._produced += 1
            self._cond.notify_all()
            # a checkpoint waits for its acknowledgement: if this process dies, the
            # controller still knows the checkpoint to retry from
            window = 1 if "_checkpoint" in result else self.window
            while self._produced - self._acked >= window and not self.stopping:
                if self._requests:
                    self._serve_locked()
                else:
                    self._cond.wait()
            if self.stopping and not result.get("done"):
                raise StopTrial

    def take(self, timeout: float) -> list[dict[str, Any]]:
        with self._cond:
            if not self._buffer and not self.finished and timeout > 0:
                self._cond.wait_for(lambda: self._buffer or self.finished, timeout)
            out, self._buffer = self._buffer, []
            return out

    def ack(self, n: int) -> None:
        with self._cond:
            if n > self._acked:
                self._acked = n
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopping = True
            self._cond.notify_all()

    def finish(self, returned: bool = False) -> None:
        """The trial's thread ended (``returned``: normally, so its last result is final)."""
        with self._cond:
            if returned and self._buffer:
                self._buffer[-1]["done"] = True
            self.finished = True
            self._cond.notify_all()
            self._serve_locked()

    # -- requests run in the trial's thread ------------------------------------
    def call(self, fn: Any, timeout: float | None = None) -> Any:
        future: Future[Any] = Future()
        with self._cond:
            if self.finished:
                future.set_result(None)
                direct = True
            else:
                self._requests.append((fn, future))
                self._cond.notify_all()
                direct = False
        return fn() if direct else future.result(timeout)

    def serve(self) -> None:
        """Run the pending requests (trial thread, between steps)."""
        with self._cond:
            self._serve_locked()

    def _serve_locked(self) -> None:
        while self._requests:
            fn, future = self._requests.pop(0)
            self._cond.release()
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)
            finally:
                self._cond.acquire()


@dataclass
class TrialContext:
    """What ``tune.get_context()`` returns inside a trial."""

    trial_id: str
    trial_name: str
    trial_dir: str
    experiment_name: str
    resources: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def get_trial_id(self) -> str:
        return self.trial_id

    def get_trial_name(self) -> str:
        return self.trial_name

    def get_trial_dir(self) -> str:
        return self.trial_dir

    def get_experiment_name(self) -> str:
        return self.experiment_name

    def get_trial_resources(self) -> dict[str, float]:
        return dict(self.resources)

    def get_world_rank(self) -> int:
        return 0

    def get_world_size(self) -> int:
        return 1

    def get_local_rank(self) -> int:
        return 0


def autofill(result: dict[str, Any], *, trial_id: str, iteration: int, time_this_iter: float,
             time_total: float, time_since_restore: float, iterations_since_restore: int,
             done: bool = False) -> dict[str, Any]:
    """Add the fields every result has (``training_iteration``, ``time_total_s``,
    ``timestamp``, ``trial_id``, ``done`` ...) to ``result`` (in place)."""
    now = time.time()
    result.setdefault("done", done)
    result["training_iteration"] = iteration
    result["trial_id"] = trial_id
    result["time_this_iter_s"] = time_this_iter
    result["time_total_s"] = time_total
    result["time_since_restore"] = time_since_restore
    result["iterations_since_restore"] = iterations_since_restore
    result["timestamp"] = int(now)
    result["date"] = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now))
    result["pid"] = os.getpid()
    result["hostname"] = _HOST
    return result


class Session:
    """One trial's state in its actor: counters, the checkpoint it resumes from,
    where its checkpoints go, and its outbox."""

    def __init__(self, context: TrialContext, outbox: Outbox, *, iteration: int = 0,
                 time_total: float = 0.0, checkpoint: Checkpoint | None = None,
                 local_storage: bool = True) -> None:
        self.context = context
        self.outbox = outbox
        self.checkpoint = checkpoint
        self.iteration = iteration
        self._time_offset = time_total
        self._local_storage = local_storage
        self._start = self._last = time.monotonic()
        self._iterations_since_restore = 0

    # -- results -----------------------------------------------------------
    def next_result(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """``metrics`` with the automatic fields of the next iteration."""
        now = time.monotonic()
        self.iteration += 1
        self._iterations_since_restore += 1
        result = dict(metrics)
        autofill(result, trial_id=self.context.trial_id, iteration=self.iteration,
                 time_this_iter=now - self._last, time_total=self._time_offset + now - self._start,
                 time_since_restore=now - self._start,
                 iterations_since_restore=self._iterations_since_restore)
        self._last = now
        return result

    def report(self, metrics: Mapping[str, Any], checkpoint: Checkpoint | None = None) -> None:
        """Record one result (and its checkpoint); may block (flow control) or
        raise :class:`StopTrial` when the trial was stopped."""
        if self.outbox.stopping:
            raise StopTrial
        result = self.next_result(metrics)
        if checkpoint is not None:
            result["_checkpoint"] = self.persist(checkpoint.path)
        self.outbox.put(result)

    # -- checkpoints -------------------------------------------------------
    def checkpoint_dir(self) -> str:
        """The directory for the checkpoint of the current iteration."""
        if self._local_storage:
            path = os.path.join(self.context.trial_dir, f"checkpoint_{self.iteration:06d}")
            os.makedirs(path, exist_ok=True)
            return path
        return tempfile.mkdtemp(prefix=f"checkpoint_{self.iteration:06d}_")

    def persist(self, source: str) -> tuple[str, Any]:
        """Keep the checkpoint in ``source``: ``("path", dir)`` in the trial
        directory, or ``("bytes", archive)`` when the trial runs on another node."""
        if self._local_storage:
            dest = os.path.join(self.context.trial_dir, f"checkpoint_{self.iteration:06d}")
        else:
            dest = tempfile.mkdtemp(prefix="checkpoint_")
        if os.path.abspath(source) != os.path.abspath(dest):
            shutil.copytree(source, dest, dirs_exist_ok=True)
        write_metadata(dest, self.iteration, self.time_total())
        if self._local_storage:
            return ("path", dest)
        try:
            return ("bytes", pack(dest))
        finally:
            shutil.rmtree(dest, ignore_errors=True)

    def restore_counters(self, iteration: int, time_total: float) -> None:
        """Continue counting from a checkpoint's ``iteration`` and ``time_total``."""
        self.iteration = iteration
        self._time_offset = time_total
        self._start = self._last = time.monotonic()
        self._iterations_since_restore = 0

    def time_total(self) -> float:
        """Seconds of training so far, restored ones included."""
        return self._time_offset + time.monotonic() - self._start

    def save_dict(self, directory: str, state: dict[str, Any]) -> None:
        with open(os.path.join(directory, _DICT_CHECKPOINT), "wb") as f:
            pickle.dump(state, f)


def load_dict(directory: str) -> dict[str, Any] | None:
    """The dict a class trainable's ``save_checkpoint`` returned, if it did."""
    path = os.path.join(directory, _DICT_CHECKPOINT)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return pickle.load(f)


# ------------------------------------------------------------ finding the session
_local = threading.local()
_active: set[Session] = set()
_active_lock = threading.Lock()


def activate(session: Session | None) -> None:
    """Make ``session`` the calling thread's session (None: clear it)."""
    old = getattr(_local, "session", None)
    with _active_lock:
        if old is not None:
            _active.discard(old)
        if session is not None:
            _active.add(session)
    _local.session = session


def current(required: bool = True) -> Session | None:
    """The calling trial's session."""
    session = getattr(_local, "session", None)
    if session is None:
        with _active_lock:
            if len(_active) == 1:
                session = next(iter(_active))
    if session is None and required:
        raise TuneError("tune.report / tune.get_checkpoint were called outside a trial: call "
                        "them from a trainable run by Tuner.fit() or tune.run()")
    return session


# ------------------------------------------------------------ the public functions
def report(metrics: Mapping[str, Any] | None = None, *, checkpoint: Checkpoint | None = None,
           **kwargs: Any) -> None:
    """Report one result of the calling trial: ``tune.report({"score": s})``, or the
    classic ``tune.report(score=s)``; ``checkpoint=`` a :class:`Checkpoint` to keep.

    Raises:
        TuneError: called outside a trial.
    """
    if metrics is not None and not isinstance(metrics, Mapping):
        raise TypeError(f"tune.report takes a dict of metrics, not {type(metrics).__name__}")
    merged = {**(metrics or {}), **kwargs}
    session = current()
    assert session is not None
    session.report(merged, checkpoint)


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint this trial resumes from (after a restore, a retry or a PBT
    exploit), else None."""
    session = current()
    assert session is not None
    return session.checkpoint


def get_context() -> TrialContext:
    """The calling trial's :class:`TrialContext` (id, name, directory, resources)."""
    session = current()
    assert session is not None
    return session.context


def get_trial_id() -> str:
    return get_context().trial_id


def get_trial_name() -> str:
    return get_context().trial_name


def get_trial_dir() -> str:
    return get_context().trial_dir


def get_trial_resources() -> dict[str, float]:
    return get_context().get_trial_resources()
