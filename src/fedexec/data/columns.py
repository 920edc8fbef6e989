"""Column transforms of tabular datasets, as stages (see ``transforms.py``):
``add_column``, ``drop_columns``, ``select_columns``, ``rename_columns``. Each
maps one row to one row, so limits move past them; ``select_columns`` right after
a read is pushed into the read by the optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from .block import Block, BlockAccessor, check_batch_format
from .transforms import Stage, TaskContext

__all__ = ["AddColumn", "DropColumns", "RenameColumns", "SelectColumns"]


def _tables(stage: Stage, what: str, blocks: Iterator[Block]) -> Iterator[Any]:
    """The blocks as tables (an error naming the stage for plain rows)."""
    for block in blocks:
        yield stage._call(BlockAccessor.for_block(block)._require_table, what)


class SelectColumns(Stage):
    """Keep only ``columns``, in that order."""

    preserves_rows = True
    what = "select_columns"

    def __init__(self, columns: Sequence[str]):
        self.columns = list(_names(columns, self.what))
        self.name = f"SelectColumns({self.columns})"

    def apply(self, blocks: Iterator[Block], ctx: TaskContext) -> Iterator[Block]:
        for table in _tables(self, self.what, blocks):
            yield self._call(BlockAccessor.for_block(table).select_columns, self.columns)


class DropColumns(Stage):
    """Remove ``columns`` (each must exist)."""

    preserves_rows = True
    what = "drop_columns"

    def __init__(self, columns: Sequence[str]):
        self.columns = list(_names(columns, self.what))
        self.name = f"DropColumns({self.columns})"

    def apply(self, blocks: Iterator[Block], ctx: TaskContext) -> Iterator[Block]:
        for table in _tables(self, self.what, blocks):
            missing = [c for c in self.columns if c not in table.column_names]
            if missing:
                error = KeyError(f"drop_columns: columns {missing} are not in the dataset; "
                                 f"it has {table.column_names}")
                self._call(_raise, error)
            yield table.drop_columns(self.columns)


class RenameColumns(Stage):
    """Rename columns by ``mapping`` (old name → new name; each old name must exist)."""

    preserves_rows = True
    what = "rename_columns"

    def __init__(self, mapping: Mapping[str, str]):
        if not isinstance(mapping, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise TypeError(f"rename_columns() takes a dict of old name -> new name, "
                            f"got {mapping!r}")
        self.mapping = dict(mapping)
        self.name = f"RenameColumns({self.mapping})"

    def apply(self, blocks: Iterator[Block], ctx: TaskContext) -> Iterator[Block]:
        for table in _tables(self, self.what, blocks):
            missing = [c for c in self.mapping if c not in table.column_names]
            if missing:
                self._call(_raise, KeyError(f"rename_columns: columns {missing} are not in "
                                            f"the dataset; it has {table.column_names}"))
            yield table.rename_columns([self.mapping.get(c, c) for c in table.column_names])


class AddColumn(Stage):
    """Add (or replace) column ``name`` with ``fn(batch)``, one batch per block
    (``batch_format`` "pandas" by default, as Ray)."""

    preserves_rows = True
    what = "add_column"

    def __init__(self, name: str, fn: Callable[[Any], Any], batch_format: str = "pandas"):
        if not isinstance(name, str):
            raise TypeError(f"add_column() needs a column name, got {name!r}")
        if not callable(fn):
            raise TypeError(f"add_column() needs a function of a batch, got {fn!r}")
        self.column, self.fn = name, fn
        self.batch_format = check_batch_format(batch_format)
        self.name = f"AddColumn({name})"

    def apply(self, blocks: Iterator[Block], ctx: TaskContext) -> Iterator[Block]:
        import pyarrow as pa

        for table in _tables(self, self.what, blocks):
            if table.num_rows == 0:
                continue
            batch = BlockAccessor.for_block(table).to_batch(self.batch_format)
            values = self._call(self.fn, batch)
            column = BlockAccessor.from_batch({self.column: values})
            assert isinstance(column, pa.Table)
            if column.num_rows != table.num_rows:
                self._call(_raise, ValueError(
                    f"add_column({self.column!r}): the function returned {column.num_rows} "
                    f"values for a batch of {table.num_rows} rows"))
            if self.column in table.column_names:
                table = table.set_column(table.column_names.index(self.column), self.column,
                                         column.column(0))
            else:
                table = table.append_column(self.column, column.column(0))
            yield table


def _names(columns: Sequence[str], what: str) -> Sequence[str]:
    if isinstance(columns, str):
        columns = [columns]
    if not all(isinstance(c, str) for c in columns):
        raise TypeError(f"{what}() takes column names, got {columns!r}")
    return columns


def _raise(error: BaseException) -> None:
    raise error
