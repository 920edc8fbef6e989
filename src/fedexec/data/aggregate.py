"""Aggregate functions, as ``ray.data.aggregate`` names them: ``Count``, ``Sum``,
``Min``, ``Max``, ``Mean``, ``Std`` and the user-defined ``AggregateFn``.

Pass them to ``Dataset.aggregate(...)`` or ``ds.groupby(key).aggregate(...)``::

    from fedexec.data.aggregate import Count, Mean, Std
    ds.groupby("k").aggregate(Count(), Mean("x"), Std("x"))   # columns k, count(), mean(x), std(x)

How the engine (``grouped.py``) runs one, three steps, each over all the groups
of a block at once::

    map task:    a block, sorted and cut into groups ──_partial──▶ state columns, one row per group
    reduce task: the state rows of one key range, sorted and cut into groups
                 ──_merge──▶ one state row per group ──_finalize──▶ the result column

A state is a few columns (a built-in's count, sum, min, max, mean, M2, null
count ..., computed by pyarrow's grouped kernels; an ``AggregateFn`` of Python
callables keeps each group's accumulator pickled in a binary column), so partial
results are cut, concatenated and sorted like any block.

Nulls: None and NaN both count as null (as in Ray). With ``ignore_nulls=True``
(the default, except for ``Count``) they are skipped, and a group with no other
value gives null; with ``ignore_nulls=False`` a group holding one gives null.
``Std`` divides by ``count - ddof`` (ddof=1 as pandas) and gives NaN when that
is not positive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedexec.util.serialization import loads as safe_loads

from .block import Block, BlockAccessor
from .transforms import fn_name

__all__ = ["AggregateFn", "Count", "Groups", "Max", "Mean", "Min", "Std", "Sum"]


@dataclass
class Groups:
    """Rows cut into groups: ``block`` (sorted by the group key) and the first row
    of each group.

    Attributes:
        block: the rows (a table or plain rows).
        starts: the first row of each group, increasing.
        keys: the key columns, one row per group (None without a key).
    """

    block: Block
    starts: np.ndarray
    keys: pa.Table | None

    def key(self, g: int) -> Any:
        """Group ``g``'s key: a value, a tuple for several key columns, None
        without a key (what ``AggregateFn.init`` gets)."""
        if self.keys is None:
            return None
        values = tuple(column[g].as_py() for column in self.keys.columns)
        return values[0] if len(values) == 1 else values

    @property
    def num_groups(self) -> int:
        return len(self.starts)

    def num_rows(self) -> int:
        return BlockAccessor.for_block(self.block).num_rows()

    def sizes(self) -> np.ndarray:
        """Rows in each group."""
        return np.diff(np.append(self.starts, self.num_rows())).astype(np.int64)

    def ids(self) -> np.ndarray:
        """The group of each row."""
        return np.repeat(np.arange(self.num_groups, dtype=np.int64), self.sizes())

    def segment(self, g: int) -> Block:
        """The rows of group ``g``."""
        end = self.starts[g + 1] if g + 1 < self.num_groups else self.num_rows()
        return BlockAccessor.for_block(self.block).slice(int(self.starts[g]), int(end))


def by_group(values: Any, groups: Groups, fn: str, options: Any = None) -> pa.Array:
    """pyarrow's grouped aggregation ``fn`` of ``values`` (one per row of
    ``groups.block``): one value per group, in group order. Counts, and sums,
    minima and maxima of numbers, are reduced over the (contiguous) groups by
    numpy; the rest by pyarrow's hash aggregation."""
    if groups.num_groups and ((fn == "count" and _is_count(options)) or (fn in _UFUNCS and (
            pa.types.is_integer(values.type) or pa.types.is_floating(values.type)))):
        return _segments(values, groups, fn, options)
    table = pa.table({"g": groups.ids(), "v": values})
    out = table.group_by("g", use_threads=False).aggregate([("v", fn, options)]).sort_by("g")
    return out.column(f"v_{fn}").combine_chunks()


_UFUNCS = {"sum": np.add, "min": np.minimum, "max": np.maximum}


