"""The pieces of fedexec.data's exchange that run inside tasks, without a runtime:
the sort order (the same as pyarrow's for both kinds of rows), range boundaries
and cuts, compact task outputs, partial aggregation before the shuffle, and the
merge of partial standard deviations."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedexec.data.aggregate import Count, Groups, Std, Sum
from fedexec.data.block import BlockAccessor, compact
from fedexec.data.grouped import _AggPartial, _AggReduce, _CutPartial, _partial_task
from fedexec.data.shuffle import _map_task, _ShuffleMap, _Slices
from fedexec.data.sort import SortKey, boundaries

floats = st.one_of(st.none(), st.just(float("nan")), st.floats(-1e6, 1e6, allow_nan=False))


def pickled_bytes(value):
    buffers = []
    data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return len(data) + sum(b.raw().nbytes for b in buffers)


# --------------------------------------------------------------------------- order
@settings(max_examples=60, deadline=None)
@given(xs=st.lists(floats, max_size=40), ks=st.lists(st.integers(0, 3), min_size=40,
                                                         max_size=40),
       desc=st.lists(st.booleans(), min_size=2, max_size=2))
def test_tabular_and_python_orders_agree_with_pyarrow(xs, ks, desc):
    table = pa.table({"k": pa.array(ks[:len(xs)], pa.int64()),
                      "x": pa.array(xs, pa.float64(), from_pandas=False),
                      "row": pa.array(range(len(xs)), pa.int64())})
    key = SortKey.of(["k", "x"], desc)
    by_arrow = key.sort(table).column("row").to_pylist()
    by_python = sorted(range(len(xs)), key=lambda i: key.ordered(key.row_key(table, i)))
    assert by_arrow == by_python


@settings(max_examples=40, deadline=None)
@given(xs=st.lists(floats, max_size=30), descending=st.booleans())
def test_plain_rows_sort_as_a_column_would(xs, descending):
    key = SortKey.of(None, descending)
    column = SortKey.of("x", descending).sort(pa.table({"x": pa.array(xs, pa.float64(),
                                                                       from_pandas=False)}))
    assert repr(key.sort(list(xs))) == repr(column.column("x").to_pylist())


def test_cuts_send_equal_keys_to_one_part_and_respect_the_boundaries():
    key = SortKey.of("k")
    table = key.sort(pa.table({"k": [5, 1, 3, 3, 3, 9, 7, 1, None, 3]}))
    bounds = boundaries([(3,), (1,), (7,), (3,), (None,)], 3, key)
    assert bounds == [(3,), (7,)]
    parts = [p.column("k").to_pylist() for p in key.cut(table, bounds)]
    assert parts == [[1, 1], [3, 3, 3, 3, 5], [7, 9, None]]


def test_descending_boundaries_cut_in_descending_order():
    key = SortKey.of(["k"], descending=True)
    table = key.sort(pa.table({"k": list(range(10))}))
    parts = key.cut(table, boundaries([(i,) for i in range(10)], 2, key))
    assert [p.column("k").to_pylist() for p in parts] == [[9, 8, 7, 6, 5], [4, 3, 2, 1, 0]]


# --------------------------------------------------------------------------- task outputs
def test_compact_copies_slices_and_leaves_whole_tables_alone():
    table = pa.table({"a": np.arange(100_000), "s": [str(i) for i in range(100_000)]})
    assert compact(table) is table
    piece = table.slice(500, 100)
    assert pickled_bytes(piece) > 100 * pickled_bytes(compact(piece))
    assert compact(piece).equals(piece)
    assert compact([1, 2]) == [1, 2]
    assert compact(table.slice(5, 0)).num_rows == 0


@pytest.mark.parametrize("map_fn", [_Slices((0, 10, 5000, 9000, 10_000)), _ShuffleMap(1, 4)])
def test_exchange_map_parts_pickle_only_their_rows(map_fn):
    block = pa.table({"a": np.arange(10_000), "b": np.arange(10_000) * 0.5})
    counts, *parts = _map_task(map_fn, 0, 4, block)
    assert sum(counts) == 10_000 and counts == [p.num_rows for p in parts]
    for part in parts:
        assert pickled_bytes(part) <= 1.25 * part.nbytes + 4096


# --------------------------------------------------------------------------- aggregation
def test_partial_aggregation_happens_before_the_shuffle():
    rng = np.random.default_rng(0)
    block = pa.table({"k": rng.integers(0, 5, 10_000), "v": rng.random(10_000)})
    partial = _AggPartial(SortKey.of("k", what="groupby"), (Count(), Sum("v")), ("k",))
    (groups, size, samples), table = _partial_task(partial, 3, block)
    assert groups == table.num_rows == 5 and size == table.nbytes and len(samples) == 3
    low, high = _CutPartial(("k",), ((2,),))(table, 0)
    assert low.column("k").to_pylist() == [0, 1] and high.column("k").to_pylist() == [2, 3, 4]
    reduced = _AggReduce((Count(), Sum("v")), ("k",), False)(0, [high, high])
    counts = np.bincount(block.column("k").to_numpy(), minlength=5)
    assert reduced.column("count()").to_pylist() == [2 * int(c) for c in counts[2:]]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 30), min_size=1, max_size=6), seed=st.integers(0, 99))
def test_std_merged_from_pieces_equals_numpy(sizes, seed):
    values = np.random.default_rng(seed).normal(1e6, 3.0, sum(sizes))
    std = Std(on="v")
    states = []
    start = 0
    for n in sizes:
        piece = pa.table({"v": values[start:start + n]})
        start += n
        groups = Groups(piece, np.zeros(1 if n else 0, dtype=np.int64), None)
        states.append(pa.table(std._partial(groups)))
    merged_in = pa.concat_tables(states)
    total = merged_in.num_rows
    groups = Groups(merged_in, np.zeros(1 if total else 0, dtype=np.int64), None)
    result = std._finalize(pa.table(std._merge(merged_in, groups))).to_pylist()
    if len(values) == 0:
        assert result == []
    elif len(values) == 1:
        assert np.isnan(result[0])
    else:
        assert result[0] == pytest.approx(np.std(values, ddof=1), rel=1e-7)


def test_groups_of_plain_rows_by_a_function():
    key = SortKey.of(lambda x: x % 3, what="groupby")
    block = key.sort(list(range(10)))
    assert block == [0, 3, 6, 9, 1, 4, 7, 2, 5, 8]
    assert key.group_starts(block).tolist() == [0, 4, 7]
    acc = BlockAccessor.for_block(block)
    assert acc.num_rows() == 10


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.integers(-10**6, 10**6)), min_size=1,
                       max_size=40),
       cuts=st.sets(st.integers(1, 39), max_size=6), as_float=st.booleans())
def test_reductions_over_contiguous_groups_match_pyarrows_hash_aggregation(values, cuts,
                                                                           as_float):
    from fedexec.data.aggregate import _ALL, _NULLS, _SUM, _VALID, by_group

    array = pa.array(values, pa.float64() if as_float else pa.int32())
    starts = np.array(sorted({0, *(c for c in cuts if c < len(values))}), dtype=np.int64)
    groups = Groups(pa.table({"v": array}), starts, None)
    ids = groups.ids()
    for fn, options in [("sum", _SUM), ("min", None), ("max", None), ("count", _VALID),
                        ("count", _NULLS), ("count", _ALL)]:
        expected = pa.table({"g": ids, "v": array}).group_by("g", use_threads=False).aggregate(
            [("v", fn, options)]).sort_by("g").column(f"v_{fn}").to_pylist()
        assert by_group(array, groups, fn, options).to_pylist() == expected, (fn, options)
