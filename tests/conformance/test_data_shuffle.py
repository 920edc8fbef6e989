"""fedexec.data's all-to-all operators on every backend: random_shuffle,
randomize_block_order, sort, repartition — the rows they give (against pandas),
their order, seeds, errors naming the operator, and that blocks move between
tasks through the store without passing through the driver."""

from __future__ import annotations

import itertools
import pickle
import threading

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
    rng = np.random.default_rng(11)
    n = 400
    b = rng.random(n)
    b[rng.choice(n, 25, replace=False)] = np.nan
    return pd.DataFrame({"row": np.arange(n), "k": rng.integers(0, 6, n), "b": b,
                         "s": rng.choice(["pear", "fig", "apple", "kiwi"], n)})


def pieces(df, n=4):
    bounds = np.linspace(0, len(df), n + 1).astype(int)
    return [df.iloc[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def as_frame(ds):
    return ds.to_pandas().reset_index(drop=True)


def block_sizes(ds):
    return [len(batch["row"] if "row" in batch else batch["item"])
            for batch in ds.iter_batches(batch_size=None)]


# --------------------------------------------------------------------------- random_shuffle
def test_random_shuffle_is_a_permutation_that_changes_the_order(df):
    out = as_frame(fd.from_pandas(pieces(df)).random_shuffle(seed=3))
    assert len(out) == len(df)
    assert list(out["row"]) != list(df["row"])
    pd.testing.assert_frame_equal(out.sort_values("row").reset_index(drop=True), df)


def test_random_shuffle_of_plain_rows_spreads_rows_across_blocks():
    ds = fd.range(200, parallelism=4).random_shuffle(seed=5)
    rows = ds.take_all()
    assert sorted(rows) == list(range(200))
    first_block = ds.iter_batches(batch_size=None).__next__()["item"]
    assert len({int(v) // 50 for v in first_block}) > 1  # rows from several input blocks


def test_a_seed_makes_the_shuffle_reproducible_across_runs_and_backends(backend_name):
    ds = fd.range_table(300, parallelism=5).random_shuffle(seed=42)
    first = [r["id"] for r in ds.take_all()]
    assert [r["id"] for r in ds.take_all()] == first
    other = [r["id"] for r in fd.range_table(300, parallelism=5).random_shuffle(seed=43)
             .take_all()]
    assert other != first and sorted(other) == sorted(first)
    with fedexec.Executor("local", num_cpus=2) as local:
        ctx = fd.DataContext.get_current()
        here, ctx.executor = ctx.executor, local
        try:
            on_local = [r["id"] for r in ds.take_all()]
        finally:
            ctx.executor = here
    assert on_local == first, f"{backend_name} and local shuffle differently with one seed"


def test_without_a_seed_each_run_shuffles_differently():
    ds = fd.range(300, parallelism=3).random_shuffle()
    assert ds.take_all() != ds.take_all()


def test_randomize_block_order_moves_whole_blocks():
    ds = fd.range(100, parallelism=10)
    out = ds.randomize_block_order(seed=7).take_all()
    blocks = [out[i:i + 10] for i in range(0, 100, 10)]
    assert all(b == list(range(b[0], b[0] + 10)) for b in blocks)
    assert [b[0] for b in blocks] != list(range(0, 100, 10))
    assert sorted(out) == list(range(100))
    assert ds.randomize_block_order(seed=7).take_all() == out


def test_bad_seeds_are_refused():
    with pytest.raises(ValueError, match="seed"):
        fd.range(10).random_shuffle(seed=-1)
    with pytest.raises(ValueError, match="seed"):
        fd.range(10).randomize_block_order(seed="x")


# --------------------------------------------------------------------------- sort
@pytest.mark.parametrize("descending", [False, True])
def test_sort_by_one_column_matches_pandas_and_is_stable(df, descending):
    ds = fd.from_pandas(pieces(df)).random_shuffle(seed=1).materialize()
    shuffled = as_frame(ds)
    out = as_frame(ds.sort("k", descending=descending))
    expected = shuffled.sort_values("k", ascending=not descending, kind="stable")
    pd.testing.assert_frame_equal(out, expected.reset_index(drop=True))


def test_sort_by_several_columns_with_mixed_directions(df):
    ds = fd.from_pandas(pieces(df))
    out = as_frame(ds.sort(["s", "k", "b"], descending=[False, True, False]))
    expected = df.sort_values(["s", "k", "b"], ascending=[True, False, True], kind="stable",
                              na_position="last")
    pd.testing.assert_frame_equal(out, expected.reset_index(drop=True))


@pytest.mark.parametrize("descending", [False, True])
def test_sort_puts_nan_and_null_last_in_either_direction(descending):
    values = [3.0, None, np.nan, 1.0, 2.0, None, np.nan, 5.0]
    ds = fd.from_arrow([pa.table({"x": pa.array(values[:4], from_pandas=False)}),
                        pa.table({"x": pa.array(values[4:], from_pandas=False)})])
    out = [r["x"] for r in ds.sort("x", descending=descending).take_all()]
    numbers = sorted([v for v in values if v is not None and v == v], reverse=descending)
    assert out[:4] == numbers
    assert all(np.isnan(v) for v in out[4:6]) and out[6:] == [None, None]


def test_sort_gives_several_blocks_in_key_order(df):
    ds = fd.from_pandas(pieces(df, 6)).sort("row", descending=True)
    batches = list(ds.iter_batches(batch_size=None, batch_format="pandas"))
    assert len(batches) > 1
    rows = pd.concat(batches)["row"].tolist()
    assert rows == sorted(df["row"], reverse=True)


def test_sort_of_plain_rows_by_value_and_by_a_function():
    values = [5, 3, 9, 1, 7, 3, 8, 0, 2, 6, 4, 9]
    ds = fd.from_items(values, parallelism=3)
    assert ds.sort().take_all() == sorted(values)
    assert ds.sort(descending=True).take_all() == sorted(values, reverse=True)
    words = ["pear", "fig", "apple", "kiwi", "banana", "date"]
    assert fd.from_items(words, parallelism=2).sort(len).take_all() == sorted(words, key=len)


def test_sort_then_take_and_limit():
    ds = fd.range(1000, parallelism=8).random_shuffle(seed=9).sort()
    assert ds.take(5) == [0, 1, 2, 3, 4]
    assert ds.limit(3).take_all() == [0, 1, 2]


def test_sort_of_an_empty_dataset():
    assert fd.range(10).filter(lambda x: x > 100).sort().take_all() == []


def test_sort_by_a_missing_column_says_which(df):
    with pytest.raises(KeyError, match="nope"):
        fd.from_pandas(pieces(df)).sort("nope").take_all()
    with pytest.raises(ValueError, match="descending"):
        fd.from_pandas(df).sort(["k", "b"], descending=[True])
    with pytest.raises(TypeError, match="column names"):
        fd.from_pandas(df).sort().take_all()


def bad_key(x):
    if x == 7:
        raise ValueError("cannot order 7")
    return x


def test_an_error_in_a_sort_key_function_names_the_operator():
    with pytest.raises(ValueError, match="cannot order 7") as info:
        fd.range(20, parallelism=2).sort(bad_key).take_all()
    assert isinstance(info.value, fedexec.TaskError)
    assert "in operator Sort" in str(info.value)


# --------------------------------------------------------------------------- repartition
def test_repartition_keeps_the_order_with_nearly_equal_blocks():
    ds = fd.range(103, parallelism=4).repartition(7)
    assert ds.num_blocks() == 7
    assert ds.take_all() == list(range(103))
    sizes = block_sizes(ds)
    assert sum(sizes) == 103 and max(sizes) - min(sizes) <= 1


def test_repartition_into_fewer_blocks_and_into_one(df):
    ds = fd.from_pandas(pieces(df, 8))
    assert block_sizes(ds.repartition(3)) == [133, 133, 134]
    pd.testing.assert_frame_equal(as_frame(ds.repartition(3)), df)
    assert ds.repartition(1).num_blocks() == 1
    pd.testing.assert_frame_equal(as_frame(ds.repartition(1)), df)


def test_repartition_with_shuffle_moves_rows_between_blocks():
    ds = fd.range(120, parallelism=2).repartition(4, shuffle=True)
    rows = ds.take_all()
    assert sorted(rows) == list(range(120)) and rows != list(range(120))
    assert ds.num_blocks() == 4


def test_repartition_refuses_zero_blocks():
    with pytest.raises(ValueError, match="num_blocks"):
        fd.range(10).repartition(0)


# --------------------------------------------------------------------------- the driver
class DriverGets:
    """Records what ``ObjectRef.result`` hands to the driver's threads (the test's
    and the dataset executor's), not to tasks (the local backend runs those on
    threads of this process)."""

    def __init__(self, monkeypatch):
        self.values = []
        original = fedexec.ObjectRef.result

        def result(ref, timeout=None):
            value = original(ref, timeout)
            name = threading.current_thread().name
            if name == "MainThread" or name.startswith("fedexec-data"):
                self.values.append(value)
            return value

        monkeypatch.setattr(fedexec.ObjectRef, "result", result)

    def tables(self):
        return [v for v in self.values if isinstance(v, pa.Table)]

    def bytes(self):
        return sum(len(pickle.dumps(v)) for v in self.values)


def test_no_block_passes_through_the_driver(monkeypatch):
    n = 40_000
    ds = fd.range_table(n, parallelism=8).map_batches(
        lambda b: {"id": b["id"], "k": b["id"] % 13, "x": b["id"] * 0.5,
                   "pad": np.full(len(b["id"]), "p" * 40)})
    data_bytes = n * (8 + 8 + 8 + 44)
    gets = DriverGets(monkeypatch)
    out = ds.random_shuffle(seed=1).sort(["k", "id"]).repartition(5).materialize()
    grouped = ds.groupby("k").mean("x").materialize()
    assert gets.values, "the recorder saw nothing: it does not observe the driver"
    assert gets.tables() == []
    assert gets.bytes() < data_bytes / 20, gets.bytes()
    monkeypatch.undo()
    assert out.count() == n and out.num_blocks() == 5
    first = out.take(3)
    assert [(r["k"], r["id"]) for r in first] == [(0, 0), (0, 13), (0, 26)]
    assert grouped.count() == 13


# --------------------------------------------------------------------------- block memory
def identity(batch):
    return batch


def test_blocks_out_of_tasks_hold_only_their_own_rows(ex):
    """A slice of a table pickles the whole buffers it points into: blocks cut by
    tasks (batches, exchange parts, split outputs) must be copied out first."""
    sources = {
        "map_batches": fd.range_table(50_000, parallelism=1).map_batches(
            identity, batch_format="pyarrow", batch_size=1000),
        "repartition": fd.range_table(50_000, parallelism=2).repartition(9),
        "sort": fd.range_table(50_000, parallelism=3).sort("id", descending=True),
        "random_shuffle": fd.range_table(50_000, parallelism=3).random_shuffle(seed=0),
    }
    for name, ds in sources.items():
        for ref in ds.to_arrow_refs():
            table = ex.get(ref)
            held = sum(chunk.get_total_buffer_size() for column in table.columns
                       for chunk in column.chunks)
            assert held <= 2 * table.nbytes + 4096, (name, table.num_rows, table.nbytes, held)
