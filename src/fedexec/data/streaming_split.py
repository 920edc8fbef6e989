"""``Dataset.streaming_split(n)``: n iterators fed by one streaming run
(``DatasetPipeline.split(n)`` too: one iteration of the pipeline feeds them).

For training ingest: each of n workers (actors, processes, nodes) consumes its
own ``DataIterator``; one run of the dataset feeds them all, so the data is
read and transformed once, streaming, with the memory bound of one run. A
coordinator **actor** (``_SplitCoordinator``, no CPU, a thread per caller) runs
the streaming executor and hands each consumer *refs* of its blocks; the
consumer fetches the blocks itself, so no block passes through the coordinator
or the driver::

    streaming executor ──bundles──▶ pump thread ──assign──▶ queue[0] ──next(0)──▶ consumer 0
       (in the coordinator actor)     (pulls on demand)  └─▶ queue[1] ──next(1)──▶ consumer 1
                                                                      refs only ─┘

State of a pass (an epoch), guarded by the coordinator's condition::

    queues    [deque[piece]]   per consumer: (block ref, lo, hi) assigned, not yet
                               handed out (lo/hi None: the whole block)
    assigned  [int]            rows assigned to each consumer in this pass
    held      deque[piece]     equal=True: rows not assignable yet
    exhausted / error          the run ended / failed

Assignment: each block goes to the consumer with the fewest rows so far.
``equal=True`` keeps every consumer within reach of one level: a block goes
whole to the least-served consumer only if that keeps it at or below
``(rows seen) // n`` (so the held rows can always even the others out); at the
end, the held rows are sliced to bring everyone to exactly ``total // n`` rows,
and the rest (fewer than n rows) is dropped, or with ``drop_remainder=False``
given one row each to the first consumers (row counts then differ by at most
one, and the consumers together get every row).

Backpressure: the pump pulls the next bundle only while some consumer's queue
is empty and fewer than ``2 n`` blocks are queued (or none is), so a slow
consumer whose queue is full holds the whole run back (its executor stops at
its memory budget) instead of letting blocks pile up.

Epochs: each ``iter_batches``/``iter_rows`` call is a pass. A new pass starts
when all n consumers have asked for it (a barrier): the previous run is
stopped and a fresh one begins. Every consumer hears the end of a pass (its
iterator stops) once the run is exhausted and its queue is empty, and an
error of the run is raised in every consumer.

The refs handed to a consumer stay held by the coordinator until that consumer
calls again (it has fetched the blocks by then): a ref in flight to a consumer
is never the last one.

The coordinator lives as long as its executor (fedexec does not collect an
actor when its handles are dropped); once a pass has ended it holds only the
refs it last handed out.

Consumers poll: a call waits in the coordinator at most ``_POLL_S`` seconds and
answers "wait", so no call blocks an actor thread forever.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import fedexec
from fedexec.backends import capabilities

from .block import Block, BlockAccessor
from .context import DataContext
from .data_iterator import BlockStream, DataIterator

if TYPE_CHECKING:
    from .dataset import Dataset
    from .pipeline import DatasetPipeline

__all__ = ["streaming_split"]

_POLL_S = 1.0
#: Blocks queued per consumer before the pump stops pulling.
_QUEUED_PER_CONSUMER = 2

#: (block ref, lo, hi, rows of the whole block); lo/hi in the block's rows.
_Piece = tuple[Any, int, int, int]


def streaming_split(ds: Dataset | DatasetPipeline, n: int, *, equal: bool = False,
                    drop_remainder: bool = True,
                    what: str = "streaming_split") -> list[DataIterator]:
    """``n`` iterators over disjoint parts of ``ds`` that together cover it,
    fed by one streaming run in a coordinator actor (see the module docstring).
    They pickle (hand one to each training worker) and must be consumed
    concurrently; ``equal=True`` gives each exactly ``total // n`` rows per pass
    and drops the rest, or with ``drop_remainder=False`` gives the first
    ``total % n`` one row more. ``what`` names the caller in errors.

    Raises:
        ValueError: ``n`` is not an int >= 1.
        fedexec.UnsupportedOnBackendError: the backend has no actors.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what}() needs a number of splits n >= 1, got {n!r}")
    context = DataContext.get_current()
    executor = context.resolve_executor()
    if "actors" not in capabilities(executor.backend):
        have = [b for b in fedexec.backends.available() if "actors" in capabilities(b)]
        raise fedexec.UnsupportedOnBackendError(
            f"{what}() runs its coordinator in an actor, and the "
            f"{executor.backend!r} backend has no actors; use Dataset.split(n) (materializes "
            f"the parts), or a backend with actors: {', '.join(have)}")
    settings = context.snapshot()
    settings.executor = None  # the coordinator runs on the runtime it lives in
    coordinator = executor.options(num_cpus=0, max_concurrency=n + 2).actor(
        _SplitCoordinator, ds, n, (equal, drop_remainder), settings)
    return [_SplitIterator(coordinator, i, n) for i in range(n)]


