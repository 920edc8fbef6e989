"""fedexec.data: streaming distributed datasets (the role of Ray Data).

A ``Dataset`` is a lazy plan over **blocks** (pyarrow Tables for rows that are
dicts, lists for plain rows) kept in the object store; transformations run as
fedexec tasks (or on actors for callable classes), fused per block; consuming a
dataset **streams** it: blocks flow through the operators with a bounded number
in flight and a memory budget, so data larger than memory or the object store
goes through without being materialized. Uses only the public fedexec API, on
the executor that runs the calling code (``DataContext.executor`` to choose).

Modules (each opens with its design)::

    block, bundle, batcher   blocks, their metadata, refs of blocks, batching
    datasource, datasink     extension points: reading (ReadTask) and writing
    transforms, columns      what runs inside tasks (fused stages)
    plan                     logical operators, optimizer, physical planning
    operators, actor_pool    physical operators: the interface, map (tasks, actors)
    combine, all_to_all      limit, union, zip; barriers (the AllToAll extension)
    shuffle, sort            all-to-all as map-reduce: shuffle, repartition, sort
    grouped, aggregate       groupby, aggregations (Count, Sum, ...), map_groups
    executor                 the streaming executor (backpressure, order, errors)
    iterator                 fetching, batching and prefetching for consumers
    stats, progress          per-operator stats and progress bars
    dataset, read_api        the user-facing API
    exchange, dask_exchange, modin_exchange, spark_exchange
                             to and from Dask, Modin and Spark (by refs and files)
    read_files, parquet,     reading files (paths, the file datasource base,
      formats                Parquet, CSV, JSON lines, text, numpy, binary)
    write_files              writing files (a datasink per format)
    split, streaming_split   parts of a dataset; n iterators fed by one run
    data_iterator            DataIterator: batches, rows, torch batches of any source
    local_shuffle            the shuffle buffer of iter_batches
    torch_utils, torch_dataset  tensors, to_torch, from_torch (torch imported lazily)
    pipeline                 DatasetPipeline: window() / repeat(), the classic API

    >>> import fedexec.data as fd
    >>> fd.range(10000).map(lambda x: {"data": x ** 2}).filter(lambda r: r["data"] % 2 == 0).take(3)
    [{'data': 0}, {'data': 4}, {'data': 16}]
"""

from __future__ import annotations

from . import aggregate
from .block import BlockAccessor, BlockMetadata
from .bundle import RefBundle
from .compute import ActorPoolStrategy
from .context import DataContext
from .dask_exchange import from_dask
from .data_iterator import DataIterator
from .dataset import Dataset, MaterializedDataset
from .datasink import Datasink
from .datasource import Datasource, ReadTask
from .exceptions import DataStallError
from .exchange import from_pandas_refs
from .formats import (
    read_binary_files,
    read_csv,
    read_json,
    read_numpy,
    read_parquet,
    read_text,
)
from .grouped import GroupedData
from .modin_exchange import from_modin
from .pipeline import DatasetPipeline
from .read_api import (
    from_arrow,
    from_arrow_refs,
    from_items,
    from_numpy,
    from_pandas,
    range,
    range_table,
    read_datasource,
)
from .spark_exchange import from_spark
from .torch_utils import from_torch

__all__ = [
    "ActorPoolStrategy",
    "BlockAccessor",
    "BlockMetadata",
    "DataContext",
    "DataIterator",
    "DataStallError",
    "Dataset",
    "DatasetPipeline",
    "Datasink",
    "Datasource",
    "GroupedData",
    "MaterializedDataset",
    "ReadTask",
    "RefBundle",
    "aggregate",
    "from_arrow",
    "from_arrow_refs",
    "from_dask",
    "from_items",
    "from_modin",
    "from_numpy",
    "from_pandas",
    "from_pandas_refs",
    "from_spark",
    "from_torch",
    "range",
    "range_table",
    "read_binary_files",
    "read_csv",
    "read_datasource",
    "read_json",
    "read_numpy",
    "read_parquet",
    "read_text",
]
