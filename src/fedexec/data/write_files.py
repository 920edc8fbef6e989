"""Writing files: :class:`FileDatasink` and one sink per format, behind
``Dataset.write_parquet/write_csv/write_json/write_numpy``.

A write is a :class:`~.datasink.Datasink`: the driver creates the directory
(``on_write_start``); each write task (one per block the dataset's last
operator makes, fused into it) writes its rows to one file and returns
``{"path", "num_rows"}``::

    block ──▶ <dir>/.<run>_<task>.<ext>.tmp ──rename──▶ <dir>/<run>_<task>.<ext>

File names are ``{run_id}_{task_index:06d}.{ext}``: unique per run, and sorted
by name in the dataset's order (so reading the directory back gives the rows in
order). A task writes under a hidden temporary name and renames it when done:
readers never see half a file, and a retried task rewrites the same name.
Blocks with no rows write no file. Other runs' files in the directory stay
(each run adds its own).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from .block import Block, BlockAccessor
from .datasink import Datasink
from .read_files import local_path
from .transforms import TaskContext

__all__ = ["CSVDatasink", "FileDatasink", "JSONDatasink", "NumpyDatasink", "ParquetDatasink"]


class FileDatasink(Datasink):
    """One file per block under the directory ``path`` (see the module docstring);
    subclasses write :meth:`write_block` and set :attr:`extension`.

    Args:
        path: the directory (created, with its parents, unless ``try_create_dir``
            is false; then it must exist).
        try_create_dir: create the directory if missing.
    """

    extension = ""
    writer = "write"

    def __init__(self, path: Any, *, try_create_dir: bool = True):
        self.path = local_path(path, self.writer)
        self.try_create_dir = try_create_dir

    def on_write_start(self) -> None:
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise NotADirectoryError(20, f"{self.writer}() writes files into a directory; "
                                     "this path is a file", self.path)
        if self.try_create_dir:
            os.makedirs(self.path, exist_ok=True)
        elif not os.path.isdir(self.path):
            raise FileNotFoundError(2, f"{self.writer}(): the directory does not exist "
                                    "(try_create_dir=False)", self.path)

    def write(self, blocks: Iterable[Block], ctx: TaskContext) -> dict[str, Any]:
        block = BlockAccessor.concat(list(blocks))
        rows = BlockAccessor.for_block(block).num_rows()
        if rows == 0:
            return {"path": None, "num_rows": 0}
        name = f"{ctx.run_id}_{ctx.task_index:06d}.{self.extension}"
        final = os.path.join(self.path, name)
        temporary = os.path.join(self.path, f".{name}.tmp")
        os.makedirs(self.path, exist_ok=True)  # a node that has not seen the directory yet
        try:
            self.write_block(block, temporary)
            os.replace(temporary, final)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
        return {"path": final, "num_rows": rows}

    def write_block(self, block: Block, path: str) -> None:
        """Write ``block`` (at least one row) to the file ``path``."""
        raise NotImplementedError(f"{type(self).__name__} must implement write_block()")


class ParquetDatasink(FileDatasink):
    """Parquet files (``pyarrow.parquet.write_table`` with ``arrow_parquet_args``,
    e.g. ``compression="zstd"``, ``row_group_size``)."""

    extension = "parquet"
    writer = "write_parquet"

    def __init__(self, path: Any, *, try_create_dir: bool = True, **arrow_parquet_args: Any):
        super().__init__(path, try_create_dir=try_create_dir)
        self.arrow_parquet_args = arrow_parquet_args

    def write_block(self, block: Block, path: str) -> None:
        import pyarrow.parquet as pq

        pq.write_table(BlockAccessor.for_block(block).to_arrow(), path,
                       **self.arrow_parquet_args)


class CSVDatasink(FileDatasink):
    """CSV files with a header (``pyarrow.csv.write_csv``; ``write_options=``)."""

    extension = "csv"
    writer = "write_csv"

    def __init__(self, path: Any, *, try_create_dir: bool = True, **arrow_csv_args: Any):
        super().__init__(path, try_create_dir=try_create_dir)
        unknown = sorted(set(arrow_csv_args) - {"write_options"})
        if unknown:
            raise TypeError(f"write_csv() got unexpected keyword arguments {unknown}; the "
                            "pyarrow option it takes is write_options")
        self.arrow_csv_args = arrow_csv_args

    def write_block(self, block: Block, path: str) -> None:
        import pyarrow.csv as pacsv

        pacsv.write_csv(BlockAccessor.for_block(block).to_arrow(), path, **self.arrow_csv_args)


class JSONDatasink(FileDatasink):
    """JSON lines files, one object per row (pandas' ``to_json(orient="records",
    lines=True)`` with ``pandas_json_args``)."""

    extension = "json"
    writer = "write_json"

    def __init__(self, path: Any, *, try_create_dir: bool = True, **pandas_json_args: Any):
        super().__init__(path, try_create_dir=try_create_dir)
        fixed = sorted({"orient", "lines"} & set(pandas_json_args))
        if fixed:
            raise TypeError(f"write_json() writes JSON lines; {fixed} cannot be changed")
        self.pandas_json_args = pandas_json_args

    def write_block(self, block: Block, path: str) -> None:
        frame = BlockAccessor.for_block(block).to_pandas()
        frame.to_json(path, orient="records", lines=True, **self.pandas_json_args)


class NumpyDatasink(FileDatasink):
    """``.npy`` files of one column (``np.save``); read back with ``read_numpy``."""

    extension = "npy"
    writer = "write_numpy"

    def __init__(self, path: Any, *, column: str, try_create_dir: bool = True):
        super().__init__(path, try_create_dir=try_create_dir)
        if not isinstance(column, str):
            raise TypeError(f"write_numpy(column=...) takes a column name, got {column!r}")
        self.column = column

    def write_block(self, block: Block, path: str) -> None:
        import numpy as np

        batch = BlockAccessor.for_block(block).to_batch("numpy")
        if self.column not in batch:
            raise KeyError(f"write_numpy(column={self.column!r}): no such column; the "
                           f"dataset has {list(batch)}")
        with open(path, "wb") as f:  # a file object: np.save would append ".npy" to the name
            np.save(f, batch[self.column], allow_pickle=False)
