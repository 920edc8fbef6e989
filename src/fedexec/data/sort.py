"""Ordering rows: sort keys, sorting blocks, sampling range boundaries and
cutting sorted blocks at them — shared by ``sort``, ``groupby`` and ``map_groups``.

A :class:`SortKey` orders rows by columns (tabular blocks) or by a function of
the row (plain rows; no function: the row itself), each column ascending or
descending. The order is pyarrow's, for both kinds of rows: values in their
natural order (reversed when descending), then NaN, then nulls (None), in either
direction. Every sort here is stable.

A distributed sort is a range-partitioned exchange (``shuffle.exchange``)::

    block i ──sample task: k evenly spaced keys──▶ driver: sorted samples
            ──▶ N-1 boundaries at their quantiles (equal ones merged)
    block i ──map task: sort, cut at the boundaries──▶ N sorted parts
    parts j of every block ──reduce task: concatenate, sort──▶ output block j

Partition ``j`` gets the keys in ``[boundary j-1, boundary j)`` (cuts are
``bisect_left``), so equal keys always meet in one partition; a reduce
concatenates its parts in input order before its stable sort, so the whole
sort is stable, and the output blocks come in key order.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .all_to_all import AllToAllContext
from .block import Block, BlockAccessor
from .bundle import RefBundle
from .shuffle import exchange, num_partitions, take_blocks
from .transforms import _tag

__all__ = ["SortKey", "boundaries", "range_partition", "sample_boundaries", "sort_fn"]

#: Samples taken per output partition, in all (spread over the input blocks).
SAMPLES_PER_PARTITION = 20


def _rank(value: Any) -> int:
    """0 for a value, 1 for NaN, 2 for None: NaN and nulls sort last, in that order."""
    if value is None:
        return 2
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return 1
    return 0


class _Ordered:
    """A key tuple comparable in a :class:`SortKey`'s order (see the module docstring)."""

    __slots__ = ("desc", "values")

    def __init__(self, values: tuple[Any, ...], desc: tuple[bool, ...]):
        self.values = values
        self.desc = desc

    def __lt__(self, other: _Ordered) -> bool:
        for a, b, desc in zip(self.values, other.values, self.desc):
            ra, rb = _rank(a), _rank(b)
            if ra != rb:
                return ra < rb
            if ra or a == b:
                continue
            return bool(b < a) if desc else bool(a < b)
        return False


class _KeyView(Sequence[_Ordered]):
    """The keys of a block in sorted order (``order``: its rows' sort order; None:
    sorted already) as a sequence, computed on access (for bisect)."""

    def __init__(self, key: SortKey, block: Block, order: np.ndarray | None):
        self.key, self.block, self.order = key, block, order
        self.n = BlockAccessor.for_block(block).num_rows()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        row = i if self.order is None else int(self.order[i])
        return self.key.ordered(self.key.row_key(self.block, row))


