"""Operators that shape the stream without transforming rows: ``limit``,
``union``, ``zip`` (see ``operators.py`` for the interface they implement).

* :class:`LimitOperator` passes whole bundles until the one that crosses ``n``,
  whose last block is cut by a small task; then it is *satisfied* and the
  executor halts everything upstream (tasks in flight are cancelled).
* :class:`UnionOperator` outputs its inputs one after the other; a later input's
  bundles wait in it (counted against the memory budget) until the earlier end.
* :class:`ZipOperator` zips streaming: a left block goes as soon as the right
  rows it needs have arrived, whatever the right side's block boundaries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from .block import BlockMetadata
from .bundle import RefBundle
from .operators import PhysicalOperator, TaskOperator

__all__ = ["LimitOperator", "UnionOperator", "ZipOperator", "zip_two"]


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


class LimitOperator(TaskOperator):
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


def _zip_blocks(spans: list[tuple[int, int]], rows: int, left: Any, *rights: Any
                ) -> list[Any]:
    """Task body of a zip: the first ``rows`` rows of ``left`` beside the rows
    ``spans[i]`` of ``rights[i]``."""
    import time

    from .block import BlockAccessor
    from .transforms import finish_task

    start, cpu = time.time(), time.thread_time()
    right = BlockAccessor.concat([BlockAccessor.for_block(b).slice(lo, hi)
                                  for b, (lo, hi) in zip(rights, spans)])
    acc = BlockAccessor.for_block(left)
    if rows < acc.num_rows():
        left = acc.slice(0, rows)
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


class ZipOperator(TaskOperator):
    """Row ``i`` of the left input beside row ``i`` of the right one, streaming: a
    left block is zipped as soon as the right rows it needs have arrived (their
    block boundaries may differ); the right blocks go into its task as refs.

    Under a limit (``row_limit``, handed up to both inputs), each input may stop
    at a different row past the limit (whole blocks, tasks cut at the limit): the
    zip makes only the rows the limit needs, and the row counts must then agree
    only up to it."""

    preserves_rows = True

    def __init__(self, left: PhysicalOperator, right: PhysicalOperator):
        super().__init__("Zip", [left, right])
        self._left: deque[tuple[Any, BlockMetadata]] = deque()
        self._right: deque[tuple[Any, BlockMetadata]] = deque()
        self._right_offset = 0  # rows of the first right block already used
        self._bytes = 0
        self._left_rows = 0
        self._right_rows = 0
        self._zipped = 0  # left rows handed to zip tasks

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
        if self._halted:
            return  # downstream has what it needs: the inputs were stopped part way
        if self.all_inputs_done() and self._left_rows != self._right_rows and (
                self.row_limit is None or
                min(self._left_rows, self._right_rows) < self.row_limit):
            raise ValueError(f"zip() needs datasets with the same number of rows; the left "
                             f"one has {self._left_rows}, the right one {self._right_rows}")

    def _right_available(self) -> int:
        return sum(meta.num_rows or 0 for _, meta in self._right) - self._right_offset

    def _need(self) -> int:
        """Rows of the next left block to zip (fewer once the limit is near)."""
        rows = self._left[0][1].num_rows or 0
        if self.row_limit is not None:
            rows = min(rows, max(self.row_limit - self._zipped, 0))
        return rows

    def _limit_reached(self) -> bool:
        return self.row_limit is not None and self._zipped >= self.row_limit

    def ready_to_launch(self) -> bool:
        if self._halted or not self._left or self._limit_reached():
            return False
        return self._right_available() >= self._need()

    def next_task_bytes(self) -> int:
        return 2 * (self._left[0][1].size_bytes or 0)

    def launch_one(self) -> None:
        need = self._need()
        left_ref, left_meta = self._left.popleft()
        rows, self._zipped = need, self._zipped + need
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
        self.submit(_zip_blocks, [spans, rows, left_ref, *refs], 1, {"num_cpus": 0.5},
                    held=[left_ref, *refs], held_bytes=held_bytes, est_bytes=held_bytes)

    def _work_done(self) -> bool:
        return self.all_inputs_done() and not self._active and (
            not self._left or self._limit_reached())

    def usage_bytes(self) -> int:
        return super().usage_bytes() + self._bytes
