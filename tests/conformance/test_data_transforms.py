"""fedexec.data on every backend: each transform and consumer gives exactly what
pandas gives on the same data, in the same order."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _data_support import data_executor_fixture

import fedexec
import fedexec.data as fd

data_executor = data_executor_fixture()


@pytest.fixture
def df():
    rng = np.random.default_rng(7)
    return pd.DataFrame({"a": np.arange(300), "b": rng.random(300),
                         "k": rng.integers(0, 5, 300)})


def pieces(df, cuts=(40, 41, 170)):
    """``df`` cut into DataFrames of uneven sizes (one block each)."""
    bounds = [0, *cuts, len(df)]
    return [df.iloc[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def assert_frame(ds, expected):
    pd.testing.assert_frame_equal(ds.to_pandas().reset_index(drop=True),
                                  expected.reset_index(drop=True), check_dtype=False)


# --------------------------------------------------------------------------- creating
def test_range_gives_the_ints_in_order():
    assert fd.range(1000, parallelism=7).take_all() == list(range(1000))
    assert fd.range(0).take_all() == []


def test_range_table_gives_id_rows_in_order():
    assert fd.range_table(100, parallelism=3).take_all() == [{"id": i} for i in range(100)]


def test_from_items_dicts_are_tabular_other_values_plain():
    assert fd.from_items([{"x": i, "s": str(i)} for i in range(10)],
                         parallelism=3).take_all() == [{"x": i, "s": str(i)} for i in range(10)]
    items = [1, "two", (3,), {4}]
    assert fd.from_items(items, parallelism=2).take_all() == items


def test_from_pandas_numpy_arrow_one_block_per_piece(df):
    ds = fd.from_pandas(pieces(df))
    assert ds.num_blocks() == 4
    assert_frame(ds, df)
    arrays = [np.arange(10), np.arange(10, 25)]
    ds = fd.from_numpy(arrays)
    assert ds.num_blocks() == 2
    assert [r["data"] for r in ds.take_all()] == list(range(25))
    table = pa.table({"x": [1, 2, 3]})
    assert fd.from_arrow([table, table]).take_all() == [{"x": v} for v in [1, 2, 3] * 2]


def test_from_numpy_of_a_3d_array_gives_ndarray_cells():
    arr = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    rows = fd.from_numpy(arr).take_all()
    assert len(rows) == 2 and rows[1]["data"].shape == (3, 4)
    np.testing.assert_array_equal(rows[1]["data"], arr[1])
    batch = fd.from_numpy(arr).take_batch(2)
    np.testing.assert_array_equal(batch["data"], arr)


def test_from_arrow_refs_keeps_tables_in_the_store(ex):
    refs = [ex.put(pa.table({"v": [i, i + 1]})) for i in range(0, 6, 2)]
    ds = fd.from_arrow_refs(refs)
    assert ds.count() == 6
    assert [r["v"] for r in ds.take_all()] == list(range(6))


# --------------------------------------------------------------------------- per row
def double_a(row):
    return {"a": row["a"], "c": row["a"] * 2 + row["b"]}


def test_map_filter_flat_map_match_pandas(df):
    ds = fd.from_pandas(pieces(df))
    out = ds.map(double_a).filter(lambda r: r["a"] % 3 == 0)
    expected = pd.DataFrame({"a": df.a, "c": df.a * 2 + df.b})
    assert_frame(out, expected[expected.a % 3 == 0])
    flat = ds.flat_map(lambda r: [{"a": r["a"]}] * int(r["k"]))
    assert_frame(flat, df.loc[df.index.repeat(df.k), ["a"]])


def test_plain_rows_map_to_plain_rows_or_dicts():
    ds = fd.range(50, parallelism=4)
    assert ds.map(lambda x: x * x).take_all() == [x * x for x in range(50)]
    assert ds.map(lambda x: {"data": x ** 2}).take(3) == [{"data": 0}, {"data": 1},
                                                          {"data": 4}]
    assert ds.filter(lambda x: x % 7 == 0).take_all() == list(range(0, 50, 7))
    assert ds.flat_map(lambda x: [x, x]).take(4) == [0, 0, 1, 1]


def test_a_filter_that_drops_everything_gives_an_empty_dataset(df):
    ds = fd.from_pandas(pieces(df)).filter(lambda r: False)
    assert ds.take_all() == [] and ds.count() == 0
    assert ds.to_pandas().empty


# --------------------------------------------------------------------------- batches
@pytest.mark.parametrize("fmt", ["default", "numpy", "pandas", "pyarrow"])
def test_map_batches_in_every_format_matches_pandas(df, fmt):
    def scale(batch):
        if fmt == "pyarrow":
            import pyarrow.compute as pc
            return batch.set_column(1, "b", pc.multiply(batch["b"], 10))
        batch["b"] = batch["b"] * 10
        return batch

    out = fd.from_pandas(pieces(df)).map_batches(scale, batch_size=16, batch_format=fmt)
    assert_frame(out, df.assign(b=df.b * 10))


def sizes(batch):
    n = len(batch["a"])
    return {"a": batch["a"], "n": np.full(n, n)}


def test_map_batches_batches_have_batch_size_rows_across_small_blocks(df):
    ds = fd.from_pandas([df.iloc[i:i + 10] for i in range(0, 300, 10)])  # 30 blocks of 10
    out = ds.map_batches(sizes, batch_size=64).to_pandas()
    assert out.a.tolist() == df.a.tolist()
    # tasks gather blocks up to >= 64 rows; only a task's last batch may be short
    assert out.n.max() == 64 and (out.n == 64).sum() >= 256
    whole = ds.map_batches(sizes, batch_size=None).to_pandas()
    assert set(whole.n) == {10}


def test_map_batches_on_plain_rows_sees_item_and_returns_plain_rows():
    out = fd.range(20, parallelism=3).map_batches(lambda b: {"item": b["item"] + 100},
                                                  batch_size=6)
    assert out.take_all() == list(range(100, 120))
    seen = fd.range(6).map_batches(lambda b: b.assign(sq=b["item"] ** 2),
                                   batch_format="pandas")
    assert seen.take_all() == [{"item": i, "sq": i * i} for i in range(6)]


def split_in_two(batch):
    half = len(batch["a"]) // 2
    yield {"a": batch["a"][:half]}
    yield {"a": batch["a"][half:]}


def test_map_batches_generator_function_yields_several_batches(df):
    out = fd.from_pandas(pieces(df)).map_batches(split_in_two, batch_size=32)
    assert out.to_pandas().a.tolist() == df.a.tolist()


def test_map_batches_fn_args_and_kwargs(df):
    def affine(batch, m, *, c):
        return {"a": batch["a"] * m + c}

    out = fd.from_pandas(df).map_batches(affine, fn_args=(3,), fn_kwargs={"c": 1})
    assert out.to_pandas().a.tolist() == (df.a * 3 + 1).tolist()


def test_map_batches_rejects_bad_arguments():
    ds = fd.range(3)
    with pytest.raises(ValueError, match="batch_format"):
        ds.map_batches(lambda b: b, batch_format="dict")
    with pytest.raises(ValueError, match="batch_size"):
        ds.map_batches(lambda b: b, batch_size=0)
    with pytest.raises(ValueError, match="concurrency"):
        ds.map_batches(lambda b: b, concurrency=(1, 2))
    with pytest.raises(ValueError, match="constructor"):
        ds.map_batches(lambda b: b, fn_constructor_args=(1,))


# --------------------------------------------------------------------------- columns
def test_column_operations_match_pandas(df):
    ds = fd.from_pandas(pieces(df))
    assert_frame(ds.add_column("d", lambda b: b["a"] + b["k"]), df.assign(d=df.a + df.k))
    assert_frame(ds.add_column("b", lambda b: b["b"] * 0), df.assign(b=0.0))
    assert_frame(ds.drop_columns(["b"]), df.drop(columns=["b"]))
    assert_frame(ds.select_columns(["k", "a"]), df[["k", "a"]])
    assert_frame(ds.rename_columns({"a": "x", "k": "y"}), df.rename(columns={"a": "x", "k": "y"}))


def test_a_missing_column_fails_naming_it_and_the_operator(df):
    with pytest.raises(KeyError, match=r"\['nope'\]") as info:
        fd.from_pandas(df).select_columns(["nope"]).take_all()
    assert isinstance(info.value, fedexec.TaskError)
    assert "SelectColumns" in str(info.value)


def test_column_operations_on_plain_rows_say_to_map_to_dicts_first():
    with pytest.raises(ValueError, match="tabular rows"):
        fd.range(5).drop_columns(["x"]).take_all()


# --------------------------------------------------------------------------- shape
def test_limit_union_zip_match_pandas(df):
    ds = fd.from_pandas(pieces(df))
    assert_frame(ds.limit(45), df.iloc[:45])
    assert ds.limit(0).take_all() == []
    other = fd.from_pandas(pieces(df.assign(a=df.a + 1000), cuts=(100, 250)))
    assert_frame(ds.union(other, ds), pd.concat([df, df.assign(a=df.a + 1000), df]))
    right = fd.from_pandas(pieces(df[["a"]].rename(columns={"a": "z"}) * 2, cuts=(7, 200)))
    assert_frame(ds.zip(right), df.assign(z=df.a * 2))
    dup = fd.from_pandas(pieces(df[["a"]], cuts=(150,)))
    assert_frame(ds.select_columns(["a"]).zip(dup), pd.DataFrame({"a": df.a, "a_1": df.a}))


def test_zip_of_plain_rows_gives_pairs():
    assert fd.range(5, parallelism=2).zip(fd.range(5, parallelism=3).map(
        lambda x: -x)).take_all() == [(i, -i) for i in range(5)]


def test_take_and_limit_of_a_zip_match_pandas(df):
    # a limit reaches both sides of a zip, which stop at different rows: whole
    # in-memory blocks on the left, map tasks cut at the limit on the right
    ds = fd.from_pandas(pieces(df))
    right = fd.from_pandas(pieces(df[["a"]], cuts=(7, 200))).map_batches(
        lambda b: {"z": b["a"] * 2})
    expected = df.assign(z=df.a * 2)
    for n in (1, 5, 41, 45, 300, 400):
        assert_frame(ds.zip(right).limit(n), expected.iloc[:n])
        assert_frame(right.zip(ds).limit(n), expected[["z", "a", "b", "k"]].iloc[:n])
    assert ds.zip(right).take(2) == expected.iloc[:2].to_dict("records")
    assert fd.range(100, parallelism=4).zip(fd.range(100, parallelism=2).map(
        lambda x: -x)).take(3) == [(0, 0), (1, -1), (2, -2)]
    with pytest.raises(ValueError, match="same number of rows"):
        fd.range(5).zip(fd.range(6)).take(10)


def test_take_of_a_transformed_zip_stops_without_a_row_count_error():
    # the limit is satisfied while the zip's inputs are still streaming: they are
    # halted part way, which is no mismatch of row counts
    left = fd.range_table(200, parallelism=20)
    right = fd.from_pandas([pd.DataFrame({"v": np.arange(i, i + 25)}) for i in range(0, 200, 25)])
    ds = left.zip(right).map_batches(lambda b: {"s": b["id"] + b["v"]}, batch_size=10)
    for n in (1, 5, 24, 26, 60):
        assert ds.take(n) == [{"s": 2 * i} for i in range(n)]
        assert left.zip(right).filter(lambda r: r["id"] % 2 == 0).take(n) == \
            [{"id": i, "v": i} for i in range(0, 2 * n, 2)]


def test_zip_of_different_lengths_fails():
    with pytest.raises(ValueError, match="same number of rows"):
        fd.range(5).zip(fd.range(6)).take_all()


# --------------------------------------------------------------------------- consuming
def test_iter_batches_sizes_formats_and_drop_last(df):
    ds = fd.from_pandas(pieces(df))
    batches = list(ds.iter_batches(batch_size=64))
    assert [len(b["a"]) for b in batches] == [64, 64, 64, 64, 44]
    assert np.concatenate([b["a"] for b in batches]).tolist() == df.a.tolist()
    assert [len(b) for b in ds.iter_batches(batch_size=64, drop_last=True,
                                            batch_format="pandas")] == [64] * 4
    tables = list(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
    assert [t.num_rows for t in tables] == [40, 1, 129, 130]
    prefetched = list(ds.iter_batches(batch_size=100, prefetch_batches=3))
    assert [len(b["a"]) for b in prefetched] == [100, 100, 100]


def test_iter_rows_take_take_batch_show(df, capsys):
    ds = fd.from_pandas(pieces(df))
    assert [r["a"] for r in ds.iter_rows()] == df.a.tolist()
    assert ds.take(3) == df.iloc[:3].to_dict("records")
    batch = ds.take_batch(5, batch_format="pandas")
    pd.testing.assert_frame_equal(batch, df.iloc[:5].reset_index(drop=True))
    fd.range(3).show()
    assert capsys.readouterr().out == "0\n1\n2\n"
    with pytest.raises(ValueError, match="more than"):
        ds.take_all(limit=10)
    with pytest.raises(ValueError, match="more than"):
        ds.to_pandas(limit=10)


def test_count_schema_columns_blocks_size(df):
    ds = fd.from_pandas(pieces(df)).map(double_a)
    assert ds.count() == 300
    schema = ds.schema()
    assert schema.names == ["a", "c"]
    assert [str(t) for t in schema.types] == ["int64", "double"]
    assert ds.columns() == ["a", "c"]
    assert ds.num_blocks() == 4
    assert ds.size_bytes() == 300 * 16
    assert fd.range(5).schema() is int and fd.range(5).columns() is None


def test_to_arrow_refs_and_to_numpy_refs(ex, df):
    ds = fd.from_pandas(pieces(df))
    tables = ex.get(ds.to_arrow_refs())
    assert pa.concat_tables(tables).to_pandas().equals(df.reset_index(drop=True))
    arrays = ex.get(ds.to_numpy_refs(column="a"))
    assert np.concatenate(arrays).tolist() == df.a.tolist()
    dicts = ex.get(fd.range(4, parallelism=2).to_numpy_refs())
    assert np.concatenate([d["item"] for d in dicts]).tolist() == [0, 1, 2, 3]
    plain = ex.get(fd.range(4, parallelism=2).to_arrow_refs())
    assert pa.concat_tables(plain).column("item").to_pylist() == [0, 1, 2, 3]


def test_materialize_keeps_blocks_and_stats(df):
    ds = fd.from_pandas(pieces(df)).map(double_a)
    assert ds.stats() == ""
    mat = ds.materialize()
    assert isinstance(mat, fd.MaterializedDataset)
    assert mat.num_blocks() == 4 and mat.count() == 300
    assert "Map(double_a)" in mat.stats() and "Output rows: 300" in mat.stats()
    assert_frame(mat, pd.DataFrame({"a": df.a, "c": df.a * 2 + df.b}))
    assert mat.map(lambda r: {"a": r["a"]}).count() == 300
    assert "MaterializedDataset(num_blocks=4, num_rows=300" in repr(mat)