def _segments(values: Any, groups: Groups, fn: str, options: Any) -> pa.Array:
    """``by_group`` by ``ufunc.reduceat`` over each group's rows (null when a group
    has no values, as pyarrow's ``min_count=1``)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    starts = groups.starts
    valid = np.add.reduceat(np.asarray(values.is_valid(), dtype=np.int64), starts)
    if fn == "count":
        if options is _ALL:
            return pa.array(groups.sizes())
        return pa.array(groups.sizes() - valid if options is _NULLS else valid)
    kind = values.type
    if fn == "sum":
        dtype = np.float64 if pa.types.is_floating(kind) else \
            np.uint64 if pa.types.is_unsigned_integer(kind) else np.int64
        fill: Any = 0
    else:
        dtype = kind.to_pandas_dtype()
        info = np.finfo(dtype) if pa.types.is_floating(kind) else np.iinfo(dtype)
        fill = info.max if fn == "min" else info.min
    filled = pc.fill_null(values, pa.scalar(fill, kind)).to_numpy(zero_copy_only=False)
    out = _UFUNCS[fn].reduceat(filled.astype(dtype, copy=False), starts)
    return pa.array(out, mask=valid == 0)


_ALL = pc.CountOptions("all")
_VALID = pc.CountOptions("only_valid")
_NULLS = pc.CountOptions("only_null")
_SUM = pc.ScalarAggregateOptions(min_count=1)
_COUNTS = (_ALL, _VALID, _NULLS)


def _is_count(options: Any) -> bool:
    """One of the count options here (by identity: pyarrow's options do not show
    their mode, and comparing one with None crashes some pyarrow versions)."""
    return any(options is o for o in _COUNTS)


class AggregateFn:
    """An aggregation of Python callables, in the accumulator style (Ray's
    ``AggregateFn``).

    Args:
        init: ``init(key) -> accumulator`` for each group (key: the group's key,
            a tuple for several key columns, None without ``groupby``).
        merge: ``merge(acc1, acc2) -> acc``: combine two partial results.
        accumulate_row: ``accumulate_row(acc, row) -> acc`` for each row.
        accumulate_block: ``accumulate_block(acc, block) -> acc`` for each
            group's rows of a block (a ``pyarrow.Table``, or a list of plain
            rows); instead of ``accumulate_row``.
        finalize: ``finalize(acc) -> result`` (default: the accumulator).
        name: the result's name (its column in a grouped result).
        accumulate: the classic spelling of ``accumulate_row``.

    Raises:
        ValueError: neither or both of ``accumulate_row`` and ``accumulate_block``.
    """

    def __init__(self, init: Callable[[Any], Any], merge: Callable[[Any, Any], Any],
                 accumulate_row: Callable[[Any, Any], Any] | None = None,
                 accumulate_block: Callable[[Any, Block], Any] | None = None,
                 finalize: Callable[[Any], Any] | None = None, name: str | None = None,
                 *, accumulate: Callable[[Any, Any], Any] | None = None):
        accumulate_row = accumulate_row or accumulate
        if (accumulate_row is None) == (accumulate_block is None):
            raise ValueError("AggregateFn needs exactly one of accumulate_row (or accumulate) "
                             "and accumulate_block")
        self.init, self.merge = init, merge
        self.accumulate_row, self.accumulate_block = accumulate_row, accumulate_block
        self.finalize = finalize
        self.name = name or fn_name(init)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    # -- the engine's interface (built-ins override these) ---------------------------------
    def _partial(self, groups: Groups) -> dict[str, pa.Array]:
        """The state of each group of ``groups`` (raw rows)."""
        accs = []
        for g in range(groups.num_groups):
            acc = self.init(groups.key(g))
            rows = groups.segment(g)
            if self.accumulate_block is not None:
                acc = self.accumulate_block(acc, rows)
            else:
                assert self.accumulate_row is not None
                for row in BlockAccessor.for_block(rows).iter_rows():
                    acc = self.accumulate_row(acc, row)
            accs.append(cloudpickle.dumps(acc))
        return {"acc": pa.array(accs, type=pa.binary())}

    def _merge(self, states: pa.Table, groups: Groups) -> dict[str, pa.Array]:
        """The state of each group of ``groups`` (rows of states)."""
        accs = [safe_loads(b) for b in states.column("acc").to_pylist()]
        out = []
        for g in range(groups.num_groups):
            lo = int(groups.starts[g])
            hi = int(groups.starts[g + 1]) if g + 1 < groups.num_groups else len(accs)
            acc = accs[lo]
            for other in accs[lo + 1:hi]:
                acc = self.merge(acc, other)
            out.append(cloudpickle.dumps(acc))
        return {"acc": pa.array(out, type=pa.binary())}

    def _finalize(self, states: pa.Table) -> pa.Array:
        """The results, one per state row."""
        values = [self._final(safe_loads(b)) for b in states.column("acc").to_pylist()]
        return _to_column(self.name, values)

    def _empty(self) -> Any:
        """The result over no rows at all."""
        return self._final(self.init(None))

    def _final(self, acc: Any) -> Any:
        return acc if self.finalize is None else self.finalize(acc)


def _to_column(name: str, values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
        raise TypeError(f"the results of aggregation {name!r} cannot form a column ({e})") \
            from None


class _ColumnAggregate(AggregateFn):
    """A built-in over one column (``on``): a column name for tabular rows; for
    plain rows None (the row itself) or a function of the row.

    Its partial state is pyarrow grouped kernels over its input column
    (:meth:`_kernels`), so the engine may also compute it with one hash
    aggregation by key (no sort) for all built-ins at once.
    """

    kind = ""

    def __init__(self, on: str | Callable[[Any], Any] | None = None, ignore_nulls: bool = True,
                 alias_name: str | None = None):
        if on is not None and not isinstance(on, str) and not callable(on):
            raise TypeError(f"{type(self).__name__}(on=...) takes a column name or (for plain "
                            f"rows) a function of the row, got {on!r}")
        self.on, self.ignore_nulls = on, bool(ignore_nulls)
        shown = "" if on is None else on if isinstance(on, str) else fn_name(on)
        self.name = alias_name or f"{self.kind}({shown})"

    def _kernels(self) -> list[tuple[str, str, Any]]:
        """``(state, pyarrow grouped kernel, options)`` over the input column."""
        raise NotImplementedError

    def _input(self, block: Block) -> pa.Array:
        """The ``on`` value of each row, NaN as null."""
        acc = BlockAccessor.for_block(block)
        if isinstance(self.on, str):
            if not acc.is_tabular:
                raise TypeError(f"{self.name}: a column name needs tabular rows (dicts); for "
                                "plain rows pass on=None or a function of the row")
            if self.on not in acc.block.column_names:
                raise KeyError(f"{self.name}: no column {self.on!r}; the dataset has "
                               f"{acc.block.column_names}")
            values = acc.block.column(self.on).combine_chunks()
        elif self.on is not None or not acc.is_tabular:
            fn = self.on
            values = _to_column(self.name, [fn(r) if fn is not None else r
                                            for r in acc.iter_rows()])
        else:
            raise ValueError(f"{self.name} of tabular rows needs a column: pass on=<name>")
        if pa.types.is_floating(values.type):
            nan = pc.is_nan(values)
            if pc.any(nan).as_py():  # most columns have none: no copy then
                values = pc.if_else(nan, pa.scalar(None, values.type), values)
        return values

    def _from_kernels(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The partial state from the kernels' outputs."""
        return raw

    def _partial(self, groups: Groups) -> dict[str, pa.Array]:
        values = self._input(groups.block)
        return self._from_kernels({state: by_group(values, groups, kernel, options)
                                   for state, kernel, options in self._kernels()})

    def _null_result(self, states: pa.Table) -> np.ndarray:
        """Groups whose result is null because of ``ignore_nulls=False``."""
        if self.ignore_nulls:
            return np.zeros(states.num_rows, dtype=bool)
        return np.asarray(states.column("nulls").to_numpy(zero_copy_only=False)) > 0

    def _empty(self) -> Any:
        return None


