"""Physical operators: the state machines the streaming executor drives.

Every operator takes bundles on its inputs (``add_input``), starts tasks when the
executor lets it (``launch_one``), learns of finished tasks (``on_task_done``)
and offers its outputs **in input order** (``take_output``). The executor owns
the loop, the memory budget and the task callbacks; operators never block.

State of a task-running operator::

    queue       deque[RefBundle]           inputs not started yet (their bytes: queued)
    active      {meta_ref: _Task}          tasks in flight: seq, refs, inputs held, estimates
    reorder     _Reorder                   outputs by seq; released only when every
                                           earlier seq is filled (ordered output)
    ratio       sum(out bytes)/sum(in)     learned; estimates a new task's output bytes

A task is submitted with ``num_returns = 1 + k``: ``[metadata list, block 1..k]``;
the executor waits on the metadata ref only, so block data never reaches the
driver. ``usage_bytes()`` is what the operator holds against the run's memory
budget: queued inputs, the inputs of running tasks, their estimated outputs, and
outputs not yet taken downstream.

Operators here: :class:`InputDataOperator` (bundles already in the store),
:class:`MapOperator` (fused reads and row/batch transforms as tasks),
:class:`LimitOperator`, :class:`UnionOperator`, :class:`ZipOperator` and
:class:`AllToAllOperator` (a barrier running a driver-side function that
schedules its own tasks). The actor-pool map operator is in ``actor_pool.py``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fedexec

from .block import BlockMetadata
from .bundle import RefBundle
from .datasource import ReadTask
from .stats import OperatorStats
from .transforms import MapChain, TaskContext, dump_chain, run_map_task

if TYPE_CHECKING:
    from .executor import Run

__all__ = ["AllToAllContext", "AllToAllOperator", "InputDataOperator", "LimitOperator",
           "MapOperator", "PhysicalOperator", "UnionOperator", "ZipOperator"]


#: Tasks an operator may run before the first one finished (see ``_launch_cap``).
_SLOW_START = 2


class _Reorder:
    """Outputs released in the order their sequence numbers were reserved."""

    def __init__(self) -> None:
        self._next_seq = 0
        self._next_out = 0
        self._filled: dict[int, list[RefBundle]] = {}
        self.ready: deque[RefBundle] = deque()
        self.bytes = 0

    def reserve(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def fill(self, seq: int, bundles: list[RefBundle]) -> None:
        self._filled[seq] = bundles
        self.bytes += sum(b.size_bytes() for b in bundles)
        while self._next_out in self._filled:
            self.ready.extend(self._filled.pop(self._next_out))
            self._next_out += 1

    def take(self) -> RefBundle:
        bundle = self.ready.popleft()
        self.bytes -= bundle.size_bytes()
        return bundle

    def waiting(self) -> int:
        """Outputs filled but held back behind an earlier, unfinished one."""
        return len(self._filled)

    def clear(self) -> None:
        self._filled.clear()
        self.ready.clear()
        self.bytes = 0


@dataclass
class _Task:
    """A task in flight (or an actor call)."""

    seq: int
    refs: list[fedexec.ObjectRef[Any]]
    held: list[Any] = field(default_factory=list)  # inputs kept alive until it ends
    held_bytes: int = 0
    est_bytes: int = 0
    est_rows: int | None = None
    base_bytes: int = 0
    actor: Any = None

    @property
    def meta_ref(self) -> fedexec.ObjectRef[Any]:
        return self.refs[0]


class PhysicalOperator:
    """The interface the executor drives (see the module docstring).

    Attributes:
        name: shown in stats, progress bars and errors.
        inputs: the upstream operators.
        is_source: makes data from nothing (reads, in-memory inputs): its launches
            are what the memory budget holds back first.
        preserves_rows: one output row per input row, so a downstream limit of n
            rows means this operator needs at most n rows (``row_limit``).
        row_limit: rows downstream needs at most (None: all); set at planning.
    """

    is_source = False
    preserves_rows = False

    def __init__(self, name: str, inputs: Sequence[PhysicalOperator]):
        self.name = name
        self.inputs = list(inputs)
        self.stats = OperatorStats(name)
        self.row_limit: int | None = None
        self.schema: Any = None  # the last schema seen on an output
        self._inputs_done = [False] * len(self.inputs)
        self._halted = False
        self._reorder = _Reorder()
        self.run: Run | None = None

    # -- lifecycle -------------------------------------------------------------------
    def check(self, executor: fedexec.Executor) -> None:
        """Raise now if this operator cannot run on ``executor`` (before anything starts)."""

    def start(self, run: Run) -> None:
        """Begin the run."""
        self.run = run

    def shutdown(self) -> None:
        """End of the run (normal or not): release what the operator holds (actors)."""

    def poll(self) -> None:
        """Called every loop iteration: pick up work finished outside tasks."""

    def halt(self) -> None:
        """Downstream needs nothing more: cancel tasks in flight and drop inputs."""
        self._halted = True

    # -- inputs ------------------------------------------------------------------------
    def add_input(self, bundle: RefBundle, index: int) -> None:
        """A bundle from input ``index``."""
        raise NotImplementedError

    def input_done(self, index: int) -> None:
        """Input ``index`` will send nothing more."""
        self._inputs_done[index] = True

    def all_inputs_done(self) -> bool:
        return all(self._inputs_done)

    # -- tasks -------------------------------------------------------------------------
    def ready_to_launch(self) -> bool:
        """Whether a task could start now (the budget aside)."""
        return False

    def next_task_bytes(self) -> int:
        """The estimated output bytes of the next launch."""
        return 0

    def launch_one(self) -> None:
        """Start one task."""
        raise NotImplementedError

    def active_tasks(self) -> list[_Task]:
        """Tasks in flight."""
        return []

    def task_for(self, meta_ref: fedexec.ObjectRef[Any]) -> _Task | None:
        """The task in flight whose metadata ref is ``meta_ref`` (None once it was
        cancelled by a halt)."""
        return None

    def on_task_done(self, task: _Task) -> None:
        """``task``'s metadata ref is done (raises the task's error)."""
        raise NotImplementedError

    # -- outputs -----------------------------------------------------------------------
    def has_output(self) -> bool:
        return bool(self._reorder.ready)

    def take_output(self) -> RefBundle:
        return self._reorder.take()

    def completed(self) -> bool:
        """Nothing more will come out (and everything that did was taken)."""
        return (self._halted or self._work_done()) and not self._reorder.ready

    def _work_done(self) -> bool:
        return self.all_inputs_done() and not self.active_tasks()

    def usage_bytes(self) -> int:
        """Bytes held against the run's memory budget."""
        return self._reorder.bytes

    def describe(self) -> str:
        """What the operator waits on, for stall errors."""
        return (f"{self.name}: {len(self.active_tasks())} tasks in flight, "
                f"{self._reorder.waiting()} outputs held behind an earlier one")

    def _emit(self, seq: int, bundles: list[RefBundle]) -> None:
        for b in bundles:
            if b.schema() is not None:
                self.schema = b.schema()
        self._reorder.fill(seq, bundles)


