"""``GroupedData`` (``Dataset.groupby(key)``) and the aggregation engine behind
it and ``Dataset.aggregate``/``sum``/``mean``/...

A grouped aggregation aggregates each block before anything moves, then sizes
its exchange by what is left: the partial states, not the input::

    block i ──partial task: partial state per group (aggregate.py), and the keys
              of a few of its groups──▶ [(groups, bytes, key samples), partial i]
    driver: N from the partials' bytes (:func:`partitions_for_partials`)
      N = 1: every partial ──one reduce task──▶ the one output block
      N > 1: boundaries from the key samples; the partials go through a
             range-partitioned exchange (``shuffle.py``): partial i ──map task:
             sort, cut at the boundaries──▶ N parts; parts j ──reduce task──▶ block j
    reduce: concatenate, sort, regroup, merge, finalize

A partial table has the key columns (``"key"`` for plain rows grouped by a
function), then each aggregation's state columns (``__agg<i>_<state>``). The
output has one row per group: the key columns, then one column per aggregation
named as Ray names it (``count()``, ``sum(x)``, ``mean(x)`` ...), sorted by key
(null keys last), blocks in key order. Plain rows grouped by a function give
tuples ``(key, result, ...)``. Without a key there is one partition and one row
(``Dataset.aggregate``: a dict, or a tuple for plain rows).

``map_groups(fn)`` range-partitions the raw rows the same way (each output block
sorted by key and holding whole groups), then a map operator (:class:`MapGroups`)
calls ``fn`` on each group's batch: as tasks, or on an actor pool for a callable
class, exactly like ``map_batches``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .aggregate import (
    AggregateFn,
    Count,
    Groups,
    Max,
    Mean,
    Min,
    Std,
    Sum,
    _ColumnAggregate,
    _to_column,
)
from .all_to_all import AllToAllContext
from .block import Block, BlockAccessor, BlockMetadata, check_batch_format, compact
from .bundle import RefBundle
from .compute import compute_for
from .plan import AllToAll
from .shuffle import MAX_PARTITIONS, exchange, reduce_parts, repartition_fn, take_blocks
from .sort import (
    SAMPLES_PER_PARTITION,
    SortKey,
    boundaries,
    check_columns,
    range_partition,
    schema_of,
)
from .transforms import MapBatches, TaskContext, fn_name

if TYPE_CHECKING:
    from .dataset import Dataset

__all__ = ["GroupedData", "MapGroups", "aggregate_fn", "aggregate_row", "column_aggregate"]

#: ``(schema of the input, or None) -> the aggregations`` (resolves ``on=None``).
AggsFor = Callable[[Any], Sequence[AggregateFn]]

_PLAIN_KEY = "key"

#: The least partial state (bytes) worth a reduce partition of its own.
MIN_PARTITION_BYTES = 1 << 20


# --------------------------------------------------------------------------- engine
def _groups(key: SortKey | None, block: Any, key_columns: tuple[str, ...]) -> Groups:
    """``block`` sorted by ``key`` and cut into groups, each with its key."""
    acc = BlockAccessor.for_block(block)
    if key is None:
        return Groups(block, np.zeros(1 if acc.num_rows() else 0, dtype=np.int64), None)
    block = key.sort(block)
    starts = key.group_starts(block)
    if key.columns is not None:
        keys = block.select(list(key.columns)).take(starts)
    else:
        values = [key.row_key(block, int(i))[0] for i in starts]
        keys = pa.table({_PLAIN_KEY: _to_column("the groupby key", values)})
    return Groups(block, starts, keys.rename_columns(list(key_columns)))


def _states(table: pa.Table, i: int) -> pa.Table:
    """Aggregation ``i``'s state columns of a partial table, without their prefix."""
    prefix = f"__agg{i}_"
    names = [n for n in table.column_names if n.startswith(prefix)]
    return table.select(names).rename_columns([n[len(prefix):] for n in names])


