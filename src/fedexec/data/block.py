"""Blocks: the unit of data a dataset is made of, and their metadata.

A **block** is either a ``pyarrow.Table`` (tabular rows: each row a ``dict``) or
a Python ``list`` (plain rows: any picklable values, as in the classic API).
Blocks live in the object store; pickle protocol 5 moves a table's buffers out of
band, so on ``native`` a task reading a block on the node that holds it maps it
without a copy.

:class:`BlockAccessor` gives one interface over both kinds: row counts, sizes,
schemas, slicing, row iteration, and the conversions to and from **batches**, the
values user functions see in ``map_batches``::

    batch_format      tabular block                    plain-row block
    "default"/"numpy" {column: ndarray}                {"item": ndarray}
    "pandas"          DataFrame                        DataFrame with column "item"
    "pyarrow"         pyarrow.Table                    Table with column "item"

A function's returned batch becomes a block again (:meth:`BlockAccessor.from_batch`):
a dict of arrays, a DataFrame or a Table become a table; a list becomes plain rows;
and a batch made from plain rows whose only column is ``"item"`` becomes plain
rows again. Multi-dimensional ndarray columns are stored as pyarrow's fixed-shape
tensor type and come back as ndarrays of the same shape.

:class:`BlockMetadata` describes a block without its data (rows, bytes, schema,
input files, the stats of the task that made it); it travels separately from the
block (a task returns ``[metadata, block]`` as two refs), so the driver plans and
counts without fetching blocks.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Union

import numpy as np
import pandas as pd  # imported here, once: concurrent first imports of pandas in
import pyarrow as pa  # a worker's threads can fail halfway

__all__ = ["BATCH_FORMATS", "Block", "BlockAccessor", "BlockExecStats", "BlockMetadata"]

#: A block: a pyarrow Table (tabular rows) or a list (plain rows).
Block = Union[pa.Table, list]

#: The batch formats ``map_batches``/``iter_batches`` accept.
BATCH_FORMATS = ("default", "numpy", "pandas", "pyarrow")

#: The column plain rows appear as in a batch.
ITEM = "item"

_SIZE_SAMPLE = 64  # rows pickled to estimate the size of a plain-row block


@dataclass(frozen=True)
class BlockExecStats:
    """How the task that made a block ran, measured inside it.

    Attributes:
        wall_s: the task's wall-clock seconds.
        cpu_s: CPU seconds of the thread that ran it.
        start: ``time.time()`` when it started (for an operator's span).
        end: ``time.time()`` when it ended.
    """

    wall_s: float
    cpu_s: float
    start: float
    end: float


@dataclass(frozen=True)
class BlockMetadata:
    """What the driver knows about a block without fetching it.

    Attributes:
        num_rows: rows in the block (None: unknown, for an estimate).
        size_bytes: its in-memory size (None: unknown).
        schema: a ``pyarrow.Schema`` for a tabular block, the type of the first
            row for plain rows, None when empty or unknown.
        input_files: the files it was read from.
        exec_stats: how the task that made it ran (None for estimates and for
            blocks made in the driver).
    """

    num_rows: int | None
    size_bytes: int | None
    schema: Any = None
    input_files: tuple[str, ...] = ()
    exec_stats: BlockExecStats | None = None

    def with_stats(self, stats: BlockExecStats | None) -> BlockMetadata:
        """A copy with ``exec_stats`` replaced."""
        return replace(self, exec_stats=stats)


class BlockAccessor:
    """One interface over both block kinds; ``BlockAccessor.for_block(block)``."""

    def __init__(self, block: Block):
        if not isinstance(block, (pa.Table, list)):
            raise TypeError(f"a block is a pyarrow.Table or a list, got {type(block).__name__}")
        self.block: Any = block
        self.is_tabular = isinstance(block, pa.Table)

    @staticmethod
    def for_block(block: Block) -> BlockAccessor:
        """The accessor of ``block``."""
        return BlockAccessor(block)

    # -- description -------------------------------------------------------------
    def num_rows(self) -> int:
        """Rows in the block."""
        return self.block.num_rows if self.is_tabular else len(self.block)

    def size_bytes(self) -> int:
        """Bytes the block takes in memory (tables: their buffers; plain rows: the
        pickled size, estimated from a sample of rows)."""
        if self.is_tabular:
            return int(self.block.nbytes)
        n = len(self.block)
        if n == 0:
            return 0
        step = max(1, n // _SIZE_SAMPLE)
        sample = self.block[::step][:_SIZE_SAMPLE]
        return int(len(pickle.dumps(sample, protocol=5)) * n / len(sample))

    def schema(self) -> Any:
        """A ``pyarrow.Schema``, or the type of the first plain row (None if empty)."""
        if self.is_tabular:
            return self.block.schema
        return type(self.block[0]) if self.block else None

    def get_metadata(self, input_files: Sequence[str] = (),
                     exec_stats: BlockExecStats | None = None) -> BlockMetadata:
        """The block's exact metadata."""
        return BlockMetadata(self.num_rows(), self.size_bytes(), self.schema(),
                             tuple(input_files), exec_stats)

    # -- rows --------------------------------------------------------------------
    def slice(self, start: int, end: int) -> Block:
        """Rows ``start:end`` as a block of the same kind (no copy for tables)."""
        if self.is_tabular:
            return self.block.slice(start, max(0, end - start))
        return self.block[start:end]

    def take(self, indices: Sequence[int]) -> Block:
        """The rows at ``indices`` (in that order)."""
        if self.is_tabular:
            return self.block.take(pa.array(indices, type=pa.int64()))
        return [self.block[i] for i in indices]

    def select_columns(self, columns: Sequence[str]) -> Block:
        """Only ``columns`` (tabular blocks); ``KeyError`` naming a missing one."""
        table = self._require_table("select_columns")
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise KeyError(f"columns {missing} are not in the dataset; it has "
                           f"{table.column_names}")
        return table.select(list(columns))

    def iter_rows(self) -> Iterator[Any]:
        """The rows: dicts for a table (tensor cells as ndarrays), values for plain rows."""
        if not self.is_tabular:
            return iter(self.block)
        return _table_rows(self.block)

    # -- batches -------------------------------------------------------------------
    def to_batch(self, batch_format: str) -> Any:
        """The block as a batch of ``batch_format`` (see the module docstring)."""
        fmt = check_batch_format(batch_format)
        if self.is_tabular:
            table = self.block
        else:
            if fmt in ("default", "numpy"):
                return {ITEM: _items_array(self.block)}
            if fmt == "pandas":
                return pd.DataFrame({ITEM: pd.Series(self.block, dtype=_pandas_dtype(self.block))})
            table = _items_table(self.block)
        if fmt == "pyarrow":
            return table
        if fmt == "pandas":
            return table.to_pandas()
        return {name: column_to_numpy(table.column(name)) for name in table.column_names}

    def to_arrow(self) -> pa.Table:
        """The block as a table (plain rows as the column ``"item"``)."""
        return self.block if self.is_tabular else _items_table(self.block)

    def to_pandas(self) -> Any:
        """The block as a pandas DataFrame."""
        return self.to_batch("pandas")

    def _require_table(self, what: str) -> pa.Table:
        if not self.is_tabular:
            raise ValueError(f"{what}() needs tabular rows (dicts); this dataset has plain "
                             "rows: map them to dicts first, e.g. ds.map(lambda x: {'item': x})")
        return self.block

    # -- building ------------------------------------------------------------------
    @staticmethod
    def from_batch(batch: Any, *, plain: bool = False) -> Block:
        """The block for a batch a user function returned (see the module docstring);
        ``plain``: the batch was made from plain rows."""
        if isinstance(batch, pa.Table):
            table = batch
        elif isinstance(batch, pd.DataFrame):
            # nthreads=1: pyarrow would start a thread pool for every batch
            table = pa.Table.from_pandas(batch, preserve_index=False, nthreads=1)
        elif isinstance(batch, Mapping):
            table = _dict_to_table(batch)
        elif isinstance(batch, list):
            return batch
        else:
            raise TypeError(
                "a batch function must return a dict of arrays, a pandas DataFrame, a "
                f"pyarrow Table or a list, got {type(batch).__name__}")
        if plain and table.column_names == [ITEM]:
            return _table_items(table)
        return table

    @staticmethod
    def from_rows(rows: Iterable[Any]) -> Block:
        """A block of ``rows``: a table if every row is a mapping, else plain rows."""
        rows = list(rows)
        if rows and all(type(r) is dict or isinstance(r, Mapping) for r in rows):
            return rows_to_table(rows)
        return rows

    @staticmethod
    def concat(blocks: Iterable[Block]) -> Block:
        """One block with the rows of ``blocks`` in order (empty ones skipped).

        Raises:
            ValueError: tabular and plain rows mixed.
        """
        given = list(blocks)
        blocks = [b for b in given if BlockAccessor(b).num_rows() > 0] or given[:1]
        if not blocks:
            return []
        if len(blocks) == 1:
            return blocks[0]
        tables = [b for b in blocks if isinstance(b, pa.Table)]
        if not tables:
            return list(itertools.chain.from_iterable(blocks))
        if len(tables) != len(blocks):
            raise ValueError("cannot combine tabular rows (dicts) with plain rows in one "
                             "block; map the plain rows to dicts first")
        try:
            return pa.concat_tables(tables, promote_options="default")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"blocks with incompatible schemas cannot be combined: {e}") \
                from None


