"""The streaming executor: runs a physical plan with bounded memory, in order.

One run = one background thread (``fedexec-data-executor``) driving the
operators, and the consumer pulling finished bundles from an output queue::

    task done ──callback──▶ events ──▶ ┌──────────── loop (one thread) ───────────┐
    consumer took a bundle ──────────▶ │ 1. handle events: op.on_task_done(task)   │
    stop (consumer closed) ──────────▶ │ 2. route outputs op → next op, in order   │
                                       │ 3. limit satisfied → halt everything      │
                                       │    upstream (cancel its tasks)            │
                                       │ 4. launch: downstream operators first,    │
                                       │    while the memory budget allows         │
                                       │ 5. progress bars, stall check, wait       │
                                       └──────────────┬────────────────────────────┘
                                                      ▼
                                  output queue ──▶ consumer (iter_batches, take, ...)

State of a run::

    ops         list[PhysicalOperator]  topological order; ops[-1] feeds the consumer
    downstream  {op: (next op, input index)}
    events      queue of (op, task) | _WAKE     filled by task callbacks and the consumer
    out         queue of RefBundle | _DONE | _Failure   to the consumer
    out_bytes   bytes handed to the out queue and not yet taken
    budget      bytes: DataContext.memory_budget(cluster resources)
    usage       out_bytes + sum(op.usage_bytes()): blocks produced (or being
                produced, estimated) and not yet consumed downstream

Backpressure: an operator may launch while ``usage + its estimate <= budget``;
beyond it, a non-source operator may still run one task at a time (it turns
queued inputs into outputs, and so cannot grow memory without bound), and when
nothing at all is in flight one launch is allowed (a single block larger than
the budget still goes through). Sources (reads) therefore stop first, and a
dataset much larger than the object store streams through it. Each operator
also has a cap on tasks in flight.

Errors: the first exception (a task's, or the executor's own) stops the run:
every task in flight is cancelled, actor pools are killed, and the consumer's
call raises it; a task's error is re-raised as a ``TaskError`` (also an
instance of the user's exception class) naming the operator. Closing the
consumer's generator stops the run the same way. A run in which no task finished
and nothing was consumed for ``stall_timeout_s`` raises ``DataStallError``
describing what each operator waits on.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import fedexec

from .bundle import RefBundle
from .combine import LimitOperator
from .context import DataContext
from .exceptions import DataStallError
from .operators import PhysicalOperator, _Task
from .progress import ProgressBars
from .stats import DatasetStats, format_bytes
from .transforms import operator_of

__all__ = ["Run", "StreamingExecutor"]

_WAKE = object()
_PROGRESS = object()
_DONE = object()
_WAIT_S = 0.5


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Run:
    """What operators see of the run they are part of.

    Attributes:
        executor: the fedexec executor tasks are submitted to.
        context: the frozen ``DataContext`` of the run.
        resources: the cluster's resources at the start.
        run_id: unique per run.
    """

    def __init__(self, executor: fedexec.Executor, context: DataContext,
                 resources: dict[str, float], events: queue.SimpleQueue[Any]):
        self.executor = executor
        self.context = context
        self.resources = resources
        self.run_id = uuid.uuid4().hex[:12]
        self._events = events

    def track(self, op: PhysicalOperator, task: _Task) -> None:
        """Have ``op.on_task_done(task)`` called (in the loop) when ``task`` ends.

        The callback holds the operator and gets the ref, never the task: a task
        that referenced itself through its ref's callbacks would keep its blocks
        in the store until the garbage collector ran."""
        task.meta_ref.add_done_callback(functools.partial(self._task_done, op))

    def _task_done(self, op: PhysicalOperator, meta_ref: fedexec.ObjectRef[Any]) -> None:
        self._events.put((op, meta_ref))

    def wake(self) -> None:
        """Make the loop run an iteration now."""
        self._events.put(_WAKE)

    def progress(self) -> None:
        """Note progress made outside the operators' tasks (an all-to-all's own
        tasks finishing): it resets the stall clock, and wakes the loop."""
        self._events.put(_PROGRESS)

    def cancel(self, refs: Sequence[fedexec.ObjectRef[Any]]) -> None:
        """Cancel the tasks behind ``refs`` (best effort: finished ones are ignored)."""
        for ref in refs:
            if ref.done():
                continue
            try:
                self.executor.cancel(ref)
            except (fedexec.FedexecError, ValueError, RuntimeError, TypeError):
                pass


class StreamingExecutor:
    """Runs ``ops`` (topologically sorted, the last one feeding the consumer).

    Args:
        ops: the physical operators.
        context: the run's settings (a snapshot).
        executor: the fedexec executor to run on.
        resources: its cluster's resources (they size the budget and the caps).
        stats: filled in as the run goes.
        console: where progress bars are drawn (tests); default stderr.
    """

    def __init__(self, ops: Sequence[PhysicalOperator], context: DataContext,
                 executor: fedexec.Executor, resources: dict[str, float],
                 stats: DatasetStats, console: Any = None):
        self._executor = executor
        self._resources = resources
        self._ops = list(ops)
        self._context = context
        self._stats = stats
        self._console = console
        self._downstream: dict[int, tuple[PhysicalOperator, int]] = {}
        for op in self._ops:
            for i, up in enumerate(op.inputs):
                self._downstream[id(up)] = (op, i)
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._out_bytes = 0
        self._out_lock = threading.Lock()
        self._stop = threading.Event()
        self._notified: set[int] = set()
        self._halted: set[int] = set()
        self._budget = 0
        self._last_progress = time.monotonic()
        self._run: Run | None = None
        self._early: Any = None  # an event _wait took, for the next step
        self._thread = threading.Thread(target=self._loop, name="fedexec-data-executor",
                                        daemon=True)

    # -- the consumer's side -----------------------------------------------------------------
    def execute(self) -> Iterator[RefBundle]:
        """The output bundles, in order, as they are ready. Closing the iterator
        stops the run (its tasks are cancelled)."""
        self._thread.start()
        try:
            while True:
                item = self._out.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                with self._out_lock:
                    self._out_bytes -= item.size_bytes()
                self._events.put(_WAKE)
                yield item
        finally:
            self._stop.set()
            self._events.put(_WAKE)
            self._thread.join(timeout=60)

    # -- the loop --------------------------------------------------------------------------------
    def _loop(self) -> None:
        progress = None
        outcome: Any = _DONE
        try:
            executor, resources = self._executor, self._resources
            for op in self._ops:  # before anything starts: e.g. actors on spark
                op.check(executor)
            self._budget = self._context.memory_budget(resources)
            self._stats.memory_budget = self._budget
            self._stats.backend = executor.backend
            self._run = Run(executor, self._context, resources, self._events)
            for op in self._ops:
                op.start(self._run)
            progress = ProgressBars(self._ops, self._context.enable_progress_bars,
                                    self._console)
            while not self._stop.is_set():
                launched = self._step()
                progress.update()
                if self._ops[-1].completed():
                    break
                self._check_stall()
                if not launched:  # a launch may have emitted outputs: route them first
                    self._wait()
        except BaseException as e:
            outcome = _Failure(self._named(e))
        finally:
            try:
                self._finish(progress)
            finally:
                self._out.put(outcome)  # the consumer always hears the end

    def _step(self) -> bool:
        """One iteration; True if it launched something."""
        self._handle_events()
        for op in self._ops:
            op.poll()
        self._route()
        self._apply_limits()
        launched = self._launch()
        usage = self._usage()
        self._stats.peak_memory_usage = max(self._stats.peak_memory_usage, usage)
        return launched

    def _handle_events(self) -> None:
        while True:
            event, self._early = self._early, None
            if event is None:
                try:
                    event = self._events.get_nowait()
                except queue.Empty:
                    return
            if event is _WAKE:
                continue
            if event is _PROGRESS:
                self._last_progress = time.monotonic()
                continue
            op, meta_ref = event
            task = op.task_for(meta_ref)
            if task is not None:  # else: cancelled by a halt; nothing to do
                self._last_progress = time.monotonic()
                try:
                    op.on_task_done(task)
                except fedexec.TaskError:
                    raise  # named by _named, from the stage it was tagged with
                except fedexec.FedexecError as e:  # a dead actor, a lost worker ...
                    raise _in_operator(e, op.name) from e

    def _route(self) -> None:
        for op in self._ops:
            target = self._downstream.get(id(op))
            while op.has_output():
                bundle = op.take_output()
                if target is None:
                    with self._out_lock:
                        self._out_bytes += bundle.size_bytes()
                    self._out.put(bundle)
                else:
                    target[0].add_input(bundle, target[1])
            if target is not None and id(op) not in self._notified and op.completed():
                self._notified.add(id(op))
                target[0].input_done(target[1])

    def _apply_limits(self) -> None:
        for op in self._ops:
            if isinstance(op, LimitOperator) and op.satisfied():
                self._halt_upstream(op)

    def _halt_upstream(self, op: PhysicalOperator) -> None:
        for up in op.inputs:
            if id(up) not in self._halted:
                self._halted.add(id(up))
                up.halt()
                self._halt_upstream(up)

    def _launch(self) -> bool:
        launched = False
        for op in reversed(self._ops):
            while op.ready_to_launch():
                estimate = op.next_task_bytes()
                if not self._may_launch(op, estimate):
                    break
                op.launch_one()
                launched = True
        return launched

    def _may_launch(self, op: PhysicalOperator, estimate: int) -> bool:
        if self._usage() + estimate <= self._budget:
            return True
        if not op.is_source and not op.active_tasks():
            return True  # drains queued inputs; at most one task at a time over budget
        with self._out_lock:
            consumer_has_work = self._out_bytes > 0
        return not consumer_has_work and not any(o.active_tasks() for o in self._ops)

    def _usage(self) -> int:
        with self._out_lock:
            out = self._out_bytes
        return out + sum(op.usage_bytes() for op in self._ops)

    def _wait(self) -> None:
        left = self._context.stall_timeout_s - (time.monotonic() - self._last_progress)
        try:
            event = self._events.get(timeout=max(0.01, min(_WAIT_S, left)))
        except queue.Empty:
            return
        self._early = event  # handled first by the next step

    def _check_stall(self) -> None:
        with self._out_lock:
            waiting_on_consumer = self._out_bytes > 0
        now = time.monotonic()
        if waiting_on_consumer:
            self._last_progress = now
            return
        idle = now - self._last_progress
        if idle < self._context.stall_timeout_s:
            return
        lines = [f"  {op.describe()}" for op in self._ops]
        raise DataStallError(
            f"the dataset made no progress for {idle:.0f} s (no task finished, nothing "
            f"consumed); memory budget {format_bytes(self._usage())} of "
            f"{format_bytes(self._budget)} used. Operators:\n" + "\n".join(lines) +
            "\nA task may block forever, or wait for resources that never free up; if the "
            "tasks are just slow, raise DataContext.get_current().stall_timeout_s.")

    def _finish(self, progress: ProgressBars | None) -> None:
        """Stop everything still running (cancel tasks, kill actors); final stats."""
        for op in self._ops:
            if op.active_tasks() and id(op) not in self._halted:
                try:
                    op.halt()
                except Exception:
                    pass
        for op in self._ops:
            try:
                op.shutdown()
            except Exception:
                pass
        if progress is not None:
            progress.close()
        self._stats.end = time.time()

    def _named(self, error: BaseException) -> BaseException:
        """``error``, re-raised as a ``TaskError`` naming the operator if it is one."""
        if not isinstance(error, fedexec.TaskError):
            return error
        stage = operator_of(error.cause) or error.task_name
        where = f"in operator {stage}"
        if error.task_name and error.task_name != stage:
            where += f" (fused into {error.task_name})"
        named = fedexec.TaskError.from_exception(
            error.cause, f"{where}\n{error.traceback_str}", stage)
        named.__cause__ = error.cause
        return named

    def stats(self) -> DatasetStats:
        """The run's stats (complete once the output iterator ended)."""
        return self._stats


def _in_operator(error: fedexec.FedexecError, name: str) -> fedexec.FedexecError:
    """An error of the same type whose message starts with the operator's name."""
    try:
        return type(error)(f"in operator {name}: {error}")
    except Exception:
        return error
