"""``fedexec.data`` to and from Dask, Modin and Spark: exact values and dtypes
against pandas, order (block ``i`` is partition ``i``), and that the data moves
by refs or node-local files, not through the driver.

Dask and Modin run on the ``native``, ``local`` and ``dask`` backends. Spark runs twice: on
a plain ``local[2]`` session (the fallback through the driver, which warns) and
on Spark on fedexec (``init_spark``, 2 executors on a 2-node native cluster),
where the bytes the driver's processes read and write (its Python process and its
JVM) stay far below the data's size; the fallback, measured the same way, moves
at least the data's size (the measure can fail).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import warnings

import numpy as np
import pandas as pd
import psutil
import pytest

import fedexec
import fedexec.data as fd

pytestmark = pytest.mark.timeout(180)


def frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Ints, floats with NaN, strings with None, timestamps (microseconds) with
    NaT, and nullable ints with nulls."""
    rng = np.random.default_rng(seed)
    t = pd.Series(pd.to_datetime("2021-03-04") + pd.to_timedelta(
        rng.integers(0, 10**12, n), unit="us")).astype("datetime64[us]")
    t[rng.random(n) < 0.2] = pd.NaT
    return pd.DataFrame({
        "i": rng.integers(-10**12, 10**12, n),
        "f": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
        "s": [None if x < 0.2 else f"s{k}-{'x' * (k % 7)}"
              for k, x in enumerate(rng.random(n))],
        "t": t,
        "n": pd.array([None if x < 0.3 else k for k, x in enumerate(rng.random(n))],
                      dtype="Int64"),
    })