def compact(block: Block) -> Block:
    """``block`` holding only the memory of its own rows: a table sliced out of a
    larger one (or made of such slices) still points into, and pickles, the whole
    buffers; its rows are then copied into buffers of their own (anything else is
    returned as is). Blocks leaving a task go through this."""
    if not isinstance(block, pa.Table):
        return block
    pickled = sum(chunk.get_total_buffer_size() for column in block.columns
                  for chunk in column.chunks)  # each chunk pickles its buffers whole
    if pickled <= block.nbytes + block.nbytes // 8 + 4096:
        return block
    if block.num_rows == 0:
        return block.schema.empty_table()
    return pa.Table.from_arrays([pa.concat_arrays(column.chunks) for column in block.columns],
                                schema=block.schema)


def check_batch_format(batch_format: str) -> str:
    """``batch_format`` itself, or ``ValueError`` listing the accepted ones."""
    if batch_format not in BATCH_FORMATS:
        raise ValueError(f"batch_format must be one of {list(BATCH_FORMATS)}, "
                         f"got {batch_format!r}")
    return batch_format


# --------------------------------------------------------------------------- helpers
def _is_tensor_type(t: Any) -> bool:
    return isinstance(t, pa.FixedShapeTensorType)


def column_to_numpy(column: Any) -> np.ndarray:
    """A table column as an ndarray (tensor columns keep their shape)."""
    if _is_tensor_type(column.type):
        chunks = column.chunks
        if not chunks:
            return np.empty((0, *column.type.shape), dtype=column.type.value_type.to_pandas_dtype())
        arrays = [c.to_numpy_ndarray() for c in chunks]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    return column.to_numpy(zero_copy_only=False)


