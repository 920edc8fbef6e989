"""Reading files: path expansion and :class:`FileBasedDatasource`, the base of
every file format (``formats.py``, ``parquet.py``).

In the driver, when ``read_*`` is called, the paths are expanded into a sorted
list of files (directories recursively; names starting with ``.`` or ``_``,
such as ``.crc`` files or ``_SUCCESS`` markers, skipped), so a missing path fails
at once. When the dataset runs, the datasource describes each file as a
:class:`FilePiece` (formats that know row counts from a footer or a header read
it here, once, and cache it), may split pieces (Parquet row groups) and group
them, and makes one :class:`~.datasource.ReadTask` per group::

    paths ──expand──▶ files ──describe──▶ pieces ──split/group──▶ read tasks
    (read_* call)           (first run, cached)                  (pieces + the
                                                                  datasource, pickled)

A read task runs :func:`read_pieces` in a fedexec task: the pieces one after the
other, each streamed by the format's :meth:`FileBasedDatasource.read_piece`,
stopping once a limit is met (later files are never opened) and reading only
the columns asked for where the format can. An error while reading names the
file and the operator (``ReadParquet: cannot read /data/x.parquet: ...``).

A copy of the datasource travels in every read task, without its planning
state (the file list, the cached pieces): so its options do, and a subclass may
override :meth:`~FileBasedDatasource.open_input` or ``read_piece``. (The
datasource itself, in a dataset passed to a task, keeps everything.)
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .block import Block, BlockAccessor, BlockMetadata
from .datasource import Datasource, ReadTask
from .transforms import OPERATOR_ATTR

__all__ = ["FileBasedDatasource", "FilePiece", "expand_paths", "file_error", "local_path",
           "read_pieces"]

#: The column ``include_paths=True`` adds.
PATH_COLUMN = "path"


# --------------------------------------------------------------------------- paths
def expand_paths(paths: Any, *, reader: str, file_extensions: Sequence[str] | None = None,
                 ignore_missing_paths: bool = False) -> list[str]:
    """The files ``paths`` (a path, or a list of paths) name, as absolute paths:
    a directory gives its files recursively in sorted order, skipping names that
    start with ``.`` or ``_``; ``file_extensions`` keeps only files ending in one
    of them.

    Raises:
        FileNotFoundError: a path does not exist (unless ``ignore_missing_paths``),
            or no file is left to read.
        ValueError: no paths, or a URI other than ``file://``.
    """
    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths or ())
    if not given:
        raise ValueError(f"{reader}() needs a path or a list of paths, got {paths!r}")
    suffixes = None if file_extensions is None else tuple(
        "." + e.lower().lstrip(".") for e in file_extensions)
    files: list[str] = []
    for item in given:
        path = local_path(item, reader)
        if os.path.isdir(path):
            files.extend(_walk(path))
        elif os.path.exists(path):
            files.append(path)
        elif not ignore_missing_paths:
            raise FileNotFoundError(2, f"{reader}(): no such file or directory", path)
    if suffixes is not None:
        files = [f for f in files if f.lower().endswith(suffixes)]
    if not files and not ignore_missing_paths:
        raise FileNotFoundError(
            f"{reader}(): no files to read in {[str(p) for p in given]} (names starting with "
            "'.' or '_' are skipped" +
            (f"; only files ending in {list(suffixes)} are read)" if suffixes else ")"))
    return files


def local_path(item: Any, reader: str) -> str:
    """``item`` as an absolute local path (``~`` expanded, ``file://`` removed)."""
    if not isinstance(item, (str, os.PathLike)):
        raise TypeError(f"{reader}() takes paths as str or os.PathLike, got {item!r}")
    path = os.fspath(item)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    elif "://" in path:
        raise ValueError(f"{reader}(): only local paths (or file://) can be read, got {path!r}; "
                         "on a cluster, every node must see the path (a shared file system)")
    return os.path.abspath(os.path.expanduser(path))


def _walk(directory: str) -> list[str]:
    """The files under ``directory``, recursively, sorted; hidden names skipped."""
    found: list[str] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        found.extend(os.path.join(root, n) for n in names if not _hidden(n))
    return sorted(found, key=lambda p: os.path.relpath(p, directory).split(os.sep))


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


# --------------------------------------------------------------------------- errors
def file_error(error: Exception, path: str, op_name: str) -> Exception:
    """An error like ``error`` (its class, or the nearest base class that takes a
    message) whose message names ``path`` and the operator ``op_name``; tagged
    with the operator so a task's error says "in operator ReadParquet"."""
    args = error.args  # the text itself: str() of a KeyError would quote it
    text = args[0] if len(args) == 1 and isinstance(args[0], str) else str(error)
    message = f"{op_name}: cannot read {path}: {type(error).__name__}: {text}"
    new: Exception = RuntimeError(message)
    for cls in type(error).__mro__:
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            break
        try:
            candidate = cls(message)
        except Exception:
            continue
        if candidate.args[:1] == (message,):
            new = candidate
            break
    try:
        setattr(new, OPERATOR_ATTR, op_name)
    except (AttributeError, TypeError):  # pragma: no cover - exotic exceptions
        pass
    return new


# --------------------------------------------------------------------------- the base
@dataclass(frozen=True)
class FilePiece:
    """What one read covers: a file, or some of its row groups.

    Attributes:
        path: the file.
        size_bytes: estimated bytes of its rows in memory.
        num_rows: its exact row count, or None when unknown before reading.
        schema: its ``pyarrow.Schema`` when known before reading.
        row_groups: the Parquet row groups to read (None: the whole file).
    """

    path: str
    size_bytes: int
    num_rows: int | None = None
    schema: Any = None
    row_groups: tuple[int, ...] | None = None


class FileBasedDatasource(Datasource):
    """Rows read from files, one read task per file (see the module docstring).

    Subclasses write :meth:`read_piece` (and :meth:`describe_files` when the
    format knows rows or a schema before reading). ``parallelism > 0`` (what the
    user asked for) groups the pieces into that many read tasks when there are
    more; ``include_paths`` adds a ``"path"`` column.
    """

    #: ``read_piece`` reads only the columns asked for (else the read task selects).
    supports_columns = False

    def __init__(self, paths: Any, *, reader: str, file_extensions: Sequence[str] | None = None,
                 include_paths: bool = False, ignore_missing_paths: bool = False,
                 parallelism: int = -1):
        self.include_paths = include_paths
        self.requested_parallelism = parallelism
        self._files: list[str] | None = expand_paths(
            paths, reader=reader, file_extensions=file_extensions,
            ignore_missing_paths=ignore_missing_paths)
        self._pieces: list[FilePiece] | None = None

    @property
    def op_name(self) -> str:
        """The read operator's name (``ReadParquet``)."""
        return f"Read{self.get_name()}"

    @property
    def files(self) -> list[str]:
        """The files read, in order (in the driver)."""
        assert self._files is not None, "a read task's copy has no file list"
        return self._files

    # -- planning (driver) ------------------------------------------------------------
    def pieces(self) -> list[FilePiece]:
        """One piece per file, described once (:meth:`describe_files`) and cached."""
        if self._pieces is None:
            self._pieces = self.describe_files(self.files)
        return self._pieces

    def describe_files(self, files: list[str]) -> list[FilePiece]:
        """A piece per file; the base knows only sizes (override to add row counts)."""
        return [FilePiece(path=f, size_bytes=_file_size(f)) for f in files]

    def split_pieces(self, pieces: list[FilePiece], parallelism: int) -> list[FilePiece]:
        """Pieces cut smaller to reach ``parallelism`` (Parquet row groups); the base
        reads each file whole."""
        return pieces

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(p.size_bytes for p in self.pieces())

    def get_read_tasks(self, parallelism: int) -> list[ReadTask]:
        pieces = self.split_pieces(self.pieces(), parallelism)
        wanted = self.requested_parallelism
        if wanted > 0 and len(pieces) > wanted:
            bounds = np.linspace(0, len(pieces), wanted + 1).astype(int)
            groups = [pieces[lo:hi] for lo, hi in itertools.pairwise(bounds)]
        else:
            groups = [[p] for p in pieces]
        reader = self._reader()
        return [self._read_task(reader, tuple(g)) for g in groups if g]

    def _read_task(self, reader: FileBasedDatasource, group: tuple[FilePiece, ...]) -> ReadTask:
        counts = [p.num_rows for p in group]
        rows = None if any(c is None for c in counts) else sum(c or 0 for c in counts)
        schema = group[0].schema
        if schema is not None and self.include_paths and PATH_COLUMN not in schema.names:
            schema = schema.append(pa.field(PATH_COLUMN, pa.string()))
        meta = BlockMetadata(num_rows=rows, size_bytes=sum(p.size_bytes for p in group),
                             schema=schema, input_files=tuple(dict.fromkeys(p.path for p in group)))
        return ReadTask(functools.partial(read_pieces, reader, group), meta,
                        supports_limit=True, supports_columns=self.supports_columns)

    #: Attributes only planning needs, left out of what read tasks carry.
    _PLANNING_STATE: tuple[str, ...] = ("_files", "_pieces")

    def _reader(self) -> FileBasedDatasource:
        """A copy of this datasource for read tasks: the options, not the file list
        and the planning caches (so each task carries only its own pieces)."""
        reader = copy.copy(self)
        for name in self._PLANNING_STATE:
            setattr(reader, name, None)
        return reader

    # -- reading (inside tasks) ---------------------------------------------------------
    def open_input(self, path: str) -> Any:
        """The file opened for reading: a ``pyarrow`` input stream, decompressed
        by its extension (``.gz``, ``.bz2``, ``.zst`` ...). Override to observe or
        redirect reads."""
        return pa.input_stream(path, compression="detect")

    def read_piece(self, piece: FilePiece, *, columns: list[str] | None,
                   limit: int | None) -> Iterator[Block]:
        """The blocks of ``piece``, read lazily. ``columns``: only these are needed
        (honoured when :attr:`supports_columns`); ``limit``: no more rows are
        needed than this (a hint: reading may stop there)."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_piece()")


def read_pieces(source: FileBasedDatasource, pieces: Sequence[FilePiece], *,
                limit: int | None = None, columns: list[str] | None = None) -> Iterator[Block]:
    """The body of a file read task: ``pieces`` one after the other, stopping at
    ``limit`` rows (later files are not opened); errors name the file."""
    file_columns = None if columns is None else [
        c for c in columns if not (source.include_paths and c == PATH_COLUMN)]
    left = limit
    for piece in pieces:
        if left is not None and left <= 0:
            return
        stream = source.read_piece(piece, columns=file_columns, limit=left)
        while True:
            try:
                block = next(stream)
            except StopIteration:
                break
            except Exception as e:
                raise file_error(e, piece.path, source.op_name) from e
            if source.include_paths:
                block = _with_path(block, piece.path)
            yield block
            if left is not None:
                left -= BlockAccessor.for_block(block).num_rows()
                if left <= 0:
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()
                    return


def _with_path(block: Block, path: str) -> Block:
    table = BlockAccessor.for_block(block).to_arrow()
    column = pa.array([path] * table.num_rows, type=pa.string())
    if PATH_COLUMN in table.column_names:
        return table.set_column(table.column_names.index(PATH_COLUMN), PATH_COLUMN, column)
    return table.append_column(PATH_COLUMN, column)


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