@dataclass(frozen=True)
class SortKey:
    """What rows are ordered (and grouped) by.

    Attributes:
        columns: the key columns of tabular rows (None for plain rows).
        fn: for plain rows, the key of a row (None: the row itself).
        descending: per key column (one entry for plain rows).
        what: the operation, for error messages (``"sort"``, ``"groupby"``).
    """

    columns: tuple[str, ...] | None
    fn: Callable[[Any], Any] | None
    descending: tuple[bool, ...]
    what: str = "sort"

    @staticmethod
    def of(key: Any, descending: bool | Sequence[bool] = False, what: str = "sort") -> SortKey:
        """The key for ``key``: a column name or a list of them (tabular rows), or
        None or a function of the row (plain rows).

        Raises:
            TypeError, ValueError: a malformed key or ``descending``.
        """
        if key is None or callable(key):
            columns, fn, width = None, key, 1
        else:
            names = [key] if isinstance(key, str) else list(key) \
                if isinstance(key, (list, tuple)) else None
            if not names or not all(isinstance(n, str) for n in names):
                raise TypeError(f"{what}() takes a column name, a list of column names, or "
                                f"(for plain rows) a function of the row; got {key!r}")
            columns, fn, width = tuple(names), None, len(names)
        if isinstance(descending, (bool, np.bool_)):
            desc = (bool(descending),) * width
        elif isinstance(descending, (list, tuple)) and len(descending) == width and all(
                isinstance(d, (bool, np.bool_)) for d in descending):
            desc = tuple(bool(d) for d in descending)
        else:
            raise ValueError(f"descending must be a bool or a list of {width} bools (one per "
                             f"key column), got {descending!r}")
        return SortKey(columns, fn, desc, what)

    @property
    def is_tabular(self) -> bool:
        return self.columns is not None

    def check(self, block: Block) -> None:
        """Raise if ``block``'s rows cannot be ordered by this key."""
        acc = BlockAccessor.for_block(block)
        if acc.num_rows():
            self.check_schema(acc.schema())

    def check_schema(self, schema: Any) -> None:
        """Raise if rows of ``schema`` (a ``pyarrow.Schema``, the type of plain rows,
        None: unknown) cannot be ordered by this key: checked in the driver from
        the blocks' metadata before any task starts, and again in each task."""
        if schema is None:
            return
        tabular = isinstance(schema, pa.Schema)
        if self.columns is None and tabular:
            raise TypeError(f"{self.what}() of tabular rows (dicts) takes column names, not "
                            f"{'a function' if self.fn else 'None'}")
        if self.columns is not None:
            if not tabular:
                itself = " or None (the row itself)" if self.what == "sort" else ""
                raise TypeError(f"{self.what}({list(self.columns)}) needs tabular rows (dicts); "
                                f"for plain rows pass a function of the row{itself}")
            check_columns(self.columns, schema, f"{self.what}(): key columns")

    # -- keys ---------------------------------------------------------------------------
    def ordered(self, values: tuple[Any, ...]) -> _Ordered:
        """A comparable form of a key tuple."""
        return _Ordered(values, self.descending)

    def row_key(self, block: Any, i: int) -> tuple[Any, ...]:
        """The key of row ``i`` as a tuple of Python values."""
        if self.columns is not None:
            return tuple(block.column(c)[i].as_py() for c in self.columns)
        row = block[i]
        return (self._call(row),)

    def _call(self, row: Any) -> Any:
        if self.fn is None:
            return row
        try:
            return self.fn(row)
        except Exception as e:
            _tag(e, self.what.capitalize())
            raise

    def sample(self, block: Block, k: int) -> list[tuple[Any, ...]]:
        """The keys of ``k`` evenly spaced rows of ``block``."""
        self.check(block)
        n = BlockAccessor.for_block(block).num_rows()
        if n == 0 or k <= 0:
            return []
        rows = np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))
        return [self.row_key(block, int(i)) for i in rows]

    # -- sorting and cutting ----------------------------------------------------------------
    def order(self, block: Any) -> np.ndarray:
        """The rows of ``block`` in this key's order (a stable sort's indices)."""
        self.check(block)
        if self.columns is not None:
            keys = [(c, "descending" if d else "ascending")
                    for c, d in zip(self.columns, self.descending)]
            indices = pc.sort_indices(block, sort_keys=keys)  # nulls at the end
            return np.asarray(indices.to_numpy(), dtype=np.int64)
        ordered = [self.ordered((self._call(row),)) for row in block]
        return np.array(sorted(range(len(block)), key=ordered.__getitem__), dtype=np.int64)

    def sort(self, block: Any) -> Block:
        """``block`` stably sorted by this key."""
        if BlockAccessor.for_block(block).num_rows() <= 1:
            self.check(block)
            return block
        return _take(block, self.order(block))

    def _cuts(self, block: Block, bounds: Sequence[tuple[Any, ...]],
              order: np.ndarray | None) -> list[int]:
        view = _KeyView(self, block, order)
        cuts, lo = [0], 0
        for b in bounds:
            lo = bisect.bisect_left(view, self.ordered(tuple(b)), lo)
            cuts.append(lo)
        return [*cuts, len(view)]

    def cut(self, block: Block, bounds: Sequence[tuple[Any, ...]]) -> list[Block]:
        """A block sorted by this key cut into ``len(bounds) + 1`` parts: part ``j``
        holds the keys in ``[bounds[j-1], bounds[j])``."""
        acc = BlockAccessor.for_block(block)
        return [acc.slice(a, b) for a, b in itertools.pairwise(self._cuts(block, bounds, None))]

    def sorted_parts(self, block: Block, bounds: Sequence[tuple[Any, ...]]) -> list[Block]:
        """``cut(sort(block), bounds)`` (the cuts are found before the rows move)."""
        order = self.order(block)
        cuts = self._cuts(block, bounds, order)
        acc = BlockAccessor.for_block(_take(block, order))
        return [acc.slice(a, b) for a, b in itertools.pairwise(cuts)]

    def group_starts(self, block: Any) -> np.ndarray:
        """The first row of each run of equal keys in a sorted block (NaN equals NaN,
        None equals None)."""
        n = BlockAccessor.for_block(block).num_rows()
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        change = np.zeros(n, dtype=bool)
        change[0] = True
        if self.columns is not None:
            for c in self.columns:
                change[1:] |= ~_adjacent_equal(block.column(c))
        else:
            keys = [self._call(row) for row in block]
            change[1:] = [not _same(a, b) for a, b in itertools.pairwise(keys)]
        return np.flatnonzero(change)


