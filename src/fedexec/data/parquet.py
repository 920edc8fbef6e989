"""Parquet: :class:`ParquetDatasource`, the reader behind ``read_parquet``.

Planning reads every file's footer in the driver (threads, once per dataset)::

    footer ──▶ rows and uncompressed bytes per row group, the schema
           ──▶ exact row counts (``count()`` reads no data; not with a filter)
           ──▶ a piece per file, split into runs of row groups while a piece
               exceeds ``DataContext.target_max_block_size`` (a large file is
               read by several tasks), or while there are fewer pieces than the
               parallelism (automatic: only pieces above 2 MiB)

A read task scans its row groups one at a time (pyarrow dataset fragments), so
a limit stops it after the row groups it needs; it reads only the columns asked
for (``columns=``, or a ``select_columns`` the optimizer pushed into the read);
the ``filter`` expression skips row groups by their statistics and filters
rows inside the reader.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .block import Block
from .context import DataContext
from .read_files import FileBasedDatasource, FilePiece, file_error

__all__ = ["ParquetDatasource"]

#: Footers read in parallel in the driver by this many threads.
_FOOTER_THREADS = 16
#: Automatic parallelism splits no file into pieces smaller than this.
_MIN_SPLIT_BYTES = 1 << 20


class ParquetDatasource(FileBasedDatasource):
    """Parquet files (see the module docstring).

    Args:
        paths: files, directories (read recursively) or a list of them.
        columns: read only these columns (None: all).
        filter: a ``pyarrow.dataset`` expression (``pc.field("x") > 3``), or
            DNF filters as pandas takes them (``[("x", ">", 3)]``): only the
            rows where it holds.
        **file_args: ``FileBasedDatasource``'s (``include_paths``,
            ``file_extensions``, ``parallelism`` ...).
    """

    supports_columns = True

    def __init__(self, paths: Any, *, columns: Sequence[str] | None = None,
                 filter: Any = None, **file_args: Any):
        super().__init__(paths, reader="read_parquet", **file_args)
        if columns is not None:
            if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
                raise TypeError(f"read_parquet(columns=...) takes a list of column names, "
                                f"got {columns!r}")
            columns = list(columns)
        self.columns: list[str] | None = columns
        self.filter = _expression(filter)
        self._row_groups: dict[str, list[tuple[int, int]]] = {}

    _PLANNING_STATE = (*FileBasedDatasource._PLANNING_STATE, "_row_groups")

    def get_name(self) -> str:
        return "Parquet"

    # -- planning (driver) ------------------------------------------------------------
    def describe_files(self, files: list[str]) -> list[FilePiece]:
        if len(files) > 1:
            with concurrent.futures.ThreadPoolExecutor(
                    min(_FOOTER_THREADS, len(files))) as pool:
                return list(pool.map(self._describe, files))
        return [self._describe(f) for f in files]

    def _describe(self, path: str) -> FilePiece:
        try:
            meta = pq.read_metadata(path)
            schema = meta.schema.to_arrow_schema()
        except Exception as e:
            raise file_error(e, path, self.op_name) from e
        wanted = None if self.columns is None else set(self.columns)
        groups = []
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            size = sum(group.column(j).total_uncompressed_size for j in range(group.num_columns)
                       if wanted is None or
                       group.column(j).path_in_schema.split(".")[0] in wanted)
            groups.append((group.num_rows, size))
        self._row_groups[path] = groups
        if self.columns is not None:
            names = schema.names
            schema = pa.schema([schema.field(c) for c in self.columns]) \
                if all(c in names for c in self.columns) else None
        return FilePiece(path=path, size_bytes=sum(s for _, s in groups),
                         num_rows=meta.num_rows if self.filter is None else None,
                         schema=schema, row_groups=tuple(range(meta.num_row_groups)))

    def split_pieces(self, pieces: list[FilePiece], parallelism: int) -> list[FilePiece]:
        target = DataContext.get_current().target_max_block_size
        # automatic parallelism splits only pieces worth a task; an asked one, any
        smallest = 0 if self.requested_parallelism > 0 else 2 * _MIN_SPLIT_BYTES
        pieces = list(pieces)
        while True:
            splittable = [i for i, p in enumerate(pieces) if len(p.row_groups or ()) > 1]
            if not splittable:
                return pieces
            i = max(splittable, key=lambda k: pieces[k].size_bytes)
            size = pieces[i].size_bytes
            if size <= target and (len(pieces) >= parallelism or size < smallest):
                return pieces
            pieces[i:i + 1] = self._halves(pieces[i])

    def _halves(self, piece: FilePiece) -> list[FilePiece]:
        """``piece`` cut in two runs of row groups of about equal bytes."""
        assert piece.row_groups is not None
        stats = self._row_groups[piece.path]
        groups = piece.row_groups
        half, acc, cut = piece.size_bytes / 2, 0, 1
        for k, g in enumerate(groups[:-1], start=1):
            acc += stats[g][1]
            cut = k
            if acc >= half:
                break
        out = []
        for part in (groups[:cut], groups[cut:]):
            rows = sum(stats[g][0] for g in part)
            out.append(replace(piece, row_groups=part, size_bytes=sum(stats[g][1] for g in part),
                               num_rows=None if piece.num_rows is None else rows))
        return out

    # -- reading (inside tasks) ---------------------------------------------------------
    def open_input(self, path: str) -> Any:
        """The path itself (pyarrow reads it natively, random access); override to
        return a file object."""
        return path

    def read_piece(self, piece: FilePiece, *, columns: list[str] | None,
                   limit: int | None) -> Iterator[Block]:
        if columns is not None and self.columns is not None and \
                not set(columns) <= set(self.columns):
            columns = None  # asks for columns read_parquet(columns=) left out: the task's
            # own selection then raises naming them
        columns = columns if columns is not None else self.columns
        source = self.open_input(piece.path)
        filesystem = pafs.LocalFileSystem() if isinstance(source, (str, os.PathLike)) else None
        fragment = pads.ParquetFileFormat().make_fragment(
            source, filesystem=filesystem, row_groups=piece.row_groups)
        names = fragment.physical_schema.names
        if columns is not None:
            missing = [c for c in columns if c not in names]
            if missing:
                raise KeyError(f"columns {missing} are not in the file; it has {names}")
        parts = fragment.split_by_row_group(filter=self.filter) if self.filter is not None \
            else fragment.split_by_row_group()
        rows = 0
        for part in parts:  # one row group at a time: a limit stops after the ones it needs
            table = part.to_table(columns=columns, filter=self.filter)
            rows += table.num_rows
            yield table
            if limit is not None and rows >= limit:
                return
        if not parts:  # every row group skipped by the filter: an empty table, with schema
            schema = fragment.physical_schema
            yield schema.empty_table() if columns is None else \
                pa.schema([schema.field(c) for c in columns]).empty_table()


def _expression(filter: Any) -> Any:
    """``filter`` as a pyarrow expression (None stays None)."""
    if filter is None or isinstance(filter, pads.Expression):
        return filter
    if isinstance(filter, list):
        return pq.filters_to_expression(filter)
    raise TypeError("read_parquet(filter=...) takes a pyarrow expression such as "
                    f"pyarrow.dataset.field('x') > 3, or DNF filters [('x', '>', 3)]; "
                    f"got {filter!r}")