class Count(_ColumnAggregate):
    """The number of rows (``on=None``), or of the values of ``on`` (with nulls
    unless ``ignore_nulls``); named ``count()`` / ``count(on)``."""

    kind = "count"

    def __init__(self, on: str | Callable[[Any], Any] | None = None, ignore_nulls: bool = False,
                 alias_name: str | None = None):
        super().__init__(on, ignore_nulls, alias_name)

    def _kernels(self) -> list[tuple[str, str, Any]]:
        every = self.on is None or not self.ignore_nulls
        return [("count", "count", _ALL if every else _VALID)]

    def _input(self, block: Block) -> pa.Array:
        if self.on is None:
            return pa.array(np.zeros(BlockAccessor.for_block(block).num_rows(), dtype=np.int8))
        return super()._input(block)

    def _merge(self, states: pa.Table, groups: Groups) -> dict[str, pa.Array]:
        return {"count": by_group(states.column("count"), groups, "sum")}

    def _finalize(self, states: pa.Table) -> pa.Array:
        return states.column("count").combine_chunks()

    def _empty(self) -> Any:
        return 0


class _Extreme(_ColumnAggregate):
    """``Sum``, ``Min``, ``Max``: one pyarrow grouped kernel, merged by itself."""

    kernel = ""

    def _kernels(self) -> list[tuple[str, str, Any]]:
        options = _SUM if self.kernel == "sum" else None
        return [("value", self.kernel, options), ("nulls", "count", _NULLS)]

    def _merge(self, states: pa.Table, groups: Groups) -> dict[str, pa.Array]:
        options = _SUM if self.kernel == "sum" else None
        return {"value": by_group(states.column("value"), groups, self.kernel, options),
                "nulls": by_group(states.column("nulls"), groups, "sum")}

    def _finalize(self, states: pa.Table) -> pa.Array:
        value = states.column("value").combine_chunks()
        return pc.if_else(pa.array(self._null_result(states)), pa.scalar(None, value.type), value)


