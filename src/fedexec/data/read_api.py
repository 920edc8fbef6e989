"""Creating datasets: ``range``, ``range_table``, ``read_datasource`` (read tasks
run in fedexec tasks), and the in-memory sources ``from_items``, ``from_pandas``,
``from_numpy``, ``from_arrow`` (the data is converted to blocks and put in the
store once, here, one block per input piece) and ``from_arrow_refs`` (tables
already in the store: their metadata is computed by tasks, so the data never
passes through the driver).
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import fedexec

from .block import Block, BlockAccessor, BlockMetadata, rows_to_table
from .bundle import RefBundle
from .context import DataContext
from .dataset import Dataset, MaterializedDataset
from .datasource import Datasource, RangeDatasource
from .plan import InputData, Read

__all__ = ["from_arrow", "from_arrow_refs", "from_items", "from_numpy", "from_pandas",
           "range", "range_table", "read_datasource"]


def range(n: int, *, parallelism: int = -1) -> Dataset:
    """Rows are the ints ``0..n-1`` (plain rows, as in the classic API), read by
    ``parallelism`` tasks (-1: automatic)."""
    return read_datasource(RangeDatasource(n, tabular=False), parallelism=parallelism)


def range_table(n: int, *, parallelism: int = -1) -> Dataset:
    """Rows ``{"id": i}`` for ``i`` in ``0..n-1``, read by ``parallelism`` tasks."""
    return read_datasource(RangeDatasource(n, tabular=True), parallelism=parallelism)


def read_datasource(datasource: Datasource, *, parallelism: int = -1) -> Dataset:
    """A dataset read from ``datasource`` by about ``parallelism`` tasks (-1:
    ``DataContext``'s automatic choice, made when the dataset runs)."""
    if not isinstance(datasource, Datasource):
        raise TypeError(f"read_datasource() takes a Datasource, got {type(datasource).__name__}")
    return Dataset(Read(datasource=datasource, parallelism=_parallelism(parallelism)))


def from_items(items: Sequence[Any], *, parallelism: int = -1) -> MaterializedDataset:
    """A dataset of ``items``: dicts become tabular rows, other values plain rows;
    split into ``parallelism`` blocks (-1: automatic)."""
    if isinstance(items, (str, bytes, Mapping)) or not hasattr(items, "__len__"):
        raise TypeError(f"from_items() takes a list of rows, got {type(items).__name__}")
    items = list(items)
    executor = DataContext.get_current().resolve_executor()
    n = _parallelism(parallelism)
    if n < 0:
        n = DataContext.get_current().default_parallelism(executor.cluster_resources())
    n = max(1, min(n, len(items)))
    tabular = bool(items) and all(isinstance(i, Mapping) for i in items)
    bounds = [len(items) * i // n for i in builtins.range(n + 1)]
    blocks: list[Block] = []
    for lo, hi in itertools.pairwise(bounds):
        chunk = items[lo:hi]
        blocks.append(rows_to_table(chunk) if tabular and chunk else chunk)
    return _from_blocks(blocks, executor)


def from_pandas(dfs: Any) -> MaterializedDataset:
    """A dataset of one pandas DataFrame or a list of them (one block each; the
    index is dropped)."""
    import pandas as pd
    import pyarrow as pa

    frames = [dfs] if isinstance(dfs, pd.DataFrame) else list(dfs)
    for df in frames:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"from_pandas() takes DataFrames, got {type(df).__name__}")
    return _from_blocks([pa.Table.from_pandas(df, preserve_index=False) for df in frames])


def from_numpy(arrays: Any) -> MaterializedDataset:
    """A dataset of one ndarray or a list of them (one block each): rows
    ``{"data": array[i]}`` (a multi-dimensional array gives ndarray cells)."""
    import numpy as np

    pieces = [arrays] if isinstance(arrays, np.ndarray) else list(arrays)
    for a in pieces:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"from_numpy() takes ndarrays, got {type(a).__name__}")
    return _from_blocks([BlockAccessor.from_batch({"data": a}) for a in pieces])


def from_arrow(tables: Any) -> MaterializedDataset:
    """A dataset of one pyarrow Table or a list of them (one block each)."""
    import pyarrow as pa

    pieces = [tables] if isinstance(tables, pa.Table) else list(tables)
    for t in pieces:
        if not isinstance(t, pa.Table):
            raise TypeError(f"from_arrow() takes pyarrow Tables, got {type(t).__name__}")
    return _from_blocks(pieces)


def from_arrow_refs(refs: Any) -> MaterializedDataset:
    """A dataset of tables already in the store (a ref or a list of refs); their
    metadata is computed by tasks, so no table passes through the driver."""
    refs = [refs] if isinstance(refs, fedexec.ObjectRef) else list(refs)
    executor = DataContext.get_current().resolve_executor()
    metas = executor.get([executor.options(name="BlockMetadata", num_cpus=0)
                          .submit(_metadata_of, ref) for ref in refs])
    return MaterializedDataset(InputData(bundles=tuple(
        RefBundle(((ref, meta),)) for ref, meta in zip(refs, metas))))


def _metadata_of(block: Any) -> BlockMetadata:
    import pyarrow as pa

    if not isinstance(block, pa.Table):
        raise TypeError(f"from_arrow_refs(): a ref holds a {type(block).__name__}, "
                        "not a pyarrow Table")
    return BlockAccessor.for_block(block).get_metadata()


def _from_blocks(blocks: list[Block], executor: fedexec.Executor | None = None
                 ) -> MaterializedDataset:
    executor = executor or DataContext.get_current().resolve_executor()
    bundles = tuple(RefBundle(((executor.put(b), BlockAccessor.for_block(b).get_metadata()),))
                    for b in blocks)
    return MaterializedDataset(InputData(bundles=bundles))


def _parallelism(parallelism: Any) -> int:
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or \
            parallelism == 0 or parallelism < -1:
        raise ValueError(f"parallelism must be -1 (automatic) or an int >= 1, "
                         f"got {parallelism!r}")
    return parallelism