def _with_states(keys: pa.Table | None, states: list[dict[str, pa.Array]]) -> pa.Table:
    columns: dict[str, Any] = {} if keys is None else dict(zip(keys.column_names, keys.columns))
    for i, state in enumerate(states):
        columns.update({f"__agg{i}_{name}": values for name, values in state.items()})
    return pa.table(columns)


@dataclass(frozen=True)
class _AggPartial:
    """Map side: the partial state of each group of a block (a table: the key
    columns, then the states)."""

    key: SortKey | None
    aggs: tuple[AggregateFn, ...]
    key_columns: tuple[str, ...]

    def __call__(self, block: Block) -> pa.Table:
        if BlockAccessor.for_block(block).num_rows() and all(
                isinstance(agg, _ColumnAggregate) for agg in self.aggs):
            return _hash_partial(self.key, block, self.key_columns, self.aggs)
        groups = _groups(self.key, block, self.key_columns)
        return _with_states(groups.keys, [agg._partial(groups) for agg in self.aggs])


def _partial_task(fn: _AggPartial, samples: int, block: Block) -> list[Any]:
    """Task body: ``[(groups, bytes, key samples), partial table]`` of a block."""
    partial = compact(fn(block))
    acc = BlockAccessor.for_block(partial)
    keys = _partial_key(fn.key_columns).sample(partial, samples) if fn.key_columns else []
    return [(acc.num_rows(), acc.size_bytes(), keys), partial]


@dataclass(frozen=True)
class _CutPartial:
    """Exchange map over partial tables: sort by the key, cut at the boundaries."""

    key_columns: tuple[str, ...]
    bounds: tuple[tuple[Any, ...], ...]

    def __call__(self, partial: Block, index: int) -> list[Block]:
        return _partial_key(self.key_columns).sorted_parts(partial, self.bounds)


def _hash_partial(key: SortKey | None, block: Any, key_columns: tuple[str, ...],
                  aggs: Sequence[Any]) -> pa.Table:
    """The partial table of built-in aggregations by one hash aggregation of the
    block by key (no sort; groups in any order)."""
    columns: dict[str, Any] = {}
    if key is not None:
        key.check(block)
        if key.columns is not None:
            columns.update({c: block.column(c) for c in key.columns})
        else:
            values = [key.row_key(block, i)[0] for i in range(len(block))]
            columns[_PLAIN_KEY] = _to_column("the groupby key", values)
    specs, states = [], []
    for i, agg in enumerate(aggs):
        columns[f"__in{i}"] = agg._input(block)
        for state, kernel, options in agg._kernels():
            specs.append((f"__in{i}", kernel, options))
            states.append((i, state))
    table = pa.table(columns).group_by(list(key_columns), use_threads=False).aggregate(specs)
    raw: list[dict[str, Any]] = [{} for _ in aggs]
    outputs = [c for name, c in zip(table.column_names, table.columns) if name.startswith("__in")]
    for (i, state), column in zip(states, outputs):  # in the order of the specs
        raw[i][state] = column
    keys = table.select(list(key_columns)) if key_columns else None
    return _with_states(keys, [agg._from_kernels(r) for agg, r in zip(aggs, raw)])


def _partial_key(columns: tuple[str, ...]) -> SortKey:
    return SortKey(columns, None, (False,) * len(columns), "groupby")