class Sum(_Extreme):
    """The sum of ``on`` (null for a group without values); named ``sum(on)``."""

    kind = kernel = "sum"


class Min(_Extreme):
    """The smallest value of ``on`` (numbers, strings ...); named ``min(on)``."""

    kind = kernel = "min"


class Max(_Extreme):
    """The largest value of ``on`` (numbers, strings ...); named ``max(on)``."""

    kind = kernel = "max"


class Mean(_ColumnAggregate):
    """The mean of ``on``; named ``mean(on)``."""

    kind = "mean"

    def _kernels(self) -> list[tuple[str, str, Any]]:
        return [("sum", "sum", _SUM), ("count", "count", _VALID), ("nulls", "count", _NULLS)]

    def _input(self, block: Block) -> pa.Array:
        return pc.cast(super()._input(block), pa.float64())

    def _merge(self, states: pa.Table, groups: Groups) -> dict[str, pa.Array]:
        return {name: by_group(states.column(name), groups, "sum", _SUM if name == "sum" else None)
                for name in ("sum", "count", "nulls")}

    def _finalize(self, states: pa.Table) -> pa.Array:
        count = states.column("count").to_numpy().astype(np.float64)
        total = states.column("sum").to_numpy(zero_copy_only=False).astype(np.float64)
        null = (count == 0) | self._null_result(states)
        with np.errstate(invalid="ignore", divide="ignore"):
            return pa.array(np.where(null, np.nan, total / np.maximum(count, 1)), mask=null)


class Std(_ColumnAggregate):
    """The standard deviation of ``on``, dividing by ``count - ddof`` (NaN when
    that is not positive); named ``std(on)``. Partial results merge with Chan's
    parallel formula (count, mean, sum of squared deviations)."""

    kind = "std"

    def __init__(self, on: str | Callable[[Any], Any] | None = None, ddof: int = 1,
                 ignore_nulls: bool = True, alias_name: str | None = None):
        super().__init__(on, ignore_nulls, alias_name)
        self.ddof = ddof

    def _kernels(self) -> list[tuple[str, str, Any]]:
        return [("count", "count", _VALID), ("mean", "mean", None),
                ("variance", "variance", pc.VarianceOptions(ddof=0)),
                ("nulls", "count", _NULLS)]

    def _input(self, block: Block) -> pa.Array:
        return pc.cast(super()._input(block), pa.float64())

    def _from_kernels(self, raw: dict[str, Any]) -> dict[str, Any]:
        m2 = pc.multiply(pc.fill_null(raw["variance"], 0.0), pc.cast(raw["count"], pa.float64()))
        return {"count": raw["count"], "mean": raw["mean"], "m2": m2, "nulls": raw["nulls"]}

    def _merge(self, states: pa.Table, groups: Groups) -> dict[str, pa.Array]:
        ids, n = groups.ids(), groups.num_groups
        count = states.column("count").to_numpy().astype(np.float64)
        mean = np.nan_to_num(states.column("mean").to_numpy(zero_copy_only=False)
                             .astype(np.float64))
        m2 = states.column("m2").to_numpy(zero_copy_only=False).astype(np.float64)
        total = np.bincount(ids, weights=count, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            merged = np.bincount(ids, weights=count * mean, minlength=n) / total
        deviation = np.where(count > 0, mean - merged[ids], 0.0)
        merged_m2 = np.bincount(ids, weights=m2 + count * deviation ** 2, minlength=n)
        return {"count": pa.array(total.astype(np.int64)),
                "mean": pa.array(merged, mask=total == 0),
                "m2": pa.array(merged_m2),
                "nulls": by_group(states.column("nulls"), groups, "sum")}

    def _finalize(self, states: pa.Table) -> pa.Array:
        count = states.column("count").to_numpy().astype(np.float64)
        m2 = states.column("m2").to_numpy(zero_copy_only=False).astype(np.float64)
        null = (count == 0) | self._null_result(states)
        dof = count - self.ddof
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.where(dof > 0, np.sqrt(m2 / np.where(dof > 0, dof, 1)), np.nan)
        return pa.array(std, mask=null)
