"""Dask DataFrames to datasets and back, through the fedexec Dask scheduler
(``fedexec.integrations.dask``, imported when used).

``from_dask(df)``: the frame's graph runs on the fedexec scheduler with
``return_refs=True``, so each partition is computed by fedexec tasks and stays
in the store; one more task per partition makes it a block::

    dask df ──fedexec_dask_get(graph, keys, return_refs=True)──▶ partition refs
            ──task per partition──▶ blocks (see ``exchange``)

``ds.to_dask()``: the dataset runs, each block becomes a pandas frame in a task
(``exchange.pandas_partitions``), and the Dask frame's partitions are graph nodes
holding those refs (``stored_chunk``). Computed with ``fedexec_dask_get``, a
partition is used where it is, with no copy and nothing through the driver; any
other scheduler fetches the partitions into the process that computes. The
frame holds the refs: the partitions live as long as it (and what is built on
it) does.
"""

from __future__ import annotations

import uuid
from typing import Any

from .context import DataContext
from .dataset import Dataset, MaterializedDataset
from .exchange import blocks_from_calls, frame_to_block, pandas_partitions

__all__ = ["dataset_to_dask", "from_dask"]


def from_dask(df: Any) -> MaterializedDataset:
    """A dataset of a Dask DataFrame (or Series), one block per partition, in
    order (the index dropped). The partitions are computed by fedexec tasks on the
    dataset's executor (``fedexec.integrations.dask``) and never pass through the
    driver."""
    import dask.dataframe as dd

    from fedexec.integrations.dask import fedexec_dask_get

    if isinstance(df, dd.Series):
        df = df.to_frame()
    if not isinstance(df, dd.DataFrame):
        raise TypeError(f"from_dask() takes a Dask DataFrame, got {type(df).__name__}")
    executor = DataContext.get_current().resolve_executor()
    df = df.optimize()
    refs = fedexec_dask_get(df.__dask_graph__(), list(df.__dask_keys__()), executor=executor,
                            return_refs=True)
    return blocks_from_calls(executor, ((frame_to_block, (ref,), {"name": "FromDask"})
                                        for ref in refs))


def dataset_to_dask(ds: Dataset, meta: Any = None, verify_meta: bool = True) -> Any:
    """``ds`` as a Dask DataFrame with one partition per block (see the module
    docstring); ``meta``: the empty frame Dask checks partitions against (default:
    the dataset's columns with the dtypes its blocks convert to)."""
    import dask.dataframe as dd
    from dask.delayed import Delayed

    from fedexec.integrations.dask import stored_chunk

    refs, found, _ = pandas_partitions(ds, "ToDask")
    prefix = f"fedexec-data-{uuid.uuid4().hex[:12]}"
    parts = []
    for i, ref in enumerate(refs):
        key = (prefix, i)
        parts.append(Delayed(key, {key: stored_chunk(key, ref)}))
    return dd.from_delayed(parts, meta=found if meta is None else meta,
                           verify_meta=verify_meta)