class _Pass:
    """The assignment state of one pass (see the module docstring); the caller
    holds the coordinator's lock."""

    def __init__(self, n: int, equal: bool, drop_remainder: bool = True):
        self.n, self.equal, self.drop_remainder = n, equal, drop_remainder
        self.queues: list[deque[_Piece]] = [deque() for _ in range(n)]
        self.assigned = [0] * n
        self.held: deque[_Piece] = deque()
        self.held_rows = 0
        self.exhausted = False
        self.error: BaseException | None = None

    def wants_more(self) -> bool:
        """Whether the pump should pull another bundle now."""
        if self.exhausted or self.error is not None:
            return False
        queued = sum(len(q) for q in self.queues)
        starving = any(not q for q in self.queues)
        return starving and (queued < _QUEUED_PER_CONSUMER * self.n or queued == 0)

    def add(self, ref: Any, rows: int) -> None:
        """A block of ``rows`` rows came out of the run."""
        if rows <= 0:
            return
        if not self.equal:
            self._give(self._least_served(), (ref, 0, rows, rows))
            return
        self.held.append((ref, 0, rows, rows))
        self.held_rows += rows
        level = (sum(self.assigned) + self.held_rows) // self.n
        while self.held:
            m = self._least_served()
            piece = self.held[0]
            if self.assigned[m] + piece[2] - piece[1] > level:
                break
            self.held.popleft()
            self.held_rows -= piece[2] - piece[1]
            self._give(m, piece)

    def finish(self) -> None:
        """The run is exhausted: with ``equal``, even everyone out, then drop the
        rest (fewer than n rows) or hand it out a row each."""
        self.exhausted = True
        if not self.equal:
            return
        level = (sum(self.assigned) + self.held_rows) // self.n
        for m in range(self.n):
            need = level - self.assigned[m]
            while need > 0:
                ref, lo, hi, whole = self.held.popleft()
                take = min(need, hi - lo)
                self._give(m, (ref, lo, lo + take, whole))
                if take < hi - lo:
                    self.held.appendleft((ref, lo + take, hi, whole))
                need -= take
        if not self.drop_remainder:
            for m in range(self.n):
                if not self.held:
                    break
                ref, lo, hi, whole = self.held.popleft()
                self._give(m, (ref, lo, lo + 1, whole))
                if hi - lo > 1:
                    self.held.appendleft((ref, lo + 1, hi, whole))
        self.held.clear()
        self.held_rows = 0

    def _least_served(self) -> int:
        return min(range(self.n), key=lambda i: (self.assigned[i], len(self.queues[i]), i))

    def _give(self, m: int, piece: _Piece) -> None:
        self.queues[m].append(piece)
        self.assigned[m] += piece[2] - piece[1]