def pieces(df: pd.DataFrame, cuts: tuple[int, ...]) -> list[pd.DataFrame]:
    bounds = [0, *cuts, len(df)]
    return [df.iloc[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def plain_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as Arrow data without pandas' metadata comes back: nullable ints with
    nulls as float64, strings as object."""
    return df.astype({c: "float64" for c, d in df.dtypes.items() if d == "Int64"}
                     ).astype({c: object for c, d in df.dtypes.items()
                               if isinstance(d, pd.StringDtype)})


def strings_as_objects(df: pd.DataFrame) -> pd.DataFrame:
    """String columns (pandas' string dtype or object) as objects, missing as NA."""
    cols = [c for c, d in df.dtypes.items()
            if pd.api.types.is_object_dtype(d) or isinstance(d, pd.StringDtype)]
    return df.astype({c: "string" for c in cols}).astype({c: object for c in cols})


def assert_same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))


@contextlib.contextmanager
def data_executor(ex):
    ctx = fd.DataContext.get_current()
    saved = ctx.executor
    ctx.executor = ex
    try:
        yield ex
    finally:
        ctx.executor = saved


@pytest.fixture(scope="module", params=["native", "local", "dask"])
def ex(request):
    executor = fedexec.Executor(request.param, num_cpus=3)
    with data_executor(executor):
        yield executor
    executor.shutdown()


# --------------------------------------------------------------------------- Dask
dd = pytest.importorskip("dask.dataframe")
from fedexec.integrations.dask import FedexecDaskScheduler  # noqa: E402


def _in_task(part: pd.DataFrame) -> pd.DataFrame:
    return part.assign(in_task=fedexec.util.inside_task())


def test_from_dask_one_block_per_partition_computed_by_fedexec_tasks(ex):
    df = frame()
    ddf = dd.from_pandas(df, npartitions=3)
    ds = fd.from_dask(ddf.map_partitions(_in_task))
    assert ds.num_blocks() == ddf.npartitions == 3
    got = ds.to_pandas()
    assert got.pop("in_task").all(), "a partition was computed outside fedexec's tasks"
    # Exactly what Dask computes (its strings are pandas' string dtype, which comes
    # back with pandas' default storage).
    expected = ddf.compute(scheduler="sync")
    assert isinstance(got.s.dtype, pd.StringDtype) and got.n.dtype == "Int64"
    assert_same(strings_as_objects(got), strings_as_objects(expected))
    sizes = [len(ex.get(r)) for r in ds.to_pandas_refs()]
    assert sizes == list(ddf.map_partitions(len).compute(scheduler="sync"))
    assert fd.from_dask(ddf.i).to_pandas().equals(df[["i"]])  # a Series: one column


def test_to_dask_partitions_are_the_blocks_in_order(ex):
    df = frame(60, seed=1)
    ds = fd.from_pandas(pieces(df, (7, 30, 31)))
    ddf = ds.to_dask()
    assert ddf.npartitions == 4
    scheduler = FedexecDaskScheduler(ex)
    got = ddf.compute(scheduler=scheduler)
    assert_same(strings_as_objects(got), strings_as_objects(df))
    # Any other scheduler fetches the partitions from the store.
    assert_same(ddf.compute(scheduler="sync"), got)
    assert [len(ddf.get_partition(i).compute(scheduler=scheduler)) for i in range(4)] == \
        [7, 23, 1, 29]
    # Dask's work on it runs in fedexec tasks, and matches pandas.
    assert ddf.map_partitions(_in_task).in_task.all().compute(scheduler=scheduler)
    assert ddf.i.sum().compute(scheduler=scheduler) == df.i.sum()
    assert ddf.groupby(ddf.i % 3).f.mean().compute(scheduler=scheduler).sort_index() \
        .tolist() == pytest.approx(df.groupby(df.i % 3).f.mean().sort_index().tolist())


def test_to_dask_unifies_block_dtypes(ex):
    # An int column with a null in one block only: float64 there, int64 elsewhere.
    ds = fd.from_items([{"a": 1, "b": "x"}, {"a": None, "b": "y"}, {"a": 3, "b": None}],
                       parallelism=3)
    ddf = ds.to_dask()
    assert ddf.dtypes["a"] == np.float64
    got = ddf.compute(scheduler=FedexecDaskScheduler(ex))  # verify_meta checks each one
    assert got.a.tolist()[::2] == [1.0, 3.0] and np.isnan(got.a.tolist()[1])
    assert got.b.astype(object).tolist()[:2] == ["x", "y"] and pd.isna(got.b.tolist()[2])
    refs = ds.to_pandas_refs()
    assert {str(ex.get(r).a.dtype) for r in refs} == {"float64"}


def test_dask_round_trip_of_plain_rows_and_empty(ex):
    ds = fd.from_dask(fd.range(10, parallelism=3).to_dask())
    assert ds.take_all() == [{"item": i} for i in range(10)]
    empty = fd.from_items([{"a": 1}]).filter(lambda r: False).to_dask()
    assert len(empty.compute(scheduler=FedexecDaskScheduler(ex))) == 0


# --------------------------------------------------------------------------- Modin
pytest.importorskip("modin")
import fedexec.integrations.modin as fm  # noqa: E402
import modin.config as cfg  # noqa: E402
import modin.pandas as mpd  # noqa: E402
from modin.pandas.io import to_pandas as modin_to_pandas  # noqa: E402

_MODIN_SETTINGS = (cfg.NPartitions, cfg.CpuCount, cfg.MinRowPartitionSize,
                   cfg.MinColumnPartitionSize)


@pytest.fixture
def modin_engine(ex):
    """Modin on the Fedexec engine on ``ex``, with small partitions; every setting
    put back afterwards."""
    old_backend = cfg.Backend.get()
    mp = pytest.MonkeyPatch()
    for setting in _MODIN_SETTINGS:
        setting.get()
        mp.setattr(setting, "_value", setting._value)
        mp.setattr(setting, "_value_source", setting._value_source)
    try:
        fm.set_executor(ex)
        cfg.Engine.put("Fedexec")
        cfg.MinRowPartitionSize.put(4)
        cfg.MinColumnPartitionSize.put(2)
        yield ex
    finally:
        cfg.Backend.put(old_backend)
        mp.undo()
        fm.set_executor(None)


def test_from_modin_one_block_per_row_partition(modin_engine):
    df = frame(50, seed=2)
    mdf = mpd.DataFrame(df)
    rows, cols = mdf._query_compiler._modin_frame._partitions.shape
    assert rows > 1 and cols > 1, "the frame should span several blocks both ways"
    ds = fd.from_modin(mdf)
    assert ds.num_blocks() == rows
    assert_same(ds.to_pandas(), df)  # dtypes too: pandas' metadata travels with the blocks
    assert_same(fd.from_modin(mdf.i).to_pandas(), df[["i"]])


def test_to_modin_row_partitions_are_the_blocks(modin_engine):
    df = frame(60, seed=3)
    ds = fd.from_pandas(pieces(df, (5, 33)))
    mdf = ds.to_modin()
    parts = mdf._query_compiler._modin_frame._partitions
    assert parts.shape == (3, 1)
    assert all(isinstance(p._data, fedexec.ObjectRef) for p in parts.flatten())
    assert [p.length() for p in parts.flatten()] == [5, 28, 27]
    assert_same(modin_to_pandas(mdf), df)
    assert mdf.i.sum() == df.i.sum()
    assert modin_to_pandas(mdf.groupby("n").f.sum()).tolist() == \
        pytest.approx(df.groupby("n").f.sum().tolist())
    assert_same(fd.from_modin(mdf).to_pandas(), df)


def test_modin_needs_the_fedexec_engine_on_the_same_executor(modin_engine):
    other = fedexec.Executor("local", num_cpus=1)
    try:
        fm.set_executor(other)
        with pytest.raises(ValueError, match="same one"):
            fd.from_items([{"a": 1}]).to_modin()
    finally:
        fm.set_executor(modin_engine)
        other.shutdown()
    with pytest.raises(TypeError, match="Modin DataFrame"):
        fd.from_modin(frame())


# --------------------------------------------------------------------------- Spark
def test_exchange_argument_errors(ex):
    with pytest.raises(TypeError, match="Dask DataFrame"):
        fd.from_dask(frame())
    with pytest.raises(TypeError, match="Spark DataFrame"):
        fd.from_spark(frame())
    with pytest.raises(TypeError, match="SparkSession"):
        fd.range(3).to_spark(None)
    with pytest.raises(TypeError, match="ObjectRefs"):
        fd.from_pandas_refs([frame()])
    assert_same(fd.from_pandas_refs(ex.put(frame())).to_pandas(), frame())


pyspark = pytest.importorskip("pyspark")
from fedexec.integrations.spark import exchange_info, init_spark, stop_spark  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from fedexec.testing import Cluster  # noqa: E402

BIG_ROWS = 120_000  # ~8 MiB of Arrow data: what must not pass through the driver


def big_spark_frame(spark, partitions: int):
    """``BIG_ROWS`` rows made by the executors (nothing from the driver), and their
    size as Arrow data."""
    sdf = spark.range(BIG_ROWS, numPartitions=partitions).selectExpr(
        "id AS k", "id * 0.5 AS v", "concat('row-', lpad(id, 8, '0'), repeat('y', 30)) AS s")
    size = BIG_ROWS * (8 + 8 + 4 + 42)  # two 8-byte columns, string offsets and bytes
    return sdf, size


class DriverIO:
    """Bytes read and written by this process and its Spark driver JVM (file,
    pipe and socket I/O: ``/proc/<pid>/io`` rchar + wchar)."""

    def _procs(self) -> list[psutil.Process]:
        me = psutil.Process()
        jvms = [p for p in me.children(recursive=True)
                if "org.apache.spark.deploy.SparkSubmit" in " ".join(_cmdline(p))]
        return [me, *jvms]

    def total(self) -> int:
        n = 0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                io = p.io_counters()
                n += io.read_chars + io.write_chars
        return n

    @contextlib.contextmanager
    def measure(self):
        box = {}
        start = self.total()
        yield box
        box["bytes"] = self.total() - start


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _no_active_spark():
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()


def spark_rows(df: pd.DataFrame) -> list[tuple]:
    """The rows of ``frame()`` as Python values (None for missing ones)."""
    return [tuple(None if pd.isna(v) else v.to_pydatetime() if isinstance(v, pd.Timestamp)
                  else v.item() if hasattr(v, "item") else v for v in row)
            for row in df.itertuples(index=False)]


SPARK_DDL = "i long, f double, s string, t timestamp_ntz, n long"


def with_partitions(sdf) -> tuple[pd.DataFrame, list[int]]:
    """The frame's rows (one job), in order, and the sizes of its partitions."""
    from pyspark.sql.functions import spark_partition_id

    rows = sdf.withColumn("_part", spark_partition_id()).toPandas()
    counts = rows.pop("_part").value_counts()
    return rows, [int(counts.get(p, 0)) for p in range(sdf.rdd.getNumPartitions())]


def spark_round_trips(spark, ex):
    """Checks shared by both sessions: Spark → dataset → Spark with exact values,
    dtypes and order."""
    df = frame(80, seed=4)
    sdf = spark.createDataFrame(spark.sparkContext.parallelize(spark_rows(df), 3), SPARK_DDL)
    ds = fd.from_spark(sdf)
    # One block per partition, in order, with exactly the values and dtypes of pandas.
    expected, sizes = with_partitions(sdf)
    assert [t.num_rows for t in ex.get(ds.to_arrow_refs())] == sizes
    got = ds.to_pandas()
    assert_same(got, plain_dtypes(df))
    assert_same(got, expected.astype({"n": "float64", "t": "datetime64[us]"}))
    # Dataset → Spark: one partition per block, in order, same values and types.
    back = fd.from_pandas(pieces(df, (10, 11, 50))).to_spark(spark)
    assert dict(back.dtypes) == {"i": "bigint", "f": "double", "s": "string",
                                 "t": "timestamp_ntz", "n": "bigint"}
    rows, sizes = with_partitions(back)
    assert sizes == [10, 1, 39, 30]
    assert_same(rows.astype({"t": "datetime64[us]"}), plain_dtypes(df))
    # Plain rows become the column "item"; no rows, an empty frame (with its columns).
    assert [r.item for r in fd.range(5, parallelism=2).to_spark(spark).collect()] == \
        list(range(5))
    assert fd.from_items([{"a": 1}]).filter(lambda r: False).to_spark(spark).count() == 0
    empty = fd.from_spark(sdf.limit(0))
    assert empty.count() == 0 and empty.columns() == list(df.columns)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_spark_local_session_goes_through_the_driver_with_a_warning(monkeypatch):
    _no_active_spark()
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # executors import fedexec
    spark = (SparkSession.builder.master("local[2]").appName("exchange-plain")
             .config("spark.ui.enabled", "false").config("spark.log.level", "ERROR")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    ex = fedexec.Executor("native", num_cpus=2)
    try:
        with data_executor(ex), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            spark_round_trips(spark, ex)
            sdf, size = big_spark_frame(spark, 2)
            io = DriverIO()
            with pytest.warns(RuntimeWarning, match="through this process") as warned, \
                    io.measure() as moved_in:
                ds = fd.from_spark(sdf).materialize()
            with pytest.warns(RuntimeWarning, match="through this process") as warned_too, \
                    io.measure() as moved_out:
                assert ds.to_spark(spark).count() == BIG_ROWS
            assert warned[0].filename == warned_too[0].filename == __file__  # the caller's line
        # The measure sees data that does go through the driver.
        assert moved_in["bytes"] > size, (moved_in, size)
        assert moved_out["bytes"] > size, (moved_out, size)
    finally:
        spark.stop()
        ex.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_spark_on_fedexec_moves_data_by_node_local_files():
    _no_active_spark()
    with Cluster(head_num_cpus=0) as cluster:
        for _ in range(2):
            cluster.add_node(num_cpus=2)
        with fedexec.Executor(address=cluster.address) as ex, data_executor(ex):
            spark = init_spark("exchange", 2, 1, "512m", executor=ex)
            try:
                info = exchange_info(spark)
                assert info is not None and info.executor is ex
                assert len({n.node_id for n in info.nodes}) == 2  # one executor per node
                with warnings.catch_warnings():
                    warnings.simplefilter("error", RuntimeWarning)  # no fallback
                    spark_round_trips(spark, ex)
                    sdf, size = big_spark_frame(spark, 4)
                    io = DriverIO()
                    ctx = fd.DataContext.get_current()
                    saved, ctx.target_max_block_size = ctx.target_max_block_size, 1 << 20
                    try:
                        with io.measure() as moved_in:
                            ds = fd.from_spark(sdf)
                    finally:
                        ctx.target_max_block_size = saved
                    assert ds.count() == BIG_ROWS
                    # ~1.9 MB partitions cut in blocks of about 1 MiB
                    assert sdf.rdd.getNumPartitions() == 4 and ds.num_blocks() >= 8
                    with io.measure() as moved_out:
                        out = ds.to_spark(spark)
                        assert out.count() == BIG_ROWS
                    with io.measure() as summed:  # computed again: its files are still there
                        assert out.selectExpr("sum(k)").collect()[0][0] == \
                            BIG_ROWS * (BIG_ROWS - 1) // 2
                limit = size // 4
                assert moved_in["bytes"] < limit, (moved_in, limit)
                assert moved_out["bytes"] < limit, (moved_out, limit)
                assert summed["bytes"] < limit, (summed, limit)
                # Every file from_spark wrote was read and deleted on its node.
                left = [os.path.join(n.directory, d) for n in info.nodes
                        for d in os.listdir(n.directory) if d.startswith("from-spark-")]
                assert left == []
                assert_same(ds.to_pandas(), sdf.toPandas())
                # Spark and datasets must share one executor (refs belong to one).
                other = fedexec.Executor("local", num_cpus=1)
                try:
                    with data_executor(other), pytest.raises(ValueError, match="one executor"):
                        fd.from_spark(sdf)
                finally:
                    other.shutdown()
            finally:
                stop_spark()