def check_columns(columns: Sequence[str], schema: Any, what: str) -> None:
    """``KeyError`` naming the ``columns`` missing from ``schema`` (a pyarrow schema)."""
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise KeyError(f"{what} {missing} are not in the dataset; it has {schema.names}")


def schema_of(blocks: Sequence[tuple[Any, Any]]) -> Any:
    """The schema in the metadata of the first of ``(ref, metadata)`` that has one."""
    return next((meta.schema for _, meta in blocks if meta.schema is not None), None)


def _take(block: Block, indices: np.ndarray) -> Block:
    if isinstance(block, list):
        return [block[i] for i in indices]
    return block.take(pa.array(indices, type=pa.int64()))


def _same(a: Any, b: Any) -> bool:
    ra, rb = _rank(a), _rank(b)
    return ra == rb and (ra != 0 or bool(a == b))


def _adjacent_equal(column: Any) -> np.ndarray:
    """``column[i] == column[i+1]`` for each i, nulls equal to nulls and NaN to NaN."""
    n = len(column)
    a, b = column.slice(0, n - 1), column.slice(1)
    equal = pc.or_(pc.fill_null(pc.equal(a, b), False),
                   pc.and_(pc.is_null(a), pc.is_null(b)))
    if pa.types.is_floating(column.type):
        equal = pc.or_(equal, pc.and_(pc.fill_null(pc.is_nan(a), False),
                                      pc.fill_null(pc.is_nan(b), False)))
    return np.asarray(equal.to_numpy(zero_copy_only=False), dtype=bool)


# --------------------------------------------------------------------------- boundaries
def boundaries(samples: list[tuple[Any, ...]], n: int, key: SortKey) -> list[tuple[Any, ...]]:
    """Up to ``n - 1`` increasing boundaries at the quantiles of ``samples``
    (equal ones merged, so there may be fewer)."""
    ordered = sorted(samples, key=key.ordered)
    if not ordered or n <= 1:
        return []
    out: list[tuple[Any, ...]] = []
    for i in range(1, n):
        b = ordered[len(ordered) * i // n]
        if not out or key.ordered(out[-1]) < key.ordered(b):
            out.append(b)
    return out


def _sample_task(key: SortKey, k: int, block: Block) -> list[tuple[Any, ...]]:
    return key.sample(block, k)


def sample_boundaries(ctx: AllToAllContext, key: SortKey, blocks: Sequence[tuple[Any, Any]],
                      n: int) -> list[tuple[Any, ...]]:
    """Boundaries for ``n`` range partitions of ``blocks`` (``(ref, metadata)``
    pairs), from keys sampled by one small task per block (only keys reach the
    driver)."""
    if n <= 1 or not blocks:
        return []
    k = max(1, -(-SAMPLES_PER_PARTITION * n // len(blocks)))
    refs = [ctx.submit(_sample_task, key, k, ref) for ref, _ in blocks]
    samples = [s for part in ctx.executor.get(refs) for s in part]
    return boundaries(samples, n, key)


# --------------------------------------------------------------------------- sort
@dataclass(frozen=True)
class _SortMap:
    key: SortKey
    bounds: tuple[tuple[Any, ...], ...]

    def __call__(self, block: Block, index: int) -> list[Block]:
        return self.key.sorted_parts(block, self.bounds)


@dataclass(frozen=True)
class _SortReduce:
    key: SortKey

    def __call__(self, index: int, parts: list[Block]) -> Block:
        return self.key.sort(BlockAccessor.concat(parts))


def range_partition(key: SortKey, bundles: list[RefBundle],
                    ctx: AllToAllContext) -> list[RefBundle]:
    """``bundles``' rows sorted by ``key``, as blocks in key order (see the module
    docstring); equal keys end in one block."""
    blocks = take_blocks(bundles)
    key.check_schema(schema_of(blocks))
    n = num_partitions(ctx, blocks)
    bounds = tuple(sample_boundaries(ctx, key, blocks, n))
    return exchange(ctx, blocks, _SortMap(key, bounds), _SortReduce(key), len(bounds) + 1)


def sort_fn(key: SortKey) -> Callable[[list[RefBundle], AllToAllContext], list[RefBundle]]:
    """The all-to-all function of ``Dataset.sort``."""
    return functools.partial(range_partition, key)