@dataclass(frozen=True)
class _AggReduce:
    """Reduce side: merge the partial states of each group, finalize."""

    aggs: tuple[AggregateFn, ...]
    key_columns: tuple[str, ...]
    plain: bool

    def __call__(self, index: int, parts: list[Block]) -> Block:
        table: Any = BlockAccessor.concat(parts)
        if self.key_columns:
            key = _partial_key(self.key_columns)
            table = key.sort(table)
            starts = key.group_starts(table)
            keys = table.select(list(self.key_columns)).take(starts)
        else:
            starts, keys = np.zeros(1 if table.num_rows else 0, dtype=np.int64), None
        groups = Groups(table, starts, keys)
        columns: dict[str, Any] = {} if keys is None else dict(zip(keys.column_names,
                                                                   keys.columns))
        for i, agg in enumerate(self.aggs):
            columns[agg.name] = agg._finalize(pa.table(agg._merge(_states(table, i), groups)))
        out = pa.table(columns) if columns else pa.table({})
        if not self.plain:
            return out
        return [tuple(row.values()) for row in out.to_pylist()]


def _check(key: SortKey | None, aggs: Sequence[AggregateFn], schema: Any) -> None:
    names = [agg.name for agg in aggs]
    if len(set(names)) != len(names):
        raise ValueError(f"aggregations need distinct names, got {names}: give one an "
                         "alias_name")
    if key is not None:
        key.check_schema(schema)
    for agg in aggs:
        on = getattr(agg, "on", None)
        if isinstance(on, str) and schema is not None:
            if not isinstance(schema, pa.Schema):
                raise TypeError(f"{agg.name}: a column name needs tabular rows (dicts); for "
                                "plain rows pass on=None or a function of the row")
            check_columns([on], schema, f"{agg.name}: columns")


