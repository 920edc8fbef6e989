"""Exchange with other engines: what Dask, Modin and Spark conversions share.

Both directions move **refs**, never data through the driver:

* **into** a dataset: the other engine's partitions are already in the store (a
  Dask partition computed by the fedexec Dask scheduler, a Modin partition) or in
  files on a node (a Spark partition); one task per partition makes it a block
  and returns ``(metadata, block)`` as two refs; the driver fetches only the
  metadata::

      partition ref ──task (on its node)──▶ [metadata ref, block ref]
      driver: get(metadata refs) ──▶ MaterializedDataset(RefBundle per block)

* **out of** a dataset: :func:`pandas_partitions` runs the dataset and turns each
  block into a pandas DataFrame in a task. Blocks converted apart can come out
  with different dtypes, which Dask and Modin do not accept: a column all null
  in one block has Arrow's null type there, so each table is first cast to the
  blocks' unified Arrow schema (known from their metadata); and an int column
  with a null becomes float64 in that block only, so each task also returns its
  frame's dtypes, the driver takes the common dtype of each column, and frames
  that differ are cast by one more task. The result is the frame refs and an
  empty frame with the common dtypes (Dask's ``meta``).

Also here: ``from_pandas_refs`` and ``Dataset.to_pandas_refs`` (Ray's names),
built on the same two pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pyarrow as pa

import fedexec

from .block import BlockAccessor, BlockMetadata
from .bundle import RefBundle
from .context import DataContext
from .dataset import Dataset, MaterializedDataset
from .plan import InputData

__all__ = ["BlockCall", "blocks_from_calls", "from_pandas_refs", "pandas_partitions"]

#: One block-making task: ``(fn, args, options)``; ``fn(*args)`` returns
#: ``(BlockMetadata, block)``; ``options`` are fedexec task options.
BlockCall = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def blocks_from_calls(executor: fedexec.Executor, calls: Iterable[BlockCall], *,
                      window: int | None = None) -> MaterializedDataset:
    """A dataset of the blocks ``calls`` make, in order: each runs as a task with
    ``num_returns=2``; only the metadata comes to the driver. With ``window``, at
    most that many run at once (for tasks that take no CPU)."""
    pairs: list[tuple[fedexec.ObjectRef[Any], fedexec.ObjectRef[Any]]] = []
    pending: list[fedexec.ObjectRef[Any]] = []
    for fn, args, options in calls:
        if window is not None and len(pending) >= window:
            _, pending = executor.wait(pending, num_returns=len(pending) - window + 1)
        meta_ref, block_ref = executor.options(num_returns=2, **options).submit(fn, *args)
        pairs.append((meta_ref, block_ref))
        pending.append(meta_ref)
    metas: list[BlockMetadata] = executor.get([m for m, _ in pairs]) if pairs else []
    return MaterializedDataset(InputData(bundles=tuple(
        RefBundle(((block_ref, meta),)) for (_, block_ref), meta in zip(pairs, metas))))


def frame_to_block(frame: Any) -> tuple[BlockMetadata, Any]:
    """Task body: a pandas DataFrame (or Series) as a block and its metadata (the
    index dropped, as ``from_pandas`` does)."""
    import pandas as pd

    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"a partition holds a {type(frame).__name__}, not a pandas DataFrame")
    block = BlockAccessor.from_batch(frame)
    return BlockAccessor.for_block(block).get_metadata(), block


def from_pandas_refs(refs: Any) -> MaterializedDataset:
    """A dataset of pandas DataFrames already in the store (a ref or a list of
    refs; one block each, the index dropped), converted by tasks: no frame passes
    through the driver."""
    refs = [refs] if isinstance(refs, fedexec.ObjectRef) else list(refs)
    for ref in refs:
        if not isinstance(ref, fedexec.ObjectRef):
            raise TypeError(f"from_pandas_refs() takes ObjectRefs, got {type(ref).__name__}")
    executor = DataContext.get_current().resolve_executor()
    return blocks_from_calls(executor, ((frame_to_block, (ref,), {"name": "FromPandasRefs"})
                                        for ref in refs))


# --------------------------------------------------------------------------- out
def _block_to_frame(block: Any, schema: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """Task body: the block as a pandas DataFrame (a table cast to ``schema`` first,
    when given and it has the same columns), and its ``(column, dtype)`` list."""
    if schema is not None and isinstance(block, pa.Table) and \
            sorted(block.column_names) == sorted(schema.names):
        block = block.select(schema.names).cast(schema)
    frame = BlockAccessor.for_block(block).to_pandas()
    return frame, [(str(c), d) for c, d in frame.dtypes.items()]


def _unified_schema(metas: Sequence[BlockMetadata]) -> Any:
    """One Arrow schema all the tabular blocks cast to (a column all null in one
    block takes the others' type), or None (plain rows, or no such schema)."""
    schemas = [m.schema for m in metas if isinstance(m.schema, pa.Schema)]
    if not schemas or len(schemas) != len(metas):
        return None
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError):
        return None


