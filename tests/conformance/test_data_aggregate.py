"""fedexec.data's aggregations on every backend: groupby (count, sum, min, max,
mean, std, aggregate, map_groups) and the dataset-wide ones (aggregate, sum, min,
max, mean, std, unique) give exactly what pandas gives, named as Ray names them,
groups sorted by key; plain rows grouped by a function; user-defined
AggregateFn; errors naming the operator."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _data_support import data_executor_fixture

import fedexec
import fedexec.data as fd
from fedexec.data.aggregate import AggregateFn, Count, Max, Mean, Min, Std, Sum

data_executor = data_executor_fixture()


@pytest.fixture
def df():
    rng = np.random.default_rng(5)
    n = 500
    x = rng.normal(100.0, 15.0, n)
    x[rng.choice(n, 40, replace=False)] = np.nan
    return pd.DataFrame({"k": rng.integers(0, 7, n), "s": rng.choice(["b", "a", "c"], n),
                         "i": rng.integers(-1000, 1000, n), "x": x,
                         "w": rng.choice(["kiwi", "fig", "pear", "apple", "plum"], n)})


def pieces(df, n=5):
    bounds = np.linspace(0, len(df), n + 1).astype(int)
    return [df.iloc[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def ds_of(df, n=5):
    return fd.from_pandas(pieces(df, n))


def frame(ds):
    return ds.to_pandas().reset_index(drop=True)


def assert_matches(out, expected):
    pd.testing.assert_frame_equal(out, expected.reset_index(drop=True), check_dtype=False,
                                  rtol=1e-9)


# --------------------------------------------------------------------------- groupby
def test_groupby_count_sum_min_max_mean_std_match_pandas(df):
    g = ds_of(df).groupby("k")
    pg = df.groupby("k")
    assert_matches(frame(g.count()), pg.size().rename("count()").reset_index())
    for name, agg in [("sum", "sum"), ("min", "min"), ("max", "max"), ("mean", "mean"),
                      ("std", "std")]:
        out = frame(getattr(g, name)(["i", "x"]))
        expected = pg[["i", "x"]].agg(agg).rename(columns={"i": f"{name}(i)", "x": f"{name}(x)"})
        assert_matches(out, expected.reset_index())


def test_groupby_output_is_sorted_by_key_with_ray_column_names(df):
    out = ds_of(df).groupby("k").aggregate(Count(), Sum("i"), Mean("x"))
    assert out.columns() == ["k", "count()", "sum(i)", "mean(x)"]
    rows = out.take_all()
    assert [r["k"] for r in rows] == sorted(df["k"].unique())


def test_groupby_several_keys_matches_pandas(df):
    out = frame(ds_of(df).groupby(["s", "k"]).aggregate(
        Count(), Sum("i"), Max("x"), Std("x", alias_name="spread")))
    pg = df.groupby(["s", "k"])
    expected = pd.DataFrame({"count()": pg.size(), "sum(i)": pg["i"].sum(),
                             "max(x)": pg["x"].max(), "spread": pg["x"].std()}).reset_index()
    assert_matches(out, expected)


def test_groupby_of_many_groups_over_several_output_blocks():
    n = 3000
    keys = (np.arange(n) * 7919) % 1000
    ds = fd.from_pandas(pieces(pd.DataFrame({"k": keys, "v": np.arange(n)}), 6))
    # partitions are sized by the partial states' bytes: small blocks make several
    fd.DataContext.get_current().target_max_block_size = 4096
    out = ds.groupby("k").sum("v").materialize()
    assert out.num_blocks() > 1
    expected = pd.DataFrame({"k": keys, "v": np.arange(n)}).groupby("k")["v"].sum()
    assert_matches(frame(out), expected.rename("sum(v)").reset_index())


def test_groupby_of_few_groups_from_many_blocks_gives_one_output_block(tmp_path):
    """The reduce side is sized by the groups' partial states, not by the input:
    three groups from eight blocks are reduced into one block (so one file is
    written), not one block per input block or per sampled boundary."""
    n = 4000
    data = pd.DataFrame({"k": np.arange(n) % 3, "v": np.arange(n)})
    out = fd.from_pandas(pieces(data, 8)).groupby("k").sum("v").materialize()
    assert out.num_blocks() == 1
    assert_matches(frame(out), data.groupby("k")["v"].sum().rename("sum(v)").reset_index())
    out.write_parquet(str(tmp_path))
    assert len(os.listdir(tmp_path)) == 1


def test_min_max_and_unique_of_strings(df):
    ds = ds_of(df)
    pg = df.groupby("s")["w"]
    assert_matches(frame(ds.groupby("s").min("w")), pg.min().rename("min(w)").reset_index())
    assert_matches(frame(ds.groupby("s").max("w")), pg.max().rename("max(w)").reset_index())
    assert ds.min("w") == df["w"].min() and ds.max("w") == df["w"].max()
    assert ds.unique("w") == sorted(df["w"].unique())
    assert ds.unique("k") == sorted(df["k"].unique())


def test_sum_of_every_other_column_when_on_is_none():
    pdf = pd.DataFrame({"k": [1, 2, 1, 2, 3], "a": [1, 2, 3, 4, 5], "b": [0.5, 1, 1.5, 2, 2.5]})
    out = frame(fd.from_pandas(pieces(pdf, 2)).groupby("k").sum())
    expected = pdf.groupby("k").sum().rename(columns=lambda c: f"sum({c})").reset_index()
    assert_matches(out, expected)


def test_null_keys_form_the_last_group():
    table = pa.table({"k": ["b", None, "a", "b", None, "a", "a"], "v": [1, 2, 3, 4, 5, 6, 7]})
    out = fd.from_arrow([table.slice(0, 3), table.slice(3)]).groupby("k").sum("v").take_all()
    assert out == [{"k": "a", "sum(v)": 16}, {"k": "b", "sum(v)": 5},
                   {"k": None, "sum(v)": 7}]


def test_ignore_nulls_false_gives_null_for_groups_holding_one():
    pdf = pd.DataFrame({"k": [0, 0, 1, 1, 2], "x": [1.0, np.nan, 2.0, 3.0, np.nan]})
    ds = fd.from_pandas(pieces(pdf, 2))
    assert ds.groupby("k").sum("x", ignore_nulls=False).take_all() == [
        {"k": 0, "sum(x)": None}, {"k": 1, "sum(x)": 5.0}, {"k": 2, "sum(x)": None}]
    skipping = ds.groupby("k").sum("x").take_all()
    assert skipping == [{"k": 0, "sum(x)": 1.0}, {"k": 1, "sum(x)": 5.0},
                        {"k": 2, "sum(x)": None}]
    counts = ds.groupby("k").aggregate(Count("x"), Count("x", ignore_nulls=True,
                                                         alias_name="n")).take_all()
    assert [(r["count(x)"], r["n"]) for r in counts] == [(2, 1), (2, 2), (1, 0)]


def test_std_ddof_and_single_row_groups():
    pdf = pd.DataFrame({"k": [0, 0, 0, 1], "x": [1.0, 2.0, 4.0, 9.0]})
    ds = fd.from_pandas(pieces(pdf, 2))
    rows = ds.groupby("k").std("x").take_all()
    assert rows[0]["std(x)"] == pytest.approx(pdf["x"][:3].std())
    assert np.isnan(rows[1]["std(x)"])  # as pandas: one value, ddof=1
    rows = ds.groupby("k").std("x", ddof=0).take_all()
    assert rows[0]["std(x)"] == pytest.approx(pdf["x"][:3].std(ddof=0))
    assert rows[1]["std(x)"] == 0.0


def test_std_is_accurate_for_large_values_spread_over_blocks():
    x = 1e9 + np.random.default_rng(0).random(2000)
    got = fd.from_numpy(np.array_split(x, 8)).std("data")
    assert got == pytest.approx(np.std(x, ddof=1), rel=1e-6)


# --------------------------------------------------------------------------- whole dataset
def test_dataset_wide_aggregations_match_pandas(df):
    ds = ds_of(df)
    assert ds.sum("i") == df["i"].sum()
    assert ds.min("i") == df["i"].min() and ds.max("i") == df["i"].max()
    assert ds.mean("x") == pytest.approx(df["x"].mean(), rel=1e-12)
    assert ds.std("x") == pytest.approx(df["x"].std(), rel=1e-9)
    assert ds.sum(["i", "x"]) == pytest.approx({"sum(i)": df["i"].sum(),
                                                "sum(x)": df["x"].sum()})
    got = ds.aggregate(Count(), Sum("i"), Min("x"), Max("x"), Mean("i"), Std("i"))
    assert got == pytest.approx({"count()": len(df), "sum(i)": df["i"].sum(),
                                 "min(x)": df["x"].min(), "max(x)": df["x"].max(),
                                 "mean(i)": df["i"].mean(), "std(i)": df["i"].std()})


def test_on_none_aggregates_every_column():
    pdf = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})
    assert fd.from_pandas(pdf).sum() == {"sum(a)": 6, "sum(b)": 4.5}
    assert fd.from_pandas(pdf).max() == {"max(a)": 3, "max(b)": 2.5}


def test_aggregations_of_an_empty_dataset():
    empty = fd.range_table(10).filter(lambda r: r["id"] > 100)
    assert empty.sum("id") is None and empty.mean("id") is None
    assert empty.sum(["id"]) == {"sum(id)": None}
    assert empty.aggregate(Count(), Max("id")) == {"count()": 0, "max(id)": None}
    assert empty.groupby("id").count().take_all() == []


# --------------------------------------------------------------------------- plain rows
def test_plain_rows_grouped_by_a_function_give_key_result_tuples():
    ds = fd.range(100, parallelism=4)
    assert ds.groupby(lambda x: x % 3).count().take_all() == [(0, 34), (1, 33), (2, 33)]
    sums = ds.groupby(lambda x: x % 3).sum().take_all()
    assert sums == [(r, sum(range(r, 100, 3))) for r in range(3)]
    both = ds.groupby(lambda x: "even" if x % 2 == 0 else "odd").aggregate(
        Count(), Max(lambda x: x * 10)).take_all()
    assert both == [("even", 50, 980), ("odd", 50, 990)]


def test_plain_rows_dataset_wide():
    ds = fd.range(100, parallelism=4)
    values = np.arange(100)
    assert ds.sum() == 4950 and ds.min() == 0 and ds.max() == 99
    assert ds.mean() == pytest.approx(49.5)
    assert ds.std() == pytest.approx(values.std(ddof=1))
    assert ds.mean(lambda x: x * 2) == pytest.approx(99.0)
    assert ds.aggregate(Count(), Max()) == (100, 99)


# --------------------------------------------------------------------------- AggregateFn
def test_a_user_aggregate_fn_by_row_and_by_block(df):
    by_row = AggregateFn(init=lambda k: 0, accumulate_row=lambda a, r: a + abs(r["i"]),
                         merge=lambda a, b: a + b, name="abs_sum(i)")
    by_block = AggregateFn(init=lambda k: (k, 0),
                           accumulate_block=lambda a, t: (a[0], a[1] + t.num_rows),
                           merge=lambda a, b: (a[0], a[1] + b[1]),
                           finalize=lambda a: f"{a[0]}:{a[1]}", name="label")
    out = frame(ds_of(df).groupby("k").aggregate(by_row, by_block, Count()))
    pg = df.groupby("k")
    expected = pd.DataFrame({"abs_sum(i)": pg["i"].apply(lambda s: s.abs().sum()),
                             "label": [f"{k}:{n}" for k, n in pg.size().items()],
                             "count()": pg.size()}).reset_index()
    assert_matches(out, expected)
    assert ds_of(df).aggregate(by_row) == {"abs_sum(i)": int(df["i"].abs().sum())}


def test_the_classic_accumulate_spelling_and_plain_rows():
    product = AggregateFn(init=lambda k: 1, accumulate=lambda a, x: a * x,
                          merge=lambda a, b: a * b, name="prod")
    assert fd.from_items(list(range(1, 10)), parallelism=3).aggregate(product) == (362880,)


# --------------------------------------------------------------------------- map_groups
def normalize(batch):
    x = batch["x"]
    return pd.DataFrame({"k": batch["k"], "i": batch["i"], "z": x - np.nanmean(x)})


def test_map_groups_sees_each_group_whole_in_key_order(df):
    out = frame(ds_of(df).groupby("k").map_groups(normalize, batch_format="pandas"))
    expected = df.assign(z=df["x"] - df.groupby("k")["x"].transform("mean"))
    expected = expected.sort_values("k", kind="stable")[["k", "i", "z"]]
    assert_matches(out, expected)


def test_map_groups_of_plain_rows_and_of_everything():
    ds = fd.range(30, parallelism=3)
    sizes = ds.groupby(lambda x: x % 4).map_groups(lambda b: [len(b["item"])]).take_all()
    assert sizes == [8, 8, 7, 7]
    total = ds.groupby(None).map_groups(lambda b: {"n": [len(b["item"])]}).take_all()
    assert total == [{"n": 30}]


class Offset:
    def __init__(self, delta):
        self.delta = delta

    def __call__(self, batch):
        return {"k": batch["k"][:1], "top": [batch["i"].max() + self.delta]}


@pytest.mark.requires("actors")
def test_map_groups_with_a_callable_class_on_an_actor_pool(df):
    out = frame(ds_of(df).groupby("k").map_groups(Offset, fn_constructor_args=(1,),
                                                  concurrency=2))
    expected = (df.groupby("k")["i"].max() + 1).rename("top").reset_index()
    assert_matches(out, expected)


def fail_on_group_3(batch):
    if batch["k"][0] == 3:
        raise ValueError("group 3 is bad")
    return batch


def test_an_error_in_map_groups_names_the_operator(df):
    with pytest.raises(ValueError, match="group 3 is bad") as info:
        ds_of(df).groupby("k").map_groups(fail_on_group_3).take_all()
    assert isinstance(info.value, fedexec.TaskError)
    assert "in operator MapGroups(fail_on_group_3)" in str(info.value)


def explode(acc, row):
    raise RuntimeError("accumulator exploded")


def test_an_error_in_an_aggregate_fn_names_the_operator(df):
    agg = AggregateFn(init=lambda k: 0, accumulate_row=explode, merge=lambda a, b: a)
    with pytest.raises(RuntimeError, match="accumulator exploded") as info:
        ds_of(df).groupby("k").aggregate(agg).take_all()
    assert "in operator Aggregate" in str(info.value)


# --------------------------------------------------------------------------- errors
def test_bad_groupings_are_refused_with_what_to_do(df):
    with pytest.raises(KeyError, match="nope"):
        ds_of(df).groupby("nope").count().take_all()
    with pytest.raises(TypeError, match="function of the row"):
        fd.range(10).groupby("k").count().take_all()
    with pytest.raises(TypeError, match="column names"):
        ds_of(df).groupby(lambda r: r["k"]).count().take_all()
    with pytest.raises(ValueError, match="distinct names"):
        ds_of(df).groupby("k").aggregate(Sum("i"), Sum("i")).take_all()
    with pytest.raises(TypeError, match="AggregateFn"):
        ds_of(df).aggregate("sum")
    with pytest.raises(KeyError, match="nope"):
        ds_of(df).sum("nope")