class _SplitCoordinator:
    """The actor running the dataset and assigning its blocks (module docstring)."""

    def __init__(self, ds: Dataset | DatasetPipeline, n: int, equal: tuple[bool, bool],
                 context: DataContext):
        """``equal``: (equal, drop_remainder) of ``streaming_split``."""
        self._ds, self._n, self._equal, self._context = ds, n, equal, context
        # the runtime this actor runs on, for the pump thread (which runs no task)
        self._executor = context.executor = fedexec.current_executor()
        self._cond = threading.Condition()
        self._epoch = -1
        self._joined: set[int] = set()
        self._pass: _Pass | None = None
        self._stop: threading.Event | None = None
        # the refs last handed to each consumer, kept until it calls again: some
        # backends (dask) forget an object whose only holder let go before the
        # receiver's copy of the ref registered
        self._lent: dict[int, list[Any]] = {}

    def start_epoch(self, index: int, after: int, timeout: float) -> int | None:
        """The pass consumer ``index`` takes part in (the first one numbered above
        ``after``, the last it saw), starting it once all n asked; None if it has
        not started within ``timeout`` seconds (ask again)."""
        with self._cond:
            self._lent.pop(index, None)
            if self._epoch <= after:
                self._joined.add(index)
                if len(self._joined) == self._n:
                    self._begin()
                else:
                    self._cond.wait_for(lambda: self._epoch > after, timeout)
            return self._epoch if self._epoch > after else None

    def next(self, index: int, epoch: int, timeout: float) -> tuple[str, Any]:
        """``("blocks", [(ref, lo, hi), ...])`` (lo/hi None: the whole block),
        ``("end", None)``, ``("error", exception)``, or ``("wait", None)`` when
        nothing came within ``timeout`` seconds (ask again)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._lent.pop(index, None)  # the consumer has fetched what it got last
            while True:
                state = self._pass
                if epoch != self._epoch or state is None:
                    return "end", None  # that pass is over
                if state.error is not None:
                    return "error", state.error
                queue = state.queues[index]
                if queue:
                    pieces = [(ref, None, None) if (lo, hi) == (0, whole) else (ref, lo, hi)
                              for ref, lo, hi, whole in queue]
                    self._lent[index] = [piece[0] for piece in queue]
                    queue.clear()
                    self._cond.notify_all()  # room in the queues: the pump may pull
                    return "blocks", pieces
                if state.exhausted:
                    return "end", None
                left = deadline - time.monotonic()
                if left <= 0:
                    return "wait", None
                self._cond.notify_all()
                self._cond.wait(left)

    def _begin(self) -> None:
        """A new pass (lock held): stop the previous run, start a pump for the next."""
        if self._stop is not None:
            self._stop.set()
        self._joined = set()
        self._epoch += 1
        self._pass = _Pass(self._n, *self._equal)
        self._stop = threading.Event()
        threading.Thread(target=self._pump, args=(self._pass, self._stop),
                         name="fedexec-data-split-pump", daemon=True).start()
        self._cond.notify_all()

    def _pump(self, state: _Pass, stop: threading.Event) -> None:
        """Pull bundles from a run of the dataset while the consumers want them."""
        bundles: Any = None
        try:
            bundles = self._ds._stream(self._context)
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: stop.is_set() or state.wants_more())
                    if stop.is_set():
                        return
                bundle = next(bundles, None)
                with self._cond:
                    if bundle is None:
                        state.finish()
                    else:
                        for ref, meta in bundle.blocks:
                            state.add(ref, _num_rows(self._executor, ref, meta))
                    self._cond.notify_all()
                    if bundle is None:
                        return
        except BaseException as e:
            with self._cond:
                state.error = e
                self._cond.notify_all()
        finally:
            if bundles is not None:
                bundles.close()


def _num_rows(executor: fedexec.Executor, ref: Any, meta: Any) -> int:
    if meta.num_rows is not None:
        return int(meta.num_rows)
    return BlockAccessor.for_block(executor.get(ref)).num_rows()


class _SplitIterator(DataIterator):
    """Split ``index`` of a ``streaming_split`` (picklable: the coordinator's
    handle travels with it). Each ``iter_*`` call is one pass."""

    def __init__(self, coordinator: Any, index: int, n: int):
        self._coordinator = coordinator
        self._index = index
        self._n = n
        self._last_epoch = -1

    def _block_stream(self) -> BlockStream:
        # resolved here, in the consumer's thread (a task's or actor's runtime),
        # not on the prefetch thread, which runs no task
        executor = DataContext.get_current().resolve_executor()
        return (lambda: self._blocks(executor)), None

    def _blocks(self, executor: fedexec.Executor) -> Iterator[Block]:
        coordinator, index = self._coordinator, self._index
        epoch = None
        while epoch is None:
            epoch = executor.get(coordinator.start_epoch.remote(index, self._last_epoch,
                                                                _POLL_S))
        self._last_epoch = epoch
        while True:
            kind, value = executor.get(coordinator.next.remote(index, epoch, _POLL_S))
            if kind == "wait":
                continue
            if kind == "end":
                return
            if kind == "error":
                raise value
            for ref, lo, hi in value:
                block = executor.get(ref)
                yield block if lo is None else BlockAccessor.for_block(block).slice(lo, hi)

    def shutdown(self) -> None:
        """End the coordinator actor this split shares with its n - 1 siblings (its
        run stops; a sibling still iterating fails with ``ActorDiedError``). For
        whoever made the split, once every consumer is done; idempotent. Without
        it the coordinator lives until its executor shuts down."""
        fedexec.kill(self._coordinator)

    def __repr__(self) -> str:
        return f"DataIterator(streaming_split: split {self._index} of {self._n})"
