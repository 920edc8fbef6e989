"""Reading: the ``Datasource`` / ``ReadTask`` extension point, and ``range``.

A :class:`Datasource` describes data outside the store (files, a generator, a
database). When a dataset runs, the planner asks it for ``get_read_tasks(n)``:
about ``n`` :class:`ReadTask` objects that together produce all of its rows.
Each read task is pickled into a fedexec task (fused with the row and batch
transforms after it), called there, and returns an iterable of blocks; it also
carries :class:`BlockMetadata` known before reading, which the executor uses to
plan (the memory budget, how many read tasks a ``limit`` needs): ``size_bytes``
may be an estimate, but ``num_rows`` is either exact or None (``count()`` of a
read whose tasks all know their rows reads nothing).

Pushdown: ``limit`` and ``select_columns`` directly after a read are pushed
into it: the planner calls ``read_task.with_limit(n)`` / ``with_columns(cols)``.
A read task always enforces both on what its ``read_fn`` yields (it stops
reading once it has ``n`` rows), so every source benefits; a source that can do
better passes ``supports_limit=True`` / ``supports_columns=True`` and its
``read_fn`` then receives ``limit=`` / ``columns=`` keywords (read only two
Parquet columns, stop scanning a file early).

Writing a source::

    class MySource(Datasource):
        def get_read_tasks(self, parallelism):
            return [ReadTask(functools.partial(read_file, path),
                             BlockMetadata(num_rows=None, size_bytes=os.path.getsize(path),
                                           input_files=(path,)))
                    for path in self.paths]

    ds = fd.read_datasource(MySource())
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from .block import Block, BlockAccessor, BlockMetadata

__all__ = ["Datasource", "RangeDatasource", "ReadTask"]


class ReadTask:
    """One unit of reading: picklable; called inside a task, yields blocks.

    Args:
        read_fn: called with no arguments (plus ``limit=``/``columns=`` keywords
            when the flags below say it takes them); returns an iterable of blocks.
        metadata: the metadata of everything it returns, known before reading:
            ``num_rows`` exact or None, ``size_bytes`` an estimate or None.
        supports_limit: ``read_fn`` takes ``limit=n`` (stop after ``n`` rows).
        supports_columns: ``read_fn`` takes ``columns=[...]`` (read only those).
    """

    def __init__(self, read_fn: Callable[..., Iterable[Block]], metadata: BlockMetadata, *,
                 supports_limit: bool = False, supports_columns: bool = False):
        self._read_fn = read_fn
        self.metadata = metadata
        self.supports_limit = supports_limit
        self.supports_columns = supports_columns
        self.limit: int | None = None
        self.columns: list[str] | None = None

    def with_limit(self, n: int) -> ReadTask:
        """A copy that yields at most ``n`` rows (its estimate scaled down)."""
        task = copy.copy(self)
        task.limit = n if self.limit is None else min(n, self.limit)
        rows, size = self.metadata.num_rows, self.metadata.size_bytes
        if rows is not None and rows > task.limit:
            size = None if size is None else int(size * task.limit / max(rows, 1))
            rows = task.limit
        task.metadata = replace(self.metadata, num_rows=rows, size_bytes=size)
        return task

    def with_columns(self, columns: Sequence[str]) -> ReadTask:
        """A copy that yields only ``columns`` (tabular sources)."""
        task = copy.copy(self)
        task.columns = list(columns)
        schema = self.metadata.schema
        if isinstance(schema, pa.Schema) and all(c in schema.names for c in columns):
            size = self.metadata.size_bytes
            if size is not None and schema.names:
                size = int(size * len(columns) / len(schema.names))
            task.metadata = replace(self.metadata, schema=pa.schema(
                [schema.field(c) for c in columns]), size_bytes=size)
        return task

    def __call__(self) -> Iterator[Block]:
        """Read: the blocks, with the limit and the columns applied."""
        kwargs: dict[str, Any] = {}
        if self.limit is not None and self.supports_limit:
            kwargs["limit"] = self.limit
        if self.columns is not None and self.supports_columns:
            kwargs["columns"] = self.columns
        left = self.limit
        if left is not None and left <= 0:
            return
        for block in self._read_fn(**kwargs):
            acc = BlockAccessor.for_block(block)
            if self.columns is not None:
                block = acc.select_columns(self.columns)
                acc = BlockAccessor.for_block(block)
            if left is not None:
                n = acc.num_rows()
                if n >= left:
                    yield acc.slice(0, left)
                    return
                left -= n
            yield block

    def __repr__(self) -> str:
        return f"ReadTask(rows={self.metadata.num_rows}, bytes={self.metadata.size_bytes})"


class Datasource:
    """Where a dataset's rows come from; subclass and write ``get_read_tasks``.

    Read with ``fedexec.data.read_datasource(source, parallelism=-1)``.
    """

    def get_name(self) -> str:
        """The read operator's name: ``Read<Name>`` (the class name without "Datasource")."""
        name = type(self).__name__
        return name[: -len("Datasource")] if name.endswith("Datasource") and \
            name != "Datasource" else name

    def estimate_inmemory_data_size(self) -> int | None:
        """Bytes of all the rows in memory, if known (used to pick the parallelism)."""
        return None

    def get_read_tasks(self, parallelism: int) -> list[ReadTask]:
        """About ``parallelism`` read tasks that together produce every row, in order."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_read_tasks()")


class RangeDatasource(Datasource):
    """The integers ``0..n-1``: plain rows (``fd.range``) or ``{"id": i}`` (``fd.range_table``)."""

    def __init__(self, n: int, *, tabular: bool):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"range() needs an int n >= 0, got {n!r}")
        self.n = int(n)
        self.tabular = tabular

    def get_name(self) -> str:
        return "RangeTable" if self.tabular else "Range"

    def estimate_inmemory_data_size(self) -> int:
        return 8 * self.n

    def get_read_tasks(self, parallelism: int) -> list[ReadTask]:
        parallelism = max(1, min(parallelism, self.n))
        bounds = np.linspace(0, self.n, parallelism + 1).astype(np.int64)
        schema = pa.schema([("id", pa.int64())]) if self.tabular else int
        tasks = []
        for start, end in itertools.pairwise(bounds):
            meta = BlockMetadata(num_rows=int(end - start), size_bytes=8 * int(end - start),
                                 schema=schema if end > start else None)
            tasks.append(ReadTask(_RangeRead(int(start), int(end), self.tabular), meta,
                                  supports_limit=True))
        return tasks


class _RangeRead:
    """Reads ``start..end-1`` in chunks of at most ``CHUNK`` rows."""

    CHUNK = 1 << 20

    def __init__(self, start: int, end: int, tabular: bool):
        self.start, self.end, self.tabular = start, end, tabular

    def __call__(self, limit: int | None = None) -> Iterator[Block]:
        end = self.end if limit is None else min(self.end, self.start + limit)
        for lo in range(self.start, end, self.CHUNK):
            hi = min(end, lo + self.CHUNK)
            if self.tabular:
                yield pa.table({"id": np.arange(lo, hi, dtype=np.int64)})
            else:
                yield list(range(lo, hi))