def _table_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    tensors = {name: column_to_numpy(table.column(name))
               for name, t in zip(table.column_names, table.schema.types) if _is_tensor_type(t)}
    if not tensors:
        yield from table.to_pylist()
        return
    for i, row in enumerate(table.drop_columns(list(tensors)).to_pylist()):
        full = {}
        for name in table.column_names:
            full[name] = tensors[name][i] if name in tensors else row[name]
        yield full


def _to_arrow_array(name: str, value: Any) -> Any:
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        return value
    if isinstance(value, np.ndarray):
        if value.ndim > 1:
            return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(value))
        if value.dtype == object:
            return pa.array(list(value))
        return pa.array(value)
    if isinstance(value, pd.Series):
        return pa.Array.from_pandas(value)
    try:
        return pa.array(list(value))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
        raise TypeError(f"column {name!r} of a batch cannot be stored as a table column: {e}") \
            from None


def _dict_to_table(batch: Mapping[str, Any]) -> pa.Table:
    columns = {str(k): _to_arrow_array(str(k), v) for k, v in batch.items()}
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the columns of a batch must have equal lengths, got {lengths}")
    return pa.table(columns)


def rows_to_table(rows: list[Mapping[str, Any]]) -> pa.Table:
    """A table of dict rows (ndarray values that all share a shape become a tensor column)."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    columns = {}
    for name in names:
        values: list[Any] = [r.get(name) for r in rows]
        first = values[0]
        if isinstance(first, np.ndarray) and first.ndim >= 1 and all(
                isinstance(v, np.ndarray) and v.shape == first.shape for v in values):
            columns[name] = pa.FixedShapeTensorArray.from_numpy_ndarray(np.stack(values))
        else:
            try:
                columns[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise TypeError(f"column {name!r}: rows hold values that cannot form one "
                                f"table column ({e})") from None
    return pa.table(columns)


def _items_array(items: list[Any]) -> np.ndarray:
    scalar = all(isinstance(v, (int, float, bool, str, bytes, np.generic)) for v in items)
    if scalar or all(isinstance(v, np.ndarray) for v in items):
        try:
            return np.asarray(items)
        except ValueError:
            pass
    out = np.empty(len(items), dtype=object)
    for i, v in enumerate(items):  # element-wise: sequences must not broadcast
        out[i] = v
    return out


def _pandas_dtype(items: list[Any]) -> Any:
    return None if all(isinstance(v, (int, float, bool, str, np.generic)) for v in items) \
        else object


def _items_table(items: list[Any]) -> pa.Table:
    try:
        return pa.table({ITEM: pa.array(items)})
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
        raise TypeError(f"these plain rows cannot be stored as a pyarrow column ({e}); "
                        "use batch_format='numpy' or 'pandas'") from None


def _table_items(table: pa.Table) -> list[Any]:
    column = table.column(ITEM)
    if _is_tensor_type(column.type):
        return list(column_to_numpy(column))
    return column.to_pylist()