def _cast_frame(frame: Any, dtypes: dict[str, Any]) -> Any:
    """Task body: ``frame`` with its columns cast to ``dtypes``."""
    return frame.astype(dtypes)


def _common_dtype(dtypes: Sequence[Any]) -> Any:
    """One dtype every one of ``dtypes`` converts to without loss of a value:
    itself if they agree, the NumPy promotion of numeric ones, else ``object``."""
    import numpy as np

    first = dtypes[0]
    if all(d == first for d in dtypes):
        return first
    if all(isinstance(d, np.dtype) and d.kind in "iuf" for d in dtypes):
        return np.result_type(*dtypes)
    return np.dtype(object)


def pandas_partitions(ds: Dataset, name: str) -> tuple[list[fedexec.ObjectRef[Any]], Any,
                                                         list[int]]:
    """Run ``ds`` and convert each block to a pandas DataFrame in a task (named
    ``name``), all with the same dtypes (see the module docstring).

    Returns:
        ``(refs, meta, rows)``: one frame ref per block in order, an empty frame
        with the columns and common dtypes, and each frame's row count. A
        dataset without blocks gives one empty frame, put from the driver.
    """
    import pandas as pd

    run = ds._run()
    executor = run.executor
    blocks = [pair for bundle in run.bundles for pair in bundle.blocks]
    if not blocks:
        empty = pd.DataFrame()
        return [executor.put(empty)], empty, [0]
    schema = _unified_schema([meta for _, meta in blocks])
    frames: list[fedexec.ObjectRef[Any]] = []
    dtype_refs: list[fedexec.ObjectRef[Any]] = []
    for ref, _ in blocks:
        frame, dtypes = executor.options(name=name, num_returns=2).submit(
            _block_to_frame, ref, schema)
        frames.append(frame)
        dtype_refs.append(dtypes)
    rows = [int(meta.num_rows or 0) for _, meta in blocks]
    per_block = executor.get(dtype_refs)
    columns = [c for c, _ in per_block[0]]
    by_column: dict[str, list[Any]] = {c: [] for c in columns}
    for listed in per_block:
        if [c for c, _ in listed] != columns:
            raise ValueError(f"the blocks of this dataset have different columns "
                             f"({columns} and {[c for c, _ in listed]}); select the same "
                             "columns in every block first")
        for c, d in listed:
            by_column[c].append(d)
    common = {c: _common_dtype(ds_) for c, ds_ in by_column.items()}
    for i, listed in enumerate(per_block):
        differ = {c: common[c] for c, d in listed if d != common[c]}
        if differ:
            frames[i] = executor.options(name=name).submit(_cast_frame, frames[i], differ)
    meta = pd.DataFrame({c: pd.Series(dtype=d) for c, d in common.items()}, columns=columns)
    return frames, meta, rows
