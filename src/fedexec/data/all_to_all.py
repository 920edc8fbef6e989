"""Barrier operators: the ``AllToAll`` extension point (shuffle, sort,
repartition, groupby are built on it).

An all-to-all function ``fn(bundles, ctx) -> bundles`` gets **every** input
bundle (the operator waits for its inputs to end), runs on a thread of the
driver and schedules its own tasks over the store — map-reduce style, never
pulling blocks into the driver — preferably with ``ctx.submit(...)``, which the
run tracks: a finished task counts as progress for the stall clock, and the
tasks in flight are cancelled if the run stops. Its returned bundles (with
their metadata) stream on downstream in the order returned::

    def shuffle(bundles, ctx):
        refs = [ctx.submit(split_block, ref, n, num_returns=n) for ref in block_refs]
        ...
        return [RefBundle(((block_ref, meta),)) for ...]

    Dataset(AllToAll((ds._plan,), op_name="RandomShuffle", fn=shuffle))
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fedexec

from .bundle import RefBundle
from .operators import PhysicalOperator

__all__ = ["AllToAllContext", "AllToAllFn", "AllToAllOperator"]


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