class _TaskOperator(PhysicalOperator):
    """Shared machinery of operators that run tasks returning ``[metas, *blocks]``."""

    def __init__(self, name: str, inputs: Sequence[PhysicalOperator]):
        super().__init__(name, inputs)
        self._active: dict[fedexec.ObjectRef[Any], _Task] = {}
        self._views: dict[Any, Any] = {}
        self._out_bytes = 0
        self._in_bytes = 0
        self._rows_out = 0

    def active_tasks(self) -> list[_Task]:
        return list(self._active.values())

    def task_for(self, meta_ref: fedexec.ObjectRef[Any]) -> _Task | None:
        return self._active.get(meta_ref)

    def _track(self, task: _Task) -> None:
        assert self.run is not None
        self._active[task.meta_ref] = task
        self.stats.task_started()
        self.run.track(self, task)

    def submit(self, fn: Callable[..., Any], args: Sequence[Any], num_outputs: int,
               options: dict[str, Any], **task: Any) -> _Task:
        """Submit ``fn(*args)`` returning ``1 + num_outputs`` values, and track it."""
        assert self.run is not None
        key = (num_outputs, tuple(sorted(options.items())))
        view = self._views.get(key)
        if view is None:  # one options view per shape: validated once, not per task
            view = self._views[key] = self.run.executor.options(
                num_returns=1 + num_outputs, name=self.name, **options)
        refs = view.submit(fn, *args)
        t = _Task(seq=self._reorder.reserve(), refs=list(refs), **task)
        self._track(t)
        return t

    def on_task_done(self, task: _Task) -> None:
        assert self.run is not None
        del self._active[task.meta_ref]
        metas: list[BlockMetadata] = self.run.executor.get(task.meta_ref)
        task.held, task.held_bytes = [], 0  # the inputs may go now
        self.stats.task_finished(metas)
        out = [RefBundle(((ref, meta),)) for ref, meta in zip(task.refs[1:], metas)
               if meta.num_rows != 0 or meta.num_rows is None]
        for meta in metas:
            if meta.schema is not None:
                self.schema = meta.schema
        produced = sum(m.size_bytes or 0 for m in metas)
        self._out_bytes += produced
        self._in_bytes += task.base_bytes
        self._rows_out += sum(m.num_rows or 0 for m in metas)
        self._emit(task.seq, out)

    def _ratio(self) -> float:
        """Learned output bytes per input byte (1.0 until a task finished)."""
        return self._out_bytes / self._in_bytes if self._in_bytes > 0 else 1.0

    def halt(self) -> None:
        super().halt()
        assert self.run is not None
        self.run.cancel([t.meta_ref for t in self._active.values()])
        self._active.clear()
        self._reorder.clear()

    def usage_bytes(self) -> int:
        return super().usage_bytes() + sum(t.est_bytes + t.held_bytes
                                           for t in self._active.values())


