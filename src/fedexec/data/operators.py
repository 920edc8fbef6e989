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

Here: the interface, :class:`InputDataOperator` (bundles already in the store)
and :class:`MapOperator` (fused reads and row/batch transforms as tasks). The
others: ``combine.py`` (limit, union, zip), ``all_to_all.py`` (barriers),
``actor_pool.py`` (map on a pool of actors).
"""

from __future__ import annotations

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

__all__ = ["InputDataOperator", "MapOperator", "PhysicalOperator", "TaskOperator"]


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


class TaskOperator(PhysicalOperator):
    """Shared machinery of operators that run tasks returning ``[metas, *blocks]``
    (subclass it for a new task-running operator; see ``combine.py``)."""

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


class MapOperator(TaskOperator):
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
            estimate = int(base * self._ratio())
            k = self._num_outputs(estimate)
            self.submit(run_map_task, [self._chain_blob, ctx, k, read], k, self.options,
                        est_bytes=estimate, est_rows=read.metadata.num_rows
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
        """Blocks a read task returns: its estimated output cut at the target size."""
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