def partitions_for_partials(ctx: AllToAllContext, partial_bytes: int, partials: int) -> int:
    """Reduce partitions for partial states of ``partial_bytes`` in all, from
    ``partials`` blocks: output blocks of at most ``target_max_block_size``, and
    no partition under :data:`MIN_PARTITION_BYTES` of states (a smaller reduce
    costs more in tasks than it gains in parallelism), at most one per block."""
    by_size = -(-partial_bytes // max(1, ctx.data_context.target_max_block_size))
    useful = -(-partial_bytes // MIN_PARTITION_BYTES)
    return max(1, by_size, min(useful, partials, MAX_PARTITIONS))


def _aggregate(key: SortKey | None, aggs_for: AggsFor, bundles: list[RefBundle],
               ctx: AllToAllContext) -> list[RefBundle]:
    blocks = take_blocks(bundles)
    schema = schema_of(blocks)
    aggs = tuple(aggs_for(schema))
    _check(key, aggs, schema)
    plain = schema is not None and not isinstance(schema, pa.Schema)
    key_columns: tuple[str, ...] = () if key is None else key.columns or (_PLAIN_KEY,)
    most = max(1, min(len(blocks), MAX_PARTITIONS))
    samples = -(-SAMPLES_PER_PARTITION * most // max(1, len(blocks)))
    partial = _AggPartial(key, aggs, key_columns)
    tasks = [ctx.submit(_partial_task, partial, samples, ref, num_returns=2)
             for ref, _ in blocks]
    blocks.clear()
    infos = ctx.executor.get([info for info, _ in tasks])
    partials = [(ref, BlockMetadata(groups, size)) for (_, ref), (groups, size, _)
                in zip(tasks, infos) if groups]
    del tasks
    reduce = _AggReduce(aggs, key_columns, plain)
    n = partitions_for_partials(ctx, sum(size for _, size, _ in infos), len(partials)) \
        if key_columns else 1
    bounds = tuple(boundaries([s for _, _, keys in infos for s in keys], n,
                              _partial_key(key_columns))) if n > 1 else ()
    if not bounds:
        every = [[ref for ref, _ in partials]] if partials else []
        return [b for b in reduce_parts(ctx, every, reduce) if b is not None]
    return exchange(ctx, partials, _CutPartial(key_columns, bounds), reduce, len(bounds) + 1)


def aggregate_fn(key: SortKey | None, aggs_for: AggsFor,
                 ) -> Callable[[list[RefBundle], AllToAllContext], list[RefBundle]]:
    """The all-to-all function aggregating by ``key`` (None: all rows at once)."""
    return functools.partial(_aggregate, key, aggs_for)


def _fixed(aggs: Sequence[AggregateFn]) -> AggsFor:
    for agg in aggs:
        if not isinstance(agg, AggregateFn):
            raise TypeError(f"aggregate() takes AggregateFn objects (Count(), Sum('x') ...), "
                            f"got {agg!r}")
    if not aggs:
        raise ValueError("aggregate() needs at least one aggregation")
    return lambda schema: aggs


def _per_column(cls: Callable[..., AggregateFn], on: Any, exclude: Sequence[str],
                **kwargs: Any) -> AggsFor:
    """Aggregations of ``cls`` over ``on``: a column, a list of them, a function of
    plain rows, or None (every column but ``exclude``; plain rows: the row)."""
    if isinstance(on, (list, tuple)):
        return _fixed([cls(c, **kwargs) for c in on])
    if on is not None:
        return _fixed([cls(on, **kwargs)])

    def every_column(schema: Any) -> list[AggregateFn]:
        if isinstance(schema, pa.Schema):
            return [cls(c, **kwargs) for c in schema.names if c not in exclude]
        return [cls(None, **kwargs)]

    return every_column


def _aggregated(ds: Dataset, key: SortKey | None, aggs_for: AggsFor) -> Dataset:
    return ds._with(AllToAll((ds._plan,), op_name="Aggregate", fn=aggregate_fn(key, aggs_for)))


def aggregate_row(ds: Dataset, aggs: Sequence[AggregateFn]) -> Any:
    """``Dataset.aggregate``: a dict ``{name: result}`` (a tuple for plain rows)."""
    rows = _aggregated(ds, None, _fixed(aggs)).take_all()
    return rows[0] if rows else {agg.name: agg._empty() for agg in aggs}


def column_aggregate(ds: Dataset, cls: Callable[..., AggregateFn], on: Any,
                     **kwargs: Any) -> Any:
    """``Dataset.sum(on)`` and its kin: the value for one column (or for plain
    rows), a dict ``{"sum(x)": ...}`` for a list of columns or ``on=None``."""
    rows = _aggregated(ds, None, _per_column(cls, on, (), **kwargs)).take_all()
    if not rows:
        if isinstance(on, (list, tuple)):
            return {cls(c, **kwargs).name: None for c in on}
        return None
    row = rows[0]
    if isinstance(row, tuple):
        return row[0] if len(row) == 1 else row
    return next(iter(row.values())) if on is not None and not isinstance(
        on, (list, tuple)) else row


# --------------------------------------------------------------------------- map_groups
class MapGroups(MapBatches):
    """``map_groups``: ``fn`` on each group's rows as one batch (the blocks it gets
    are sorted by key and hold whole groups)."""

    def __init__(self, key: SortKey | None, fn: Any, **kwargs: Any):
        super().__init__(fn, batch_size=None, name=f"MapGroups({fn_name(fn)})", **kwargs)
        self.key = key

    def apply(self, blocks: Iterator[Block], ctx: TaskContext) -> Iterator[Block]:
        return super().apply(self._split(blocks), ctx)

    def _split(self, blocks: Iterator[Block]) -> Iterator[Block]:
        for block in blocks:
            acc = BlockAccessor.for_block(block)
            if self.key is None:
                yield block
                continue
            starts = [int(s) for s in self.key.group_starts(block)]
            for lo, hi in zip(starts, [*starts[1:], acc.num_rows()]):
                yield acc.slice(lo, hi)


# --------------------------------------------------------------------------- GroupedData
class GroupedData:
    """The rows of a dataset grouped by a key (``Dataset.groupby(key)``): aggregate
    each group (one output row per group, sorted by key) or map each group.

    ``key``: a column name or a list of them; for plain rows a function of the
    row; None: all rows form one group.
    """

    def __init__(self, dataset: Dataset, key: Any):
        self._dataset = dataset
        self._key = None if key is None else SortKey.of(key, False, "groupby")
        self._key_columns = () if self._key is None else self._key.columns or ()

    def __repr__(self) -> str:
        return f"GroupedData(key={self._key_columns or self._key})"

    def aggregate(self, *aggs: AggregateFn) -> Dataset:
        """One row per group: the key, then each aggregation's result (a column
        named as the aggregation)."""
        return _aggregated(self._dataset, self._key, _fixed(aggs))

    def count(self) -> Dataset:
        """The rows of each group, as the column ``count()``."""
        return self.aggregate(Count())

    def sum(self, on: Any = None, ignore_nulls: bool = True) -> Dataset:
        """The sum of ``on`` (a column, a list of columns, None: every other column)
        per group, as ``sum(col)`` columns."""
        return self._per_column(Sum, on, ignore_nulls=ignore_nulls)

    def min(self, on: Any = None, ignore_nulls: bool = True) -> Dataset:
        """The smallest value of ``on`` per group, as ``min(col)`` columns."""
        return self._per_column(Min, on, ignore_nulls=ignore_nulls)

    def max(self, on: Any = None, ignore_nulls: bool = True) -> Dataset:
        """The largest value of ``on`` per group, as ``max(col)`` columns."""
        return self._per_column(Max, on, ignore_nulls=ignore_nulls)

    def mean(self, on: Any = None, ignore_nulls: bool = True) -> Dataset:
        """The mean of ``on`` per group, as ``mean(col)`` columns."""
        return self._per_column(Mean, on, ignore_nulls=ignore_nulls)

    def std(self, on: Any = None, ddof: int = 1, ignore_nulls: bool = True) -> Dataset:
        """The standard deviation of ``on`` per group (divisor ``count - ddof``), as
        ``std(col)`` columns."""
        return self._per_column(Std, on, ddof=ddof, ignore_nulls=ignore_nulls)

    def _per_column(self, cls: Callable[..., AggregateFn], on: Any, **kwargs: Any) -> Dataset:
        return _aggregated(self._dataset, self._key,
                           _per_column(cls, on, self._key_columns, **kwargs))

    def map_groups(self, fn: Any, *, batch_format: str = "default",
                   fn_args: Sequence[Any] = (), fn_kwargs: dict[str, Any] | None = None,
                   fn_constructor_args: Sequence[Any] = (),
                   fn_constructor_kwargs: dict[str, Any] | None = None,
                   concurrency: int | tuple[int, int] | None = None,
                   num_cpus: float | None = None, num_gpus: float | None = None) -> Dataset:
        """``fn(batch) -> batch`` on each group's rows (one batch per group, groups in
        key order); the outputs concatenated. ``fn`` and the other arguments are as
        in ``map_batches`` (a callable class runs on an actor pool)."""
        if not callable(fn):
            raise TypeError(f"map_groups() takes a function or a callable class, got {fn!r}")
        if not isinstance(fn, type) and (fn_constructor_args or fn_constructor_kwargs):
            raise ValueError("fn_constructor_args/fn_constructor_kwargs are for a callable "
                             "class; fn is a function")
        check_batch_format(batch_format)
        compute = compute_for(fn, concurrency)
        ds = self._dataset
        if self._key is None:
            grouped = ds._with(AllToAll((ds._plan,), op_name="Repartition",
                                        fn=repartition_fn(1, False)))
        else:
            grouped = ds._with(AllToAll((ds._plan,), op_name="GroupBy",
                                        fn=functools.partial(range_partition, self._key)))
        stage = MapGroups(self._key, fn, batch_format=batch_format, fn_args=fn_args,
                          fn_kwargs=fn_kwargs, fn_constructor_args=fn_constructor_args,
                          fn_constructor_kwargs=fn_constructor_kwargs)
        options = {k: v for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus))
                   if v is not None}
        return grouped._map(stage, compute, options)
