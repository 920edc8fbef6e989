"""``PandasOnFedexecIO``: Modin's readers and writers on fedexec.

Modin's I/O dispatchers are engine-neutral; each reader class is built by mixing
:class:`FedexecWrapper` (how to run and fetch) into a parser and a dispatcher, as
Modin does for Dask. A reader splits the file on the driver and parses each
piece in a task; the pieces stay in the object store as the frame's blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from modin.core.io import (
    BaseIO,
    CSVDispatcher,
    ExcelDispatcher,
    FeatherDispatcher,
    FWFDispatcher,
    JSONDispatcher,
    ParquetDispatcher,
    SQLDispatcher,
)
from modin.core.storage_formats.pandas.parsers import (
    PandasCSVParser,
    PandasExcelParser,
    PandasFeatherParser,
    PandasFWFParser,
    PandasJSONParser,
    PandasParquetParser,
    PandasSQLParser,
)
from modin.core.storage_formats.pandas.query_compiler import PandasQueryCompiler

from ._partition import PandasOnFedexecDataframePartition
from ._partition_manager import PandasOnFedexecDataframe
from ._wrapper import FedexecWrapper

__all__ = ["PandasOnFedexecIO"]

_BUILD_ARGS = {
    "frame_cls": PandasOnFedexecDataframe,
    "frame_partition_cls": PandasOnFedexecDataframePartition,
    "query_compiler_cls": PandasQueryCompiler,
    "base_io": BaseIO,
}


def _reader(*classes: type) -> Any:
    return _dispatcher(classes).read


def _writer(*classes: type) -> Any:
    return _dispatcher(classes).write


def _dispatcher(classes: tuple[type, ...]) -> Any:
    """Modin's reader/writer dispatcher ``classes`` bound to this engine's frame types."""
    return type("", (FedexecWrapper, *classes), dict(_BUILD_ARGS))


class PandasOnFedexecIO(BaseIO):
    """Modin's ``BaseIO`` with the parallel readers and writers run on fedexec
    (CSV, FWF, JSON, Parquet, Feather, SQL, Excel); the other formats fall back to
    pandas on the driver, as on every Modin engine."""

    frame_cls = PandasOnFedexecDataframe
    frame_partition_cls = PandasOnFedexecDataframePartition
    query_compiler_cls = PandasQueryCompiler

    read_csv = _reader(PandasCSVParser, CSVDispatcher)
    read_fwf = _reader(PandasFWFParser, FWFDispatcher)
    read_json = _reader(PandasJSONParser, JSONDispatcher)
    read_parquet = _reader(PandasParquetParser, ParquetDispatcher)
    to_parquet = _writer(ParquetDispatcher)
    read_feather = _reader(PandasFeatherParser, FeatherDispatcher)
    read_sql = _reader(PandasSQLParser, SQLDispatcher)
    to_sql = _writer(SQLDispatcher)
    read_excel = _reader(PandasExcelParser, ExcelDispatcher)

    @classmethod
    def from_map(cls, func: Callable[..., Any], iterable: Iterable[Any], *args: Any,
                 **kwargs: Any) -> PandasQueryCompiler:
        """A query compiler with one row block per element of ``iterable``: block
        ``i`` is ``func(iterable[i], *args, **kwargs)`` computed in a task."""
        func = cls.frame_cls._partition_mgr_cls.preprocess_func(func)
        partitions = np.array([
            [cls.frame_partition_cls(FedexecWrapper.deploy(
                func, f_args=(obj, *args), f_kwargs=kwargs, return_pandas_df=True))]
            for obj in iterable
        ])
        return cls.query_compiler_cls(cls.frame_cls(partitions))
