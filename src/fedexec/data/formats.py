"""The file formats besides Parquet (CSV, JSON lines, text, numpy, binary), and
the public ``read_*`` functions of every format.

Each format is a :class:`~.read_files.FileBasedDatasource` that writes
``read_piece`` (and ``describe_files`` when rows are known before reading)::

    format   rows                       known before reading   streamed within a file
    CSV      one per line after header  no                     yes (pyarrow.csv.open_csv)
    JSON     one per line (JSON lines)  no                     no (whole file: types unified)
    text     {"text": line}             no                     no
    numpy    {"data": array[i]}         rows (.npy header)     memory-mapped, sliced
    binary   {"bytes", "path"}          1 per file             no

CSV, JSON and text files are decompressed by their extension (``.gz``, ``.bz2``,
``.zst``, ``.lz4``); binary files are read as they are.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from .block import Block, BlockAccessor
from .dataset import Dataset
from .parquet import ParquetDatasource
from .read_api import _parallelism, read_datasource
from .read_files import FileBasedDatasource, FilePiece, file_error

__all__ = ["BinaryDatasource", "CSVDatasource", "JSONDatasource", "NumpyDatasource",
           "TextDatasource", "read_binary_files", "read_csv", "read_json", "read_numpy",
           "read_parquet", "read_text"]


def _arrow_options(reader: str, given: dict[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise TypeError(f"{reader}() got unexpected keyword arguments {unknown}; the pyarrow "
                        f"options it takes are {list(allowed)}")
    return dict(given)


class CSVDatasource(FileBasedDatasource):
    """CSV files, parsed by ``pyarrow.csv`` with ``read_options``, ``parse_options``
    and ``convert_options``; a column pushdown becomes ``include_columns``."""

    supports_columns = True
    _OPTIONS = ("read_options", "parse_options", "convert_options")

    def __init__(self, paths: Any, *, arrow_csv_args: dict[str, Any] | None = None,
                 **file_args: Any):
        super().__init__(paths, reader="read_csv", **file_args)
        self.arrow_csv_args = _arrow_options("read_csv", arrow_csv_args or {}, self._OPTIONS)

    def get_name(self) -> str:
        return "CSV"

    def read_piece(self, piece: FilePiece, *, columns: list[str] | None,
                   limit: int | None) -> Iterator[Block]:
        if piece.size_bytes == 0:
            return
        args = dict(self.arrow_csv_args)
        if columns is not None:
            convert = args.get("convert_options") or pacsv.ConvertOptions()
            own = list(convert.include_columns or ())
            if not own or set(columns) <= set(own):
                convert = pickle.loads(pickle.dumps(convert))  # a copy (no copy() in pyarrow)
                convert.include_columns = columns
                args["convert_options"] = convert
        rows = 0
        with self.open_input(piece.path) as f:
            reader = pacsv.open_csv(f, **args)
            for batch in reader:  # blocks of read_options.block_size bytes, parsed lazily
                rows += batch.num_rows
                yield pa.Table.from_batches([batch])
                if limit is not None and rows >= limit:
                    return


class JSONDatasource(FileBasedDatasource):
    """JSON lines files (one object per line), parsed by ``pyarrow.json`` with
    ``read_options`` and ``parse_options``."""

    _OPTIONS = ("read_options", "parse_options")

    def __init__(self, paths: Any, *, arrow_json_args: dict[str, Any] | None = None,
                 **file_args: Any):
        super().__init__(paths, reader="read_json", **file_args)
        self.arrow_json_args = _arrow_options("read_json", arrow_json_args or {}, self._OPTIONS)

    def get_name(self) -> str:
        return "JSON"

    def read_piece(self, piece: FilePiece, *, columns: list[str] | None,
                   limit: int | None) -> Iterator[Block]:
        if piece.size_bytes == 0:
            return
        with self.open_input(piece.path) as f:
            try:
                table = pajson.read_json(f, **self.arrow_json_args)
            except pa.ArrowInvalid as e:
                raise pa.ArrowInvalid(f"{e} (read_json reads JSON lines: one object per "
                                      "line)") from e
        yield table


class TextDatasource(FileBasedDatasource):
    """Text files: a row ``{"text": line}`` per line (split at ``\\n`` or
    ``\\r\\n``; a final newline ends the last line), empty lines dropped with
    ``drop_empty_lines``."""

    def __init__(self, paths: Any, *, encoding: str = "utf-8", drop_empty_lines: bool = True,
                 **file_args: Any):
        super().__init__(paths, reader="read_text", **file_args)
        "".encode(encoding)  # an unknown encoding fails here, not in every task
        self.encoding = encoding
        self.drop_empty_lines = drop_empty_lines

    def get_name(self) -> str:
        return "Text"

    def read_piece(self, piece: FilePiece, *, columns: list[str] | None,
                   limit: int | None) -> Iterator[Block]:
        with self.open_input(piece.path) as f:
            text = f.read().decode(self.encoding)
        lines = text.replace("\r\n", "\n").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if self.drop_empty_lines:
            lines = [line for line in lines if line]
        yield pa.table({"text": pa.array(lines, type=pa.string())})


class NumpyDatasource(FileBasedDatasource):
    """``.npy`` files: a row ``{"data": array[i]}`` per element of the first axis
    (rows and bytes known from the header, so ``count()`` reads no data; a limit
    reads only the rows it needs, through a memory map)."""

    def __init__(self, paths: Any, **file_args: Any):
        super().__init__(paths, reader="read_numpy", **file_args)

    def get_name(self) -> str:
        return "Numpy"

    def describe_files(self, files: list[str]) -> list[FilePiece]:
        pieces = []
        for path in files:
            try:
                shape, dtype = _npy_header(path)
            except Exception as e:
                raise file_error(e, path, self.op_name) from e
            rows = shape[0] if shape else 1
            pieces.append(FilePiece(path=path, size_bytes=int(np.prod(shape)) * dtype.itemsize,
                                    num_rows=rows))
        return pieces

    def read_piece(self, piece: FilePiece, *, columns: list[str] | None,
                   limit: int | None) -> Iterator[Block]:
        array = np.load(piece.path, mmap_mode="r", allow_pickle=False)
        if not isinstance(array, np.ndarray):
            raise ValueError("not an .npy file (an .npz archive?): read_numpy reads .npy files; "
                             "load an .npz with numpy and use fedexec.data.from_numpy")
        array = np.atleast_1d(array)
        if limit is not None:
            array = array[:limit]
        yield BlockAccessor.from_batch({"data": np.ascontiguousarray(array)})


def _npy_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of an ``.npy`` file, from its header alone."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
            return shape, dtype
        if version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
            return shape, dtype
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return array.shape, array.dtype


class BinaryDatasource(FileBasedDatasource):
    """Whole files: a row ``{"bytes": contents, "path": path}`` per file (one row
    per file is known before reading, so ``count()`` reads nothing)."""

    def __init__(self, paths: Any, **file_args: Any):
        super().__init__(paths, reader="read_binary_files", **file_args)

    def get_name(self) -> str:
        return "Binary"

    def describe_files(self, files: list[str]) -> list[FilePiece]:
        schema = pa.schema([("bytes", pa.binary())])
        return [replace(p, num_rows=1, schema=schema) for p in super().describe_files(files)]

    def open_input(self, path: str) -> Any:
        """The file as it is (no decompression)."""
        return pa.input_stream(path, compression=None)

    def read_piece(self, piece: FilePiece, *, columns: list[str] | None,
                   limit: int | None) -> Iterator[Block]:
        with self.open_input(piece.path) as f:
            data = f.read()
        kind = pa.binary() if len(data) < 2**31 else pa.large_binary()
        yield pa.table({"bytes": pa.array([data], type=kind)})


# --------------------------------------------------------------------------- public API
def _read(source_cls: type[FileBasedDatasource], paths: Any, *, parallelism: int,
          override_num_blocks: int | None, **kwargs: Any) -> Dataset:
    if override_num_blocks is not None:
        if parallelism != -1 and parallelism != override_num_blocks:
            raise ValueError("give parallelism or override_num_blocks, not both")
        parallelism = override_num_blocks
    parallelism = _parallelism(parallelism)
    return read_datasource(source_cls(paths, parallelism=parallelism, **kwargs),
                           parallelism=parallelism)


def read_parquet(paths: Any, *, columns: Sequence[str] | None = None, filter: Any = None,
                 parallelism: int = -1, override_num_blocks: int | None = None,
                 include_paths: bool = False, ignore_missing_paths: bool = False,
                 file_extensions: Sequence[str] | None = None) -> Dataset:
    """A dataset read from Parquet files: one read task per file, or per run of
    row groups for large files (``parallelism``/``override_num_blocks``: about
    that many read tasks; -1: automatic).

    Args:
        paths: a file, a directory (read recursively; names starting with ``.``
            or ``_`` skipped), or a list of them.
        columns: read only these columns.
        filter: a ``pyarrow.dataset`` expression (``pyarrow.dataset.field("x") > 3``)
            or DNF filters (``[("x", ">", 3)]``), pushed into the reader.
        include_paths: add a ``"path"`` column with each row's file.
        ignore_missing_paths: skip paths that do not exist.
        file_extensions: read only files ending in these extensions.

    Row counts come from the files' footers: ``count()`` reads no data (unless a
    ``filter`` is given); ``take(n)`` reads only the row groups it needs.

    Raises:
        FileNotFoundError: a path does not exist (naming it).
    """
    return _read(ParquetDatasource, paths, columns=columns, filter=filter,
                 parallelism=parallelism, override_num_blocks=override_num_blocks,
                 include_paths=include_paths, ignore_missing_paths=ignore_missing_paths,
                 file_extensions=file_extensions)


def read_csv(paths: Any, *, parallelism: int = -1, override_num_blocks: int | None = None,
             include_paths: bool = False, ignore_missing_paths: bool = False,
             file_extensions: Sequence[str] | None = None, **arrow_csv_args: Any) -> Dataset:
    """A dataset read from CSV files, one read task per file; ``arrow_csv_args``
    are ``pyarrow.csv``'s ``read_options``, ``parse_options`` and
    ``convert_options``. Other arguments as in :func:`read_parquet`."""
    return _read(CSVDatasource, paths, arrow_csv_args=arrow_csv_args, parallelism=parallelism,
                 override_num_blocks=override_num_blocks, include_paths=include_paths,
                 ignore_missing_paths=ignore_missing_paths, file_extensions=file_extensions)


def read_json(paths: Any, *, parallelism: int = -1, override_num_blocks: int | None = None,
              include_paths: bool = False, ignore_missing_paths: bool = False,
              file_extensions: Sequence[str] | None = None, **arrow_json_args: Any) -> Dataset:
    """A dataset read from JSON lines files (one object per line, one row each),
    one read task per file; ``arrow_json_args`` are ``pyarrow.json``'s
    ``read_options`` and ``parse_options``. Other arguments as in
    :func:`read_parquet`."""
    return _read(JSONDatasource, paths, arrow_json_args=arrow_json_args,
                 parallelism=parallelism, override_num_blocks=override_num_blocks,
                 include_paths=include_paths, ignore_missing_paths=ignore_missing_paths,
                 file_extensions=file_extensions)


def read_text(paths: Any, *, encoding: str = "utf-8", drop_empty_lines: bool = True,
              parallelism: int = -1, override_num_blocks: int | None = None,
              include_paths: bool = False, ignore_missing_paths: bool = False,
              file_extensions: Sequence[str] | None = None) -> Dataset:
    """A dataset of the lines of text files: rows ``{"text": line}``, one read
    task per file; empty lines dropped unless ``drop_empty_lines=False``. Other
    arguments as in :func:`read_parquet`."""
    return _read(TextDatasource, paths, encoding=encoding, drop_empty_lines=drop_empty_lines,
                 parallelism=parallelism, override_num_blocks=override_num_blocks,
                 include_paths=include_paths, ignore_missing_paths=ignore_missing_paths,
                 file_extensions=file_extensions)


def read_numpy(paths: Any, *, parallelism: int = -1, override_num_blocks: int | None = None,
               include_paths: bool = False, ignore_missing_paths: bool = False,
               file_extensions: Sequence[str] | None = None) -> Dataset:
    """A dataset read from ``.npy`` files: rows ``{"data": array[i]}`` (the first
    axis is the rows), one read task per file. Other arguments as in
    :func:`read_parquet`."""
    return _read(NumpyDatasource, paths, parallelism=parallelism,
                 override_num_blocks=override_num_blocks, include_paths=include_paths,
                 ignore_missing_paths=ignore_missing_paths, file_extensions=file_extensions)


def read_binary_files(paths: Any, *, include_paths: bool = True, parallelism: int = -1,
                      override_num_blocks: int | None = None, ignore_missing_paths: bool = False,
                      file_extensions: Sequence[str] | None = None) -> Dataset:
    """A dataset of whole files: a row ``{"bytes": contents, "path": path}`` per
    file (``include_paths=False``: without ``"path"``), one read task per file.
    Other arguments as in :func:`read_parquet`."""
    return _read(BinaryDatasource, paths, parallelism=parallelism,
                 override_num_blocks=override_num_blocks, include_paths=include_paths,
                 ignore_missing_paths=ignore_missing_paths, file_extensions=file_extensions)
