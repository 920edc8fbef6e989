"""What a training worker's loop talks to: ``train.report``, ``get_checkpoint``,
``get_context``, ``get_dataset_shard``.

The loop runs in a thread of its worker actor (:mod:`.worker`) with one
:class:`Session`. ``report`` hands the result to the session's channel and
waits until the trainer has collected the result of *every* worker for that
round and asks for the next one: a barrier across the group, kept by the
trainer (so a worker that dies in the middle is noticed there, not in a hang)::

    worker k: report(m, ckpt) ─put─▶ channel ─poll()─▶ trainer (waits for all n)
              ◀── released by the trainer's next poll() of worker k ──┘

Only rank 0's checkpoint is kept. Rank 0 writes it itself: straight into the
run directory when it runs on the trainer's node (only the local write), else
as an archive sent with its result.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedexec.tune.checkpoint import Checkpoint, pack

from .context import TrainContext

__all__ = [
    "Session",
    "get_checkpoint",
    "get_context",
    "get_dataset_shard",
    "report",
]


def checkpoint_name(index: int) -> str:
    """The directory name of the ``index``-th checkpoint of a run."""
    return f"checkpoint_{index:06d}"


class Stopped(BaseException):
    """Raised in a worker's loop (from ``report``) when the trainer ended the run.
    A BaseException, so the user's ``except Exception`` lets it pass."""


@dataclass
class Channel:
    """One worker's results, one at a time. ``put`` (the loop's thread) of a
    report waits until the trainer has taken it *and* called ``take`` again
    (the barrier); ``take`` releases every report taken before and waits for
    the next item: ``("report", (metrics, checkpoint))``, ``("done", None)`` or
    ``("error", exception)``."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    item: tuple[str, Any] | None = None
    puts: int = 0  # reports put
    taken: int = 0  # reports taken
    released: int = 0  # reports released
    stopped: bool = False

    def put(self, kind: str, value: Any) -> None:
        with self.cond:
            if self.stopped:
                raise Stopped
            self.item = (kind, value)
            self.cond.notify_all()
            if kind != "report":
                return
            number, self.puts = self.puts, self.puts + 1
            self.cond.wait_for(lambda: self.released > number or self.stopped)
            if self.stopped:
                raise Stopped

    def take(self, timeout: float | None = None) -> tuple[str, Any] | None:
        """The next item (None if none came within ``timeout``)."""
        with self.cond:
            self.released = self.taken
            self.cond.notify_all()
            if not self.cond.wait_for(lambda: self.item is not None, timeout):
                return None
            item, self.item = self.item, None
            assert item is not None
            if item[0] == "report":
                self.taken += 1
            return item

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


@dataclass
class Session:
    """One worker's state for one run of its loop.

    Attributes:
        context: its place in the group.
        checkpoint: the checkpoint to resume from (None on a fresh start).
        datasets: name -> this worker's ``DataIterator``.
        run_dir: where rank 0's checkpoints go when ``local`` (the trainer's node).
        local: this worker runs on the trainer's node.
        next_index: the number of the next checkpoint.
    """

    context: TrainContext
    checkpoint: Checkpoint | None
    datasets: dict[str, Any]
    run_dir: str
    local: bool
    next_index: int
    channel: Channel = field(default_factory=Channel)

    def report(self, metrics: Mapping[str, Any], checkpoint: Checkpoint | None) -> None:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"train.report takes a dict of metrics, not {type(metrics).__name__}")
        saved = None
        if checkpoint is not None and self.context.world_rank == 0:
            saved = self._persist(checkpoint)
        if checkpoint is not None:
            self.next_index += 1
        self.channel.put("report", (dict(metrics), saved))

    def _persist(self, checkpoint: Checkpoint) -> tuple[str, Any]:
        """``("path", dir)`` in the run directory, or ``("bytes", archive)``."""
        source = os.fspath(checkpoint.path)
        if not os.path.isdir(source):
            raise FileNotFoundError(f"train.report(checkpoint=...): {source!r} is not a directory")
        name = checkpoint_name(self.next_index)
        if not self.local:
            return ("bytes", (name, pack(source)))
        dest = os.path.join(self.run_dir, name)
        if os.path.abspath(source) != os.path.abspath(dest):
            partial = dest + ".partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(source, partial)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(partial, dest)
        return ("path", dest)


# ------------------------------------------------------------ finding the session
_lock = threading.Lock()
_sessions: dict[int, Session] = {}  # thread id -> session
_only: list[Session] = []  # the process's sessions, for threads the loop starts


def activate(session: Session | None) -> None:
    """Make ``session`` the calling thread's session (None: clear it)."""
    with _lock:
        old = _sessions.pop(threading.get_ident(), None)
        if old is not None and old in _only:
            _only.remove(old)
        if session is not None:
            _sessions[threading.get_ident()] = session
            _only.append(session)


def current() -> Session:
    """The calling worker's session.

    Raises:
        RuntimeError: not inside a training worker's loop.
    """
    with _lock:
        session = _sessions.get(threading.get_ident())
        if session is None and len(_only) == 1:
            session = _only[0]
    if session is None:
        raise RuntimeError("fedexec.train session functions (report, get_checkpoint, "
                           "get_context, get_dataset_shard) work only inside "
                           "train_loop_per_worker, run by a trainer's fit()")
    return session


# ------------------------------------------------------------ the public functions
def report(metrics: Mapping[str, Any], *, checkpoint: Checkpoint | None = None) -> None:
    """Report one result from every worker (each calls it the same number of
    times; it returns once all have reported). Rank 0's ``metrics`` are the
    run's result; rank 0's ``checkpoint`` (a directory) is kept under
    ``<storage_path>/<name>/checkpoint_NNNNNN`` (the others' are ignored).

    Raises:
        RuntimeError: called outside a training worker.
    """
    current().report(metrics, checkpoint)


def get_checkpoint() -> Checkpoint | None:
    """The latest checkpoint to resume from (after a worker failure, or the
    trainer's ``resume_from_checkpoint``), else None."""
    return current().checkpoint


def get_context() -> TrainContext:
    """The calling worker's :class:`TrainContext` (ranks, sizes, names)."""
    return current().context


def get_dataset_shard(name: str = "train") -> Any:
    """This worker's share of the dataset passed as ``datasets={name: ds}``: a
    ``fedexec.data.DataIterator`` (``iter_batches``, ``iter_torch_batches``,
    ``iter_rows``), disjoint from the other workers' shares, together with
    them every row, its row count within one of theirs, and fed by one
    streaming run of the dataset. The dataset's own tasks need CPUs beyond
    the workers' (leave some free, as in Ray).

    Raises:
        KeyError: the trainer got no dataset of that name.
    """
    datasets = current().datasets
    if name not in datasets:
        raise KeyError(f"no dataset named {name!r} was given to the trainer (datasets= has "
                       f"{sorted(datasets) or 'none'})")
    return datasets[name]
