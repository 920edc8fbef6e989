"""``Dataset``: a lazy plan over blocks; ``MaterializedDataset``: one that ran.

Transformations build a new logical plan (``plan.py``) and run nothing.
Consuming calls (``iter_batches``, ``take``, ``count``, ``materialize`` ...)
optimize the plan, build the physical operators and run them with the streaming
executor (``executor.py``) on the executor ``DataContext`` resolves at that
moment; they pull bundles as they come, so a dataset larger than memory streams
through. Each run records its stats, which ``stats()`` reports afterwards.
Metadata travels apart from blocks, so ``count``/``num_blocks``/``size_bytes``
never fetch a block into the driver.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import fedexec

from .aggregate import AggregateFn, Max, Mean, Min, Std, Sum
from .block import BlockAccessor, check_batch_format
from .bundle import RefBundle
from .columns import AddColumn, DropColumns, RenameColumns, SelectColumns
from .compute import compute_for
from .context import DataContext
from .data_iterator import DataIterator, DatasetIterator
from .datasink import Datasink, run_write
from .executor import StreamingExecutor
from .grouped import GroupedData, aggregate_row, column_aggregate
from .iterator import iter_batches, iter_blocks, iter_rows
from .local_shuffle import check_shuffle_args
from .plan import (
    AllToAll,
    InputData,
    Limit,
    LogicalOperator,
    MapOp,
    Read,
    Union,
    Zip,
    plan_physical,
)
from .shuffle import check_seed, random_shuffle_fn, randomize_block_order_fn, repartition_fn
from .sort import SortKey, sort_fn
from .stats import DatasetStats
from .transforms import MapBatches, MapRows, Stage, WriteStage
from .write_files import CSVDatasink, JSONDatasink, NumpyDatasink, ParquetDatasink

if TYPE_CHECKING:
    from .pipeline import DatasetPipeline

__all__ = ["Dataset", "MaterializedDataset"]

_DEFAULT = object()  # "not given" for batch_size


class _Run:
    """One execution: the bundle iterator, the run's stats and its final schema
    (with the process's ``DataContext``, or ``context`` when given)."""

    def __init__(self, ds: Dataset, context: DataContext | None = None):
        context = (context or DataContext.get_current()).snapshot()
        self.executor = context.resolve_executor()
        resources = self.executor.cluster_resources()
        self.ops = plan_physical(ds._plan, context, resources)
        self.stats = DatasetStats(operators=[op.stats for op in self.ops])
        ds._last_stats = self.stats
        self._streaming = StreamingExecutor(self.ops, context, self.executor, resources,
                                            self.stats)
        self.bundles: Iterator[RefBundle] = self._streaming.execute()

    def schema(self) -> Any:
        """The last schema seen on the final operator's outputs (after the run)."""
        return self.ops[-1].schema


class Dataset:
    """A distributed collection of rows (dicts, or plain values), built lazily.

    Create one with ``fedexec.data.range``, ``from_items``, ``from_pandas`` ...;
    transform it (``map``, ``map_batches`` ...: each returns a new ``Dataset``);
    consume it (``iter_batches``, ``take``, ``to_pandas`` ...). Order is kept by
    every transform here.
    """

    def __init__(self, plan: LogicalOperator, stats: DatasetStats | None = None):
        self._plan = plan
        self._last_stats = stats

    def _with(self, op: LogicalOperator) -> Dataset:
        return Dataset(op)

    def _map(self, stage: Stage, compute: Any = None, options: dict[str, Any] | None = None,
             ) -> Dataset:
        return self._with(MapOp((self._plan,), stage=stage,
                                compute=compute or compute_for(None, None),
                                options=options or {}))

    # -- per-row transforms ---------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any], *, num_cpus: float | None = None,
            num_gpus: float | None = None) -> Dataset:
        """``fn(row) -> row`` on every row. Rows returned as dicts make a tabular
        dataset; other values make plain rows."""
        return self._row_op(fn, "map", num_cpus, num_gpus)

    def filter(self, fn: Callable[[Any], bool], *, num_cpus: float | None = None,
               num_gpus: float | None = None) -> Dataset:
        """The rows for which ``fn(row)`` is true."""
        return self._row_op(fn, "filter", num_cpus, num_gpus)

    def flat_map(self, fn: Callable[[Any], Any], *, num_cpus: float | None = None,
                 num_gpus: float | None = None) -> Dataset:
        """``fn(row) -> iterable of rows`` on every row, the outputs concatenated."""
        return self._row_op(fn, "flat_map", num_cpus, num_gpus)

    def _row_op(self, fn: Any, kind: str, num_cpus: float | None,
                num_gpus: float | None) -> Dataset:
        if isinstance(fn, type):
            raise TypeError(f"{kind}() takes a function; for a callable class (constructed "
                            "once per actor) use map_batches(Class, concurrency=n)")
        if not callable(fn):
            raise TypeError(f"{kind}() takes a function, got {fn!r}")
        return self._map(MapRows(fn, kind), options=_options(num_cpus, num_gpus))

    # -- batch transforms --------------------------------------------------------------------
    def map_batches(self, fn: Any, *, batch_size: int | object | None = _DEFAULT,
                    batch_format: str = "default", concurrency: int | tuple[int, int] | None = None,
                    num_cpus: float | None = None, num_gpus: float | None = None,
                    fn_args: Sequence[Any] = (), fn_kwargs: dict[str, Any] | None = None,
                    fn_constructor_args: Sequence[Any] = (),
                    fn_constructor_kwargs: dict[str, Any] | None = None) -> Dataset:
        """``fn(batch) -> batch`` on batches of ``batch_size`` rows.

        Args:
            fn: a function, or a class whose instances are callable: a class runs on
                a pool of actors, each constructing it once
                (``fn_constructor_args/kwargs``) and calling it on many batches.
            batch_size: rows per batch (default ``DataContext.default_batch_size``,
                4096); None: one batch per block. The last batch of a task may be
                smaller.
            batch_format: ``"default"``/``"numpy"`` (dict of column → ndarray; plain
                rows as the column ``"item"``), ``"pandas"`` or ``"pyarrow"``.
            concurrency: for a function, at most this many tasks at once; for a
                class, ``n`` actors or ``(min, max)`` scaled by the queue.
            num_cpus, num_gpus: resources of each task or actor.
            fn_args, fn_kwargs: more arguments for each call.

        ``fn`` returns a dict of arrays, a DataFrame, a Table or a list (plain rows),
        or is a generator function yielding several of them.

        Raises:
            ValueError: bad ``batch_size``/``batch_format``/``concurrency``, or
                constructor arguments for a function.
        """
        if not callable(fn):
            raise TypeError(f"map_batches() takes a function or a callable class, got {fn!r}")
        is_class = isinstance(fn, type)
        if not is_class and (fn_constructor_args or fn_constructor_kwargs):
            raise ValueError("fn_constructor_args/fn_constructor_kwargs are for a callable "
                             "class; fn is a function")
        if batch_size is _DEFAULT:
            batch_size = DataContext.get_current().default_batch_size
        if batch_size is not None and (isinstance(batch_size, bool) or
                                       not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
        check_batch_format(batch_format)
        compute = compute_for(fn, concurrency)
        stage = MapBatches(fn, batch_size=batch_size, batch_format=batch_format,
                           fn_args=fn_args, fn_kwargs=fn_kwargs,
                           fn_constructor_args=fn_constructor_args,
                           fn_constructor_kwargs=fn_constructor_kwargs)
        return self._map(stage, compute, _options(num_cpus, num_gpus))

    def add_column(self, col: str, fn: Callable[[Any], Any], *,
                   batch_format: str = "pandas") -> Dataset:
        """Add (or replace) column ``col`` with ``fn(batch)`` (a pandas DataFrame by
        default) returning one value per row."""
        return self._map(AddColumn(col, fn, batch_format))

    def drop_columns(self, cols: Sequence[str]) -> Dataset:
        """Without ``cols`` (each must exist)."""
        return self._map(DropColumns(cols))

    def select_columns(self, cols: Sequence[str]) -> Dataset:
        """Only ``cols``, in that order (pushed into the read when possible)."""
        return self._map(SelectColumns(cols))

    def rename_columns(self, mapping: Mapping[str, str]) -> Dataset:
        """Columns renamed by ``mapping`` (old name → new name)."""
        return self._map(RenameColumns(mapping))

    # -- shape ---------------------------------------------------------------------------------
    def limit(self, n: int) -> Dataset:
        """The first ``n`` rows (reading stops once they are there)."""
        return self._with(Limit((self._plan,), n=_count_arg("limit", n)))

    def union(self, *others: Dataset) -> Dataset:
        """This dataset's rows, then each of ``others``' rows, in order."""
        for other in others:
            if not isinstance(other, Dataset):
                raise TypeError(f"union() takes datasets, got {type(other).__name__}")
        if not others:
            return self
        return self._with(Union((self._plan, *(o._plan for o in others))))

    def zip(self, other: Dataset) -> Dataset:
        """Row ``i`` of this dataset beside row ``i`` of ``other`` (same row count):
        columns of both (a duplicate name from ``other`` gets the suffix ``_1``), or
        ``(row, other_row)`` pairs when either has plain rows.

        Raises:
            ValueError: (when consumed) the row counts differ.
        """
        if not isinstance(other, Dataset):
            raise TypeError(f"zip() takes a dataset, got {type(other).__name__}")
        return self._with(Zip((self._plan, other._plan)))

    # -- all-to-all: shuffle, sort, repartition, groupby, aggregations (datashuffle) -----
    # map-reduce over the object store: shuffle.py, sort.py, grouped.py, aggregate.py
    def random_shuffle(self, *, seed: int | None = None) -> Dataset:
        """The rows in a random order (a distributed shuffle); the same ``seed`` over
        the same blocks gives the same order on every run and backend."""
        fn = random_shuffle_fn(check_seed(seed))
        return self._with(AllToAll((self._plan,), op_name="RandomShuffle", fn=fn))

    def randomize_block_order(self, *, seed: int | None = None) -> Dataset:
        """The blocks in a random order, rows within a block kept (nothing is moved)."""
        fn = randomize_block_order_fn(check_seed(seed))
        return self._with(AllToAll((self._plan,), op_name="RandomizeBlockOrder", fn=fn))

    def sort(self, key: Any = None, descending: bool | Sequence[bool] = False) -> Dataset:
        """The rows sorted by ``key`` (stable): a column name or a list of them for
        tabular rows; for plain rows None (the row itself) or a function of the row.
        ``descending``: a bool, or one per key column. NaN, then nulls, sort last."""
        key = SortKey.of(key, descending, "sort")
        return self._with(AllToAll((self._plan,), op_name="Sort", fn=sort_fn(key)))

    def repartition(self, num_blocks: int, *, shuffle: bool = False) -> Dataset:
        """The rows in ``num_blocks`` blocks: of nearly equal row counts with the
        order kept, or with ``shuffle`` randomly shuffled among them."""
        n = _count_arg("repartition", num_blocks)
        if n < 1:
            raise ValueError("repartition() needs num_blocks >= 1")
        return self._with(AllToAll((self._plan,), op_name="Repartition",
                                   fn=repartition_fn(n, bool(shuffle))))

    def groupby(self, key: Any) -> GroupedData:
        """The rows grouped by ``key`` (a column or a list of columns; for plain rows
        a function of the row; None: one group), to aggregate or map per group."""
        return GroupedData(self, key)

    def aggregate(self, *aggs: AggregateFn) -> Any:
        """The aggregations (``fedexec.data.aggregate.Count()``, ``Sum("x")`` ...)
        over all rows: ``{name: result}`` (a tuple for plain rows)."""
        return aggregate_row(self, aggs)

    def sum(self, on: Any = None, ignore_nulls: bool = True) -> Any:
        """The sum of column ``on`` (plain rows: of the rows, or of ``on(row)``); a
        dict ``{"sum(col)": ...}`` for a list of columns or, with tabular rows,
        ``on=None`` (every column). None for an empty dataset."""
        return column_aggregate(self, Sum, on, ignore_nulls=ignore_nulls)

    def min(self, on: Any = None, ignore_nulls: bool = True) -> Any:
        """The smallest value of ``on`` (as ``sum``)."""
        return column_aggregate(self, Min, on, ignore_nulls=ignore_nulls)

    def max(self, on: Any = None, ignore_nulls: bool = True) -> Any:
        """The largest value of ``on`` (as ``sum``)."""
        return column_aggregate(self, Max, on, ignore_nulls=ignore_nulls)

    def mean(self, on: Any = None, ignore_nulls: bool = True) -> Any:
        """The mean of ``on`` (as ``sum``)."""
        return column_aggregate(self, Mean, on, ignore_nulls=ignore_nulls)

    def std(self, on: Any = None, ddof: int = 1, ignore_nulls: bool = True) -> Any:
        """The standard deviation of ``on``, divisor ``count - ddof`` (as ``sum``)."""
        return column_aggregate(self, Std, on, ddof=ddof, ignore_nulls=ignore_nulls)

    def unique(self, column: str) -> list[Any]:
        """The distinct values of ``column``, in sorted order (null last)."""
        if not isinstance(column, str):
            raise TypeError(f"unique() takes a column name, got {column!r}")
        return [row[column] for row in self.select_columns([column]).groupby(column).count()
                .iter_rows()]

    def write_datasink(self, datasink: Datasink) -> None:
        """Write every block with ``datasink`` (one write task per block; see
        ``fedexec.data.Datasink``)."""
        if not isinstance(datasink, Datasink):
            raise TypeError(f"write_datasink() takes a Datasink, got {type(datasink).__name__}")
        ds = self._map(WriteStage(datasink))
        try:
            run_write(datasink, lambda: list(ds.iter_rows()))
        finally:
            self._last_stats = ds._last_stats

    # -- consuming -------------------------------------------------------------------------------
    def _run(self) -> _Run:
        return _Run(self)

    def _stream(self, context: DataContext) -> Iterator[RefBundle]:
        """The bundles of one run with ``context``'s settings (closeable)."""
        return _Run(self, context).bundles

    def iter_batches(self, *, batch_size: int | None = 256, batch_format: str = "default",
                     prefetch_batches: int = 1, drop_last: bool = False,
                     local_shuffle_buffer_size: int | None = None,
                     local_shuffle_seed: int | None = None) -> Iterator[Any]:
        """Batches of ``batch_size`` rows (None: one per block) in ``batch_format``,
        in order, as the run produces them; ``prefetch_batches`` batches are made
        ready ahead on a thread; ``drop_last`` drops a final short batch.
        ``local_shuffle_buffer_size=n``: rows are mixed in a buffer of at least
        ``n`` rows, across blocks, and batches drawn from it at random
        (``local_shuffle_seed`` makes it reproducible)."""
        check_shuffle_args(batch_size, local_shuffle_buffer_size)
        run = self._run()
        return iter_batches(run.bundles, run.executor, batch_size=batch_size,
                            batch_format=batch_format, prefetch_batches=prefetch_batches,
                            drop_last=drop_last,
                            local_shuffle_buffer_size=local_shuffle_buffer_size,
                            local_shuffle_seed=local_shuffle_seed)

    def iter_rows(self) -> Iterator[Any]:
        """The rows, in order, as the run produces them."""
        run = self._run()
        return iter_rows(run.bundles, run.executor)

    def take(self, n: int = 20) -> list[Any]:
        """The first ``n`` rows (reading stops once they are there)."""
        ds = self.limit(_count_arg("take", n))
        rows = list(ds.iter_rows())
        self._last_stats = ds._last_stats
        return rows

    def take_all(self, limit: int | None = None) -> list[Any]:
        """Every row; with ``limit``, ``ValueError`` if there are more than that."""
        rows = []
        for row in self.iter_rows():
            rows.append(row)
            if limit is not None and len(rows) > limit:
                raise ValueError(f"the dataset has more than the given limit of {limit} rows")
        return rows

    def take_batch(self, batch_size: int = 20, *, batch_format: str = "default") -> Any:
        """The first ``batch_size`` rows as one batch.

        Raises:
            ValueError: the dataset is empty.
        """
        ds = self.limit(_count_arg("take_batch", batch_size))
        for batch in ds.iter_batches(batch_size=batch_size, batch_format=batch_format,
                                     prefetch_batches=0):
            self._last_stats = ds._last_stats
            return batch
        self._last_stats = ds._last_stats
        raise ValueError("take_batch(): the dataset is empty")

    def show(self, n: int = 20) -> None:
        """Print the first ``n`` rows, one per line."""
        for row in self.take(n):
            print(row)

    def count(self) -> int:
        """The number of rows (from metadata: no block reaches the driver)."""
        known = _exact_rows(self._plan)
        if known is not None:
            return known
        return sum(b.num_rows() or 0 for b in self._run().bundles)

    def schema(self) -> Any:
        """A ``pyarrow.Schema`` (``.names``, ``.types``) for tabular rows, the Python
        type of the rows for plain rows, None for an empty dataset. Runs the plan
        only as far as its first block."""
        if isinstance(self._plan, InputData):
            return next((b.schema() for b in self._plan.bundles if b.schema() is not None),
                        None)
        run = self._run()
        for bundle in run.bundles:
            if bundle.schema() is not None:
                run.bundles.close()  # type: ignore[attr-defined]
                return bundle.schema()
        return run.schema()

    def columns(self) -> list[str] | None:
        """The column names (None for plain rows or an empty dataset)."""
        schema = self.schema()
        names = getattr(schema, "names", None)
        return list(names) if names is not None else None

    def num_blocks(self) -> int:
        """The number of blocks the dataset is made of (runs the plan, metadata only)."""
        return sum(len(b) for b in self._run().bundles)

    def size_bytes(self) -> int:
        """The in-memory size of all blocks (runs the plan, metadata only)."""
        return sum(b.size_bytes() for b in self._run().bundles)

    def to_pandas(self, limit: int | None = None) -> Any:
        """All rows as one pandas DataFrame (plain rows as the column ``"item"``);
        with ``limit``, ``ValueError`` if there are more rows than that."""
        import pandas as pd

        run = self._run()
        frames, rows = [], 0
        for block in iter_blocks(run.bundles, run.executor):
            acc = BlockAccessor.for_block(block)
            rows += acc.num_rows()
            if limit is not None and rows > limit:
                run.bundles.close()  # type: ignore[attr-defined]
                raise ValueError(f"the dataset has more than the given limit of {limit} rows")
            frames.append(acc.to_arrow())
        if not frames:
            return pd.DataFrame()
        return BlockAccessor.for_block(BlockAccessor.concat(frames)).to_pandas()

    def to_arrow_refs(self) -> list[fedexec.ObjectRef[Any]]:
        """Refs of the blocks as pyarrow Tables (plain rows converted by tasks, as
        the column ``"item"``); the blocks never pass through the driver."""
        run = self._run()
        refs = []
        for bundle in run.bundles:
            for ref, meta in bundle.blocks:
                tabular = meta.schema is None or hasattr(meta.schema, "names")
                refs.append(ref if tabular else
                            run.executor.options(name="ToArrow").submit(_to_arrow, ref))
        return refs

    def to_numpy_refs(self, *, column: str | None = None) -> list[fedexec.ObjectRef[Any]]:
        """Refs of each block as a dict of column → ndarray (or one column's ndarray
        with ``column``), made by tasks."""
        run = self._run()
        return [run.executor.options(name="ToNumpy").submit(_to_numpy, ref, column)
                for bundle in run.bundles for ref in bundle.block_refs]

    def materialize(self) -> MaterializedDataset:
        """Run now and keep every block in the store: a ``MaterializedDataset``."""
        run = self._run()
        bundles = tuple(run.bundles)
        return MaterializedDataset(InputData(bundles=bundles), run.stats)

    def stats(self) -> str:
        """A report of this dataset's last run, per operator: wall and CPU time,
        tasks, blocks, rows, bytes (``""`` before it ran)."""
        return "" if self._last_stats is None else self._last_stats.to_string()

    def __repr__(self) -> str:
        return f"Dataset(plan={self._plan.describe()})"

    # -- writing files (readers and writers: write_files.py) -----------------------------
    def write_parquet(self, path: str, *, try_create_dir: bool = True,
                      **arrow_parquet_args: Any) -> None:
        """Write the rows as Parquet files into the directory ``path``: one file per
        block, written by tasks, named ``{run}_{task:06d}.parquet`` in the dataset's
        order; ``arrow_parquet_args`` go to ``pyarrow.parquet.write_table``
        (``compression=``, ``row_group_size=``)."""
        self.write_datasink(ParquetDatasink(path, try_create_dir=try_create_dir,
                                            **arrow_parquet_args))

    def write_csv(self, path: str, *, try_create_dir: bool = True,
                  **arrow_csv_args: Any) -> None:
        """Write the rows as CSV files (with a header) into the directory ``path``,
        one per block (as :meth:`write_parquet`); ``write_options=`` is pyarrow's."""
        self.write_datasink(CSVDatasink(path, try_create_dir=try_create_dir, **arrow_csv_args))

    def write_json(self, path: str, *, try_create_dir: bool = True,
                   **pandas_json_args: Any) -> None:
        """Write the rows as JSON lines files into the directory ``path``, one per
        block (as :meth:`write_parquet`); ``pandas_json_args`` go to pandas'
        ``to_json``."""
        self.write_datasink(JSONDatasink(path, try_create_dir=try_create_dir,
                                         **pandas_json_args))

    def write_numpy(self, path: str, *, column: str, try_create_dir: bool = True) -> None:
        """Write the column ``column`` as ``.npy`` files into the directory ``path``,
        one per block (as :meth:`write_parquet`)."""
        self.write_datasink(NumpyDatasink(path, column=column, try_create_dir=try_create_dir))

    # -- splits, iteration extras, pipelines (issue #12 phase 2: split.py,
    # -- streaming_split.py, data_iterator.py, torch_utils.py, pipeline.py) --------------
    def split(self, n: int, *, equal: bool = False) -> list[MaterializedDataset]:
        """``n`` datasets in order (runs this one once); ``equal=True``: exactly
        ``count() // n`` rows each, at most ``n - 1`` rows dropped. See ``split.py``."""
        from .split import split

        return split(self, n, equal=equal)

    def split_at_indices(self, indices: Sequence[int]) -> list[MaterializedDataset]:
        """Datasets of rows ``[0, i0)``, ``[i0, i1)``, ..., ``[ik, end)``."""
        from .split import split_at_indices

        return split_at_indices(self, indices)

    def train_test_split(self, test_size: float | int, *, shuffle: bool = False,
                         seed: int | None = None
                         ) -> tuple[MaterializedDataset, MaterializedDataset]:
        """``(train, test)``: ``test`` is the last ``test_size`` rows (an int) or
        fraction of them (a float); ``shuffle=True`` shuffles first (with ``seed``)."""
        from .split import train_test_split

        return train_test_split(self, test_size, shuffle=shuffle, seed=seed)

    def streaming_split(self, n: int, *, equal: bool = False,
                        drop_remainder: bool = True) -> list[DataIterator]:
        """``n`` picklable iterators fed by one streaming run (one per training
        worker; consume them concurrently); ``equal=True``: ``total // n`` rows
        each per pass, the rest dropped, or with ``drop_remainder=False`` handed
        one row each to the first iterators (counts differ by at most one, and
        together they cover every row). See ``streaming_split.py``."""
        from .streaming_split import streaming_split

        return streaming_split(self, n, equal=equal, drop_remainder=drop_remainder)

    def iterator(self) -> DataIterator:
        """A ``DataIterator`` over this dataset (each pass runs it)."""
        return DatasetIterator(self)

    def iter_torch_batches(self, *, batch_size: int | None = 256, dtypes: Any = None,
                           device: Any = "cpu", collate_fn: Callable[[Any], Any] | None = None,
                           prefetch_batches: int = 1, drop_last: bool = False,
                           local_shuffle_buffer_size: int | None = None,
                           local_shuffle_seed: int | None = None) -> Iterator[Any]:
        """Batches as dicts of torch tensors (``DataIterator.iter_torch_batches``)."""
        return self.iterator().iter_torch_batches(
            batch_size=batch_size, dtypes=dtypes, device=device, collate_fn=collate_fn,
            prefetch_batches=prefetch_batches, drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed)

    def to_torch(self, **kwargs: Any) -> Any:
        """A ``torch.utils.data.IterableDataset`` of ``(features, label)`` batches
        (arguments: ``DataIterator.to_torch``)."""
        return self.iterator().to_torch(**kwargs)

    def window(self, *, blocks_per_window: int = 10) -> DatasetPipeline:
        """A ``DatasetPipeline`` of windows of ``blocks_per_window`` blocks (the
        classic API; see ``pipeline.py``)."""
        from .pipeline import window_pipeline

        return window_pipeline(self, blocks_per_window)

    def repeat(self, times: int | None = None) -> DatasetPipeline:
        """A ``DatasetPipeline`` passing over this whole dataset ``times`` times
        (None: forever), one window per pass."""
        from .pipeline import repeat_pipeline

        return repeat_pipeline(self, times)

    # -- exchange with other engines (dask_exchange, modin_exchange, spark_exchange) -----------
    def to_pandas_refs(self) -> list[fedexec.ObjectRef[Any]]:
        """Refs of the blocks as pandas DataFrames (all with the same dtypes), made
        by tasks: no block passes through the driver."""
        from .exchange import pandas_partitions

        return pandas_partitions(self, "ToPandasRefs")[0]

    def to_dask(self, meta: Any = None, verify_meta: bool = True) -> Any:
        """A Dask DataFrame with one partition per block, in order, its partitions
        in the store: compute it with ``fedexec.integrations.dask.fedexec_dask_get``
        (``FedexecDaskScheduler(ex)`` for an executor that is not the current one)
        and no data passes through the driver. ``meta``: the empty frame Dask
        checks partitions against (default: made from the blocks' dtypes)."""
        from .dask_exchange import dataset_to_dask

        return dataset_to_dask(self, meta, verify_meta)

    def to_modin(self) -> Any:
        """A Modin DataFrame on the ``"Fedexec"`` engine (selected unless another one
        was chosen) whose row partitions are the blocks, moved by reference."""
        from .modin_exchange import dataset_to_modin

        return dataset_to_modin(self)

    def to_spark(self, spark: Any) -> Any:
        """A Spark DataFrame of ``spark`` with one partition per block, in order; on
        a session ``fedexec.integrations.spark.init_spark`` started, the blocks
        reach the Spark executors by node-local files, not through the driver
        (other sessions: through the driver, with a ``RuntimeWarning``)."""
        from .spark_exchange import dataset_to_spark

        return dataset_to_spark(self, spark)


class MaterializedDataset(Dataset):
    """A dataset whose blocks are in the store (``Dataset.materialize()``):
    consuming it again reruns nothing."""

    def __init__(self, plan: InputData, stats: DatasetStats | None = None):
        super().__init__(plan, stats)
        self._bundles = plan.bundles

    def num_blocks(self) -> int:
        return sum(len(b) for b in self._bundles)

    def size_bytes(self) -> int:
        return sum(b.size_bytes() for b in self._bundles)

    def __repr__(self) -> str:
        schema = self.schema()
        names = getattr(schema, "names", None)
        shown = names if names is not None else getattr(schema, "__name__", schema)
        return (f"MaterializedDataset(num_blocks={self.num_blocks()}, "
                f"num_rows={self.count()}, schema={shown})")


# --------------------------------------------------------------------------- helpers
def _options(num_cpus: float | None, num_gpus: float | None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if num_cpus is not None:
        opts["num_cpus"] = num_cpus
    if num_gpus is not None:
        opts["num_gpus"] = num_gpus
    return opts


def _count_arg(what: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{what}() needs an int >= 0, got {n!r}")
    return n


def _exact_rows(op: LogicalOperator) -> int | None:
    """The row count when the plan's metadata gives it without running."""
    if isinstance(op, Read):
        return _read_rows(op)
    if isinstance(op, InputData):
        counts = [b.num_rows() for b in op.bundles]
        return None if any(c is None for c in counts) else builtins.sum(
            c for c in counts if c is not None)
    if isinstance(op, Limit):
        below = _exact_rows(op.inputs[0])
        return None if below is None else min(below, op.n)
    if isinstance(op, MapOp) and op.stage is not None and op.stage.preserves_rows:
        return _exact_rows(op.inputs[0])
    if isinstance(op, Union):
        counts = [_exact_rows(i) for i in op.inputs]
        return None if any(c is None for c in counts) else builtins.sum(
            c for c in counts if c is not None)
    return None


def _read_rows(op: Read) -> int | None:
    """The rows a read will produce, when every read task knows its count."""
    assert op.datasource is not None
    context = DataContext.get_current()
    parallelism = op.parallelism
    if parallelism < 0:
        resources = context.resolve_executor().cluster_resources()
        parallelism = context.default_parallelism(
            resources, op.datasource.estimate_inmemory_data_size())
    total = 0
    for task in op.datasource.get_read_tasks(parallelism):
        rows = task.metadata.num_rows
        if rows is None:
            return None
        total += rows
    return total if op.limit is None else min(total, op.limit)


def _to_arrow(block: Any) -> Any:
    return BlockAccessor.for_block(block).to_arrow()


def _to_numpy(block: Any, column: str | None) -> Any:
    batch = BlockAccessor.for_block(block).to_batch("numpy")
    if column is None:
        return batch
    if column not in batch:
        raise KeyError(f"to_numpy_refs(column={column!r}): no such column; the block has "
                       f"{list(batch)}")
    return batch[column]