class InputDataOperator(PhysicalOperator):
    """Bundles already in the store (an in-memory source, a materialized dataset):
    no tasks; each "launch" passes one bundle on, so the budget paces them."""

    is_source = True
    preserves_rows = True

    def __init__(self, bundles: Sequence[RefBundle], name: str = "InputData"):
        super().__init__(name, [])
        self._bundles = deque(bundles)
        self._rows_out = 0

    def ready_to_launch(self) -> bool:
        if self._halted or not self._bundles:
            return False
        return self.row_limit is None or self._rows_out < self.row_limit

    def next_task_bytes(self) -> int:
        return self._bundles[0].size_bytes()

    def launch_one(self) -> None:
        bundle = self._bundles.popleft()
        self._rows_out += bundle.num_rows() or 0
        self.stats.task_started()
        self.stats.outputs(bundle.metadata)
        self._emit(self._reorder.reserve(), [bundle])

    def _work_done(self) -> bool:
        return not self._bundles or (self.row_limit is not None and
                                     self._rows_out >= self.row_limit)

    def halt(self) -> None:
        super().halt()
        self._bundles.clear()
        self._reorder.clear()


class MapOperator(_TaskOperator):
    """Fused reads and row/batch transforms, one task per input (read task or bundle).

    Args:
        name: the fused name (``"ReadRange->Map(f)"``).
        inputs: the upstream operator (none for a read).
        chain: the fused transforms.
        read_tasks: for a read, the read tasks (then ``inputs`` is empty).
        options: task options (``num_cpus``, ``num_gpus``, ``resources``).
        concurrency: at most this many tasks at once (None: the context's cap).
        min_rows_per_task: gather input bundles until a task has this many rows
            (``map_batches``' ``batch_size``).
        preserves_rows: every stage maps one row to one row.
    """

    def __init__(self, name: str, inputs: Sequence[PhysicalOperator], chain: MapChain, *,
                 read_tasks: Sequence[ReadTask] | None = None,
                 options: dict[str, Any] | None = None, concurrency: int | None = None,
                 min_rows_per_task: int | None = None, preserves_rows: bool = False):
        super().__init__(name, inputs)
        self.chain = chain
        self.is_source = read_tasks is not None
        self.preserves_rows = preserves_rows
        self._read_tasks: deque[ReadTask] = deque(read_tasks or ())
        self._queue: deque[RefBundle] = deque()
        self._queued_bytes = 0
        self._queued_rows = 0
        self.options = dict(options or {})
        self.concurrency = concurrency
        self.min_rows_per_task = min_rows_per_task
        self._cap = 1
        self._chain_blob = b""
        self._task_index = 0
        self._num_reads = len(self._read_tasks)

    def read_tasks(self) -> list[ReadTask]:
        """The read tasks not started yet (all of them before the run)."""
        return list(self._read_tasks)

    def expected_blocks(self) -> int | None:
        """Blocks a read should produce (one per read task), for progress bars."""
        return self._num_reads if self.is_source else None

    def start(self, run: Run) -> None:
        super().start(run)
        cap = run.context.tasks_in_flight_cap(run.resources)
        self._cap = min(cap, self.concurrency) if self.concurrency else cap
        self._chain_blob = dump_chain(self.chain)

    # -- inputs ------------------------------------------------------------------------
    def add_input(self, bundle: RefBundle, index: int) -> None:
        if self._halted:
            return
        self._queue.append(bundle)
        self._queued_bytes += bundle.size_bytes()
        self._queued_rows += bundle.num_rows() or 0

    def _work_done(self) -> bool:
        return (self.all_inputs_done() and not self._queue and not self._read_tasks
                and not self._active) or (self._limit_reached() and not self._active)

    def _limit_reached(self) -> bool:
        if self.row_limit is None:
            return False
        in_flight = sum(t.est_rows or 0 for t in self._active.values())
        return self._rows_out + in_flight >= self.row_limit

    # -- launching -----------------------------------------------------------------------
    def ready_to_launch(self) -> bool:
        return len(self._active) < self._launch_cap() and self.ready_to_launch_inputs()

    def _launch_cap(self) -> int:
        """The cap on tasks in flight; a slow start (2) until a task has finished,
        while the output size per input byte is still a guess."""
        return self._cap if self.stats.tasks else min(self._cap, _SLOW_START)

    def ready_to_launch_inputs(self) -> bool:
        """Whether the next task's inputs are there (the cap on tasks aside)."""
        if self._halted or self._limit_reached():
            return False
        if self._read_tasks:
            return True
        if not self._queue:
            return False
        if self.min_rows_per_task is None or self.all_inputs_done():
            return True
        return self._queued_rows >= self.min_rows_per_task

    def _next_inputs(self, pop: bool) -> list[RefBundle]:
        """The bundles of the next task (at least ``min_rows_per_task`` rows if set)."""
        taken: list[RefBundle] = []
        rows = 0
        for bundle in list(self._queue):
            taken.append(bundle)
            rows += bundle.num_rows() or 0
            if self.min_rows_per_task is None or rows >= self.min_rows_per_task:
                break
        if pop:
            for bundle in taken:
                self._queue.popleft()
                self._queued_bytes -= bundle.size_bytes()
                self._queued_rows -= bundle.num_rows() or 0
        return taken

    def _read_estimate(self, task: ReadTask) -> int:
        if task.metadata.size_bytes is not None:
            return task.metadata.size_bytes
        done = self.stats.tasks
        return self._out_bytes // done if done else 0

    def next_task_bytes(self) -> int:
        if self._read_tasks:
            return int(self._read_estimate(self._read_tasks[0]) * self._ratio())
        return int(sum(b.size_bytes() for b in self._next_inputs(pop=False)) * self._ratio())

    def launch_one(self) -> None:
        assert self.run is not None
        ctx = TaskContext(self._task_index, self.name, self.run.run_id, self.row_limit)
        self._task_index += 1
        if self._read_tasks:
            read = self._read_tasks.popleft()
            base = self._read_estimate(read)
            k = self._num_outputs(base)
            self.submit(run_map_task, [self._chain_blob, ctx, k, read], k, self.options,
                        est_bytes=int(base * self._ratio()), est_rows=read.metadata.num_rows
                        if self.preserves_rows else None, base_bytes=base)
            return
        bundles = self._next_inputs(pop=True)
        base = sum(b.size_bytes() for b in bundles)
        rows = sum(b.num_rows() or 0 for b in bundles)
        self._dispatch(ctx, bundles, base, rows if self.preserves_rows else None)

    def _dispatch(self, ctx: TaskContext, bundles: list[RefBundle], base: int,
                  est_rows: int | None) -> None:
        """Start the task for ``bundles`` (the actor pool overrides this)."""
        refs = [ref for b in bundles for ref in b.block_refs]
        self.submit(run_map_task, [self._chain_blob, ctx, 1, *refs], 1, self.options,
                    held=bundles, held_bytes=base, est_bytes=int(base * self._ratio()),
                    est_rows=est_rows, base_bytes=base)

    def _num_outputs(self, estimate: int) -> int:
        assert self.run is not None
        target = self.run.context.target_max_block_size
        return max(1, -(-estimate // target)) if estimate > 0 else 1

    def halt(self) -> None:
        super().halt()
        self._queue.clear()
        self._read_tasks.clear()
        self._queued_bytes = self._queued_rows = 0

    def usage_bytes(self) -> int:
        return super().usage_bytes() + self._queued_bytes

    def describe(self) -> str:
        pending = len(self._read_tasks) if self.is_source else len(self._queue)
        what = "read tasks not started" if self.is_source else "input bundles queued"
        return (f"{self.name}: {len(self._active)} tasks in flight (cap {self._cap}), "
                f"{pending} {what}, {self._reorder.waiting()} outputs held behind an "
                "earlier one")


def _slice_blocks(num_rows: int, *blocks: Any) -> list[Any]:
    """Task body of a limit: the first ``num_rows`` rows of ``blocks`` as one block."""
    import time

    from .block import BlockAccessor
    from .transforms import finish_task

    start, cpu = time.time(), time.thread_time()
    out = []
    left = num_rows
    for block in blocks:
        acc = BlockAccessor.for_block(block)
        n = min(left, acc.num_rows())
        out.append(acc.slice(0, n))
        left -= n
    return finish_task(out, 1, (), start, cpu)


class LimitOperator(_TaskOperator):
    """The first ``n`` rows: bundles pass whole until the one that crosses ``n``,
    whose last block is cut by a small task; then it is satisfied and the
    executor halts everything upstream."""

    preserves_rows = True

    def __init__(self, n: int, input_op: PhysicalOperator):
        super().__init__(f"Limit[{n}]", [input_op])
        self.limit = n
        self._remaining = n

    def satisfied(self) -> bool:
        """``n`` rows have been passed on (or are being cut)."""
        return self._remaining <= 0

    def add_input(self, bundle: RefBundle, index: int) -> None:
        if self._remaining <= 0:
            return
        rows = bundle.num_rows() or 0
        if rows <= self._remaining:
            self._remaining -= rows
            self.stats.outputs(bundle.metadata)
            self._emit(self._reorder.reserve(), [bundle])
            return
        whole: list[tuple[Any, BlockMetadata]] = []
        for ref, meta in bundle.blocks:
            n = meta.num_rows or 0
            if n <= self._remaining:
                whole.append((ref, meta))
                self._remaining -= n
                continue
            if whole:
                kept = RefBundle(tuple(whole))
                self.stats.outputs(kept.metadata)
                self._emit(self._reorder.reserve(), [kept])
            self.submit(_slice_blocks, [self._remaining, ref], 1, {"num_cpus": 0},
                        held=[bundle], est_bytes=0)
            self._remaining = 0
            return

    def _work_done(self) -> bool:
        return (self.satisfied() or self.all_inputs_done()) and not self._active


class UnionOperator(PhysicalOperator):
    """The rows of its inputs one after the other (input 0 first): no tasks; a later
    input's bundles wait (counted against the budget) until the earlier inputs end."""

    preserves_rows = True

    def __init__(self, inputs: Sequence[PhysicalOperator]):
        super().__init__("Union", inputs)
        self._buffers: list[deque[RefBundle]] = [deque() for _ in inputs]
        self._current = 0
        self._buffered = 0

    def add_input(self, bundle: RefBundle, index: int) -> None:
        if self._halted:
            return
        self._buffers[index].append(bundle)
        self._buffered += bundle.size_bytes()
        self._advance()

    def input_done(self, index: int) -> None:
        super().input_done(index)
        self._advance()

    def _advance(self) -> None:
        while self._current < len(self._buffers):
            buf = self._buffers[self._current]
            while buf:
                bundle = buf.popleft()
                self._buffered -= bundle.size_bytes()
                self.stats.outputs(bundle.metadata)
                self._emit(self._reorder.reserve(), [bundle])
            if not self._inputs_done[self._current]:
                return
            self._current += 1

    def halt(self) -> None:
        super().halt()
        for buf in self._buffers:
            buf.clear()
        self._buffered = 0
        self._reorder.clear()

    def usage_bytes(self) -> int:
        return super().usage_bytes() + self._buffered


def _zip_blocks(spans: list[tuple[int, int]], left: Any, *rights: Any) -> list[Any]:
    """Task body of a zip: ``left`` beside the rows ``spans[i]`` of ``rights[i]``."""
    import time

    from .block import BlockAccessor
    from .transforms import finish_task

    start, cpu = time.time(), time.thread_time()
    right = BlockAccessor.concat([BlockAccessor.for_block(b).slice(lo, hi)
                                  for b, (lo, hi) in zip(rights, spans)])
    return finish_task([zip_two(left, right)], 1, (), start, cpu)


def zip_two(left: Any, right: Any) -> Any:
    """Rows of ``left`` and ``right`` side by side: tables get the columns of both
    (a right column whose name is taken gets the suffix ``_1``); otherwise each
    row is the pair ``(left_row, right_row)``."""
    import pyarrow as pa

    from .block import BlockAccessor

    if isinstance(left, pa.Table) and isinstance(right, pa.Table):
        out = left
        for name in right.column_names:
            new = name
            while new in out.column_names:
                new = f"{new}_1"
            out = out.append_column(new, right.column(name))
        return out
    return list(zip(BlockAccessor.for_block(left).iter_rows(),
                    BlockAccessor.for_block(right).iter_rows()))


class ZipOperator(_TaskOperator):
    """Row ``i`` of the left input beside row ``i`` of the right one, streaming: a
    left block is zipped as soon as the right rows it needs have arrived (their
    block boundaries may differ); the right blocks go into its task as refs."""

    preserves_rows = True

    def __init__(self, left: PhysicalOperator, right: PhysicalOperator):
        super().__init__("Zip", [left, right])
        self._left: deque[tuple[Any, BlockMetadata]] = deque()
        self._right: deque[tuple[Any, BlockMetadata]] = deque()
        self._right_offset = 0  # rows of the first right block already used
        self._bytes = 0
        self._left_rows = 0
        self._right_rows = 0

    def add_input(self, bundle: RefBundle, index: int) -> None:
        if self._halted:
            return
        (self._left if index == 0 else self._right).extend(bundle.blocks)
        self._bytes += bundle.size_bytes()
        if index == 0:
            self._left_rows += bundle.num_rows() or 0
        else:
            self._right_rows += bundle.num_rows() or 0

    def input_done(self, index: int) -> None:
        super().input_done(index)
        if self.all_inputs_done() and self._left_rows != self._right_rows:
            raise ValueError(f"zip() needs datasets with the same number of rows; the left "
                             f"one has {self._left_rows}, the right one {self._right_rows}")

    def _right_available(self) -> int:
        return sum(meta.num_rows or 0 for _, meta in self._right) - self._right_offset

    def ready_to_launch(self) -> bool:
        if self._halted or not self._left:
            return False
        need = self._left[0][1].num_rows or 0
        return self._right_available() >= need

    def next_task_bytes(self) -> int:
        return 2 * (self._left[0][1].size_bytes or 0)

    def launch_one(self) -> None:
        left_ref, left_meta = self._left.popleft()
        need = left_meta.num_rows or 0
        spans: list[tuple[int, int]] = []
        refs: list[Any] = []
        held_bytes = left_meta.size_bytes or 0
        while need > 0:
            ref, meta = self._right[0]
            n = meta.num_rows or 0
            take = min(need, n - self._right_offset)
            spans.append((self._right_offset, self._right_offset + take))
            refs.append(ref)
            need -= take
            self._right_offset += take
            if self._right_offset == n:
                self._right.popleft()
                self._right_offset = 0
                held_bytes += meta.size_bytes or 0
        self._bytes -= held_bytes
        self.submit(_zip_blocks, [spans, left_ref, *refs], 1, {"num_cpus": 0.5},
                    held=[left_ref, *refs], held_bytes=held_bytes, est_bytes=held_bytes)

    def _work_done(self) -> bool:
        return self.all_inputs_done() and not self._left and not self._active

    def usage_bytes(self) -> int:
        return super().usage_bytes() + self._bytes


@dataclass
class AllToAllContext:
    """What an all-to-all function gets besides its input bundles.

    Attributes:
        executor: the run's executor (schedule tasks with it, or with :meth:`submit`).
        data_context: the run's settings.
        name: the operator's name.
        run_id: an id unique to the run.
    """

    executor: fedexec.Executor
    data_context: Any
    name: str
    run_id: str
    _on_done: Callable[[Any], None] = field(repr=False, default=lambda ref: None)
    _refs: set[Any] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cancelled: bool = field(default=False, repr=False)

    def submit(self, fn: Callable[..., Any], *args: Any, **options: Any) -> Any:
        """``executor.options(**options).submit(fn, *args)``, tracked by the run: it
        counts as progress when it finishes and is cancelled if the run stops.

        Raises:
            fedexec.TaskCancelledError: the run was stopped.
        """
        with self._lock:
            if self._cancelled:
                raise fedexec.TaskCancelledError(f"the run of {self.name} was stopped")
        options.setdefault("name", self.name)
        refs = self.executor.options(**options).submit(fn, *args)
        for ref in refs if isinstance(refs, list) else [refs]:
            with self._lock:
                self._refs.add(ref)
            ref.add_done_callback(self._done)
        return refs

    def _done(self, ref: Any) -> None:
        with self._lock:
            self._refs.discard(ref)
        self._on_done(ref)

    def _cancel(self) -> list[Any]:
        with self._lock:
            self._cancelled = True
            refs, self._refs = list(self._refs), set()
        return refs


#: ``fn(bundles, ctx) -> bundles``: an all-to-all transform, run in the driver.
AllToAllFn = Callable[[list[RefBundle], AllToAllContext], list[RefBundle]]


class AllToAllOperator(PhysicalOperator):
    """A barrier: collects every input bundle, then runs ``fn(bundles, ctx)`` on a
    thread of the driver (it schedules its own tasks through ``ctx``); its result
    bundles stream on in the order returned."""

    def __init__(self, name: str, fn: AllToAllFn, input_op: PhysicalOperator):
        super().__init__(name, [input_op])
        self.fn = fn
        self._collected: list[RefBundle] = []
        self._bytes = 0
        self._thread: threading.Thread | None = None
        self._ctx: AllToAllContext | None = None
        self._result: list[RefBundle] | None = None
        self._error: BaseException | None = None
        self._finished = threading.Event()

    def add_input(self, bundle: RefBundle, index: int) -> None:
        if not self._halted:
            self._collected.append(bundle)
            self._bytes += bundle.size_bytes()

    def ready_to_launch(self) -> bool:
        return not self._halted and self.all_inputs_done() and self._thread is None

    def launch_one(self) -> None:
        assert self.run is not None
        run = self.run
        self._ctx = AllToAllContext(run.executor, run.context, self.name, run.run_id,
                                    _on_done=lambda ref: run.progress())
        self.stats.task_started()
        self._thread = threading.Thread(target=self._body, name=f"fedexec-data-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _body(self) -> None:
        assert self._ctx is not None and self.run is not None
        try:
            self._result = list(self.fn(self._collected, self._ctx))
        except BaseException as e:  # handed to the executor's thread
            self._error = e
        finally:
            self._finished.set()
            self.run.wake()

    def running(self) -> bool:
        """The function is running."""
        return self._thread is not None and not self._finished.is_set()

    def poll(self) -> None:
        """Emit the result once the function returned (raises its error)."""
        if self._thread is None or not self._finished.is_set() or (self._result is None and \
                self._error is None):
            return
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        result, self._result = self._result or [], None
        self._collected, self._bytes = [], 0
        for bundle in result:
            self.stats.outputs(bundle.metadata)
        self.stats.tasks += 1
        self._emit(self._reorder.reserve(), result)

    def _work_done(self) -> bool:
        return self.all_inputs_done() and self._finished.is_set() and \
            self._result is None and self._error is None

    def halt(self) -> None:
        super().halt()
        if self._ctx is not None and self.run is not None:
            self.run.cancel(self._ctx._cancel())
        self._collected, self._bytes = [], 0
        self._reorder.clear()

    def shutdown(self) -> None:
        if self._ctx is not None and self.run is not None:
            self.run.cancel(self._ctx._cancel())
        if self._thread is not None:
            self._thread.join(timeout=30)

    def usage_bytes(self) -> int:
        return super().usage_bytes() + self._bytes

    def describe(self) -> str:
        state = "running" if self.running() else ("waiting for its inputs"
                                                  if self._thread is None else "done")
        tasks = len(self._ctx._refs) if self._ctx is not None else 0
        return f"{self.name}: all-to-all {state}, {tasks} of its tasks in flight"
