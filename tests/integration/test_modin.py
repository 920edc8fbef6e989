"""``fedexec.integrations.modin``: ``modin.pandas`` on the ``"Fedexec"`` engine.

Every test runs on the ``native`` and the ``local`` backend. Modin's engine and
settings are process-wide, so one module-scoped fixture per backend selects the
engine on an executor of its own (3 CPUs, pinned with ``set_executor``; the
conftest only shuts down the *default* executor after each test), and puts every
Modin setting it touched back as it was.
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pandas
import pytest
from pandas.testing import assert_frame_equal, assert_series_equal

import fedexec

pytest.importorskip("modin")

import fedexec.integrations.modin as fm
import modin.config as cfg
import modin.pandas as mpd
from fedexec.integrations.modin import (
    FedexecWrapper,
    PandasOnFedexecDataframe,
    PandasOnFedexecDataframePartition,
)
from modin.pandas.io import to_pandas

pytestmark = pytest.mark.timeout(90)

CPUS = 3  # not this machine's CPU count, so that sizing NPartitions from it shows
# Modin settings the fixture changes (restored exactly, value and source).
_SETTINGS = (cfg.NPartitions, cfg.CpuCount, cfg.MinRowPartitionSize,
             cfg.MinColumnPartitionSize)


@pytest.fixture(scope="module", params=["native", "local"])
def engine(request):
    """Modin on the Fedexec engine, on a ``CPUS``-CPU executor of each backend;
    yields ``(executor, NPartitions and CpuCount were left to the engine)``."""
    ex = fedexec.Executor(request.param, num_cpus=CPUS)
    old_backend = cfg.Backend.get()
    mp = pytest.MonkeyPatch()
    for setting in _SETTINGS:  # noted now, restored by mp.undo()
        setting.get()
        mp.setattr(setting, "_value", setting._value)
        mp.setattr(setting, "_value_source", setting._value_source)
    sized_by_engine = all(s.get_value_source() == cfg.ValueSource.DEFAULT
                          for s in (cfg.NPartitions, cfg.CpuCount))
    try:
        fm.set_executor(ex)
        cfg.Engine.put("Fedexec")
        # Small blocks, so that these small frames still span several of them.
        cfg.MinRowPartitionSize.put(4)
        cfg.MinColumnPartitionSize.put(2)
        yield ex, sized_by_engine
    finally:
        cfg.Backend.put(old_backend)
        mp.undo()
        fm.set_executor(None)
        ex.shutdown()


@pytest.fixture(scope="module")
def frames():
    """The pandas frame the tests compare with (mixed dtypes)."""
    rng = np.random.default_rng(0)
    n = 240
    return pandas.DataFrame({
        "key": rng.integers(0, 6, n),
        "cat": rng.choice(list("abcd"), n),
        "value": rng.normal(size=n),
        "count": rng.integers(0, 100, n),
        "idx": np.arange(n),
    })


@pytest.fixture
def csv_path(frames, tmp_path):
    path = tmp_path / "data.csv"
    frames.to_csv(path, index=False)
    return str(path)


def _partitions(df):
    return df._query_compiler._modin_frame._partitions


# -- the engine ------------------------------------------------------------------------
def test_engine_is_selected_and_sized_to_the_cluster(engine):
    ex, sized_by_engine = engine
    assert cfg.Engine.get() == "Fedexec" == fm.ENGINE
    assert cfg.Backend.get() == "Fedexec" == fm.BACKEND
    assert fm.get_executor() is ex
    df = mpd.DataFrame({"a": [1, 2, 3]})  # Modin initialises the engine on first use
    assert isinstance(df._query_compiler._modin_frame, PandasOnFedexecDataframe)
    assert df._query_compiler._modin_frame.engine == "Fedexec"
    if sized_by_engine:  # not set by the user (MODIN_NPARTITIONS, MODIN_CPUS)
        assert cfg.NPartitions.get() == cfg.CpuCount.get() == CPUS


def test_register_is_idempotent(engine):
    fm.register()
    fm.register()
    assert cfg.Engine.choices.count("Fedexec") == 1
    assert cfg.Backend.get_execution_for_backend("Fedexec") == ("Pandas", "Fedexec")


# -- results equal pandas' -------------------------------------------------------------
def test_read_csv(engine, frames, csv_path):
    df = mpd.read_csv(csv_path)
    rows, cols = _partitions(df).shape
    assert rows > 1 and cols > 1, "the frame should span several blocks"
    assert_frame_equal(to_pandas(df), pandas.read_csv(csv_path))


def test_groupby_agg(engine, frames, csv_path):
    spec = {"value": ["sum", "mean"], "count": "max", "idx": "count"}
    got = mpd.read_csv(csv_path).groupby("key").agg(spec)
    assert_frame_equal(to_pandas(got), frames.groupby("key").agg(spec))
    got = mpd.DataFrame(frames).groupby(["cat", "key"]).size()
    assert_series_equal(to_pandas(got), frames.groupby(["cat", "key"]).size())


def test_merge(engine, frames, csv_path):
    right = pandas.DataFrame({"key": [0, 1, 2, 4, 7], "name": list("vwxyz")})
    got = mpd.read_csv(csv_path).merge(mpd.DataFrame(right), on="key", how="left")
    assert_frame_equal(to_pandas(got), frames.merge(right, on="key", how="left"))
    inner = mpd.DataFrame(frames).merge(mpd.DataFrame(right), on="key")
    assert_frame_equal(to_pandas(inner).sort_values("idx").reset_index(drop=True),
                       frames.merge(right, on="key").sort_values("idx")
                       .reset_index(drop=True))


def test_apply(engine, frames):
    df = mpd.DataFrame(frames)
    assert_series_equal(to_pandas(df.apply(lambda r: r["value"] * r["count"], axis=1)),
                        frames.apply(lambda r: r["value"] * r["count"], axis=1))
    numeric = ["value", "count", "idx"]
    assert_series_equal(to_pandas(df[numeric].apply(np.sum)), frames[numeric].apply(np.sum))
    assert_frame_equal(to_pandas(df[numeric].apply(lambda c: c - c.min())),
                       frames[numeric].apply(lambda c: c - c.min()))


def test_describe(engine, frames):
    assert_frame_equal(to_pandas(mpd.DataFrame(frames).describe()), frames.describe())


def test_to_pandas_after_updates(engine, frames):
    df = mpd.DataFrame(frames)
    df["double"] = df["value"] * 2
    df.loc[df["count"] > 50, "value"] = 0.0
    df = df.sort_values(["count", "idx"])
    expected = frames.copy()
    expected["double"] = expected["value"] * 2
    expected.loc[expected["count"] > 50, "value"] = 0.0
    expected = expected.sort_values(["count", "idx"])
    assert_frame_equal(df._to_pandas(), expected)
    assert_frame_equal(to_pandas(df), expected)


def test_error_in_a_task_raises_the_original_type(engine, frames):
    def bad(row):
        if row["idx"] == 17:
            raise KeyError("row 17")
        return 0

    with pytest.raises(KeyError, match="row 17"):
        to_pandas(mpd.DataFrame(frames).apply(bad, axis=1))


# -- where data and work live ----------------------------------------------------------
def _store_bytes(ex):
    """Bytes in the native object store (the node manager's counters)."""
    return ex._backend.stats()["store"]["used_bytes"]


def _settled_store_bytes(ex):
    """``_store_bytes`` once earlier tests' objects have been freed."""
    gc.collect()
    last, deadline = _store_bytes(ex), time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = _store_bytes(ex)
        if now == last:
            break
        last = now
    return last


def test_blocks_are_object_refs_in_the_store(engine):
    ex, _ = engine
    native = ex.backend == "native"
    n = 30_000  # 3 blocks of 10,000 rows x 2 float64 columns: 160 kB each
    pdf = pandas.DataFrame({"a": np.arange(n, dtype=float), "b": np.ones(n)})
    before = _settled_store_bytes(ex) if native else 0
    df = mpd.DataFrame(pdf)
    parts = _partitions(df)
    assert parts.shape == (CPUS, 1)
    blocks = []
    for part in parts.flat:
        assert isinstance(part, PandasOnFedexecDataframePartition)
        assert isinstance(part._data, fedexec.ObjectRef)
        assert part._data.done()
        blocks.append(ex.get(part._data))
    assert_frame_equal(pandas.concat(blocks), pdf)
    del blocks, parts, part
    if native:  # the blocks are in shared memory, and freed with the frame
        assert _store_bytes(ex) - before >= pdf.memory_usage(index=False).sum()
        doubled = df * 2  # computed by tasks; the results are stored too
        doubled._query_compiler._modin_frame.wait_computations()
        assert _store_bytes(ex) - before >= 2 * pdf.memory_usage(index=False).sum()
        assert_frame_equal(to_pandas(doubled), pdf * 2)
        del df, doubled
        gc.collect()
        deadline = time.monotonic() + 10
        while _store_bytes(ex) > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _store_bytes(ex) <= before


def test_functions_may_write_into_a_block_in_place(engine):
    ex, _ = engine
    pdf = pandas.DataFrame({"a": np.arange(20_000.0), "b": np.zeros(20_000)})  # 320 kB
    part = PandasOnFedexecDataframePartition.put(pdf)

    def bump(df):  # on native ``df`` is a read-only view of shared memory at first
        df.iloc[0, 0] = -1.0
        return df

    if ex.backend == "native":  # a bare task cannot: zero-copy, read-only shared memory
        with pytest.raises(ValueError, match="read-only"):
            ex.submit(bump, part._data).result()
    expected = pdf.copy()
    expected.iloc[0, 0] = -1.0
    assert_frame_equal(part.apply(bump).get(), expected)
    assert_frame_equal(part.get(), pdf)  # the stored block is unchanged
    assert (part.length(), part.width()) == pdf.shape


def test_work_runs_in_fedexec_tasks(engine, frames):
    ex, _ = engine

    def where(row):
        ctx = fedexec.get_runtime_context()
        return f"{os.getpid()}:{ctx.task_id is not None}:{ctx.backend}"

    seen = set(to_pandas(mpd.DataFrame(frames).apply(where, axis=1)))
    pids = {int(s.split(":")[0]) for s in seen}
    assert {s.split(":", 1)[1] for s in seen} == {f"True:{ex.backend}"}
    if ex.backend == "native":  # worker processes
        assert os.getpid() not in pids, "Modin's work ran in the driver"
    else:  # threads of this process
        assert pids == {os.getpid()}


def test_default_executor_is_used_when_none_is_set(engine, frames):
    ex, _ = engine
    fm.set_executor(None)
    try:
        default = fedexec.init(backend=ex.backend, num_cpus=2)
        assert fm.get_executor() is default
        df = mpd.DataFrame(frames)
        assert_frame_equal(to_pandas(df.groupby("cat").sum()), frames.groupby("cat").sum())
        fedexec.shutdown()  # a new default executor is made on the next use
        df = mpd.DataFrame(frames)
        assert_series_equal(to_pandas(df["count"].cumsum()), frames["count"].cumsum())
        assert fm.get_executor() is not default
    finally:
        fm.set_executor(ex)


# -- the execution wrapper -------------------------------------------------------------
def test_deploy_resolves_refs_nested_in_arguments(engine):
    ex, _ = engine

    def pair(a, b, *, scale):
        return [x * scale for x in a], {k: v * scale for k, v in b.items()}

    def run_queue(queue, df):
        for f, args, kwargs in queue:
            df = f(df, *args, **kwargs)
        return df

    one, two = ex.put(1), ex.put(2)
    data, meta = FedexecWrapper.deploy(
        ex.put(pair), f_args=([one, two, 3, one], {"x": two}), f_kwargs={"scale": two},
        num_returns=2)
    assert isinstance(data, fedexec.ObjectRef) and isinstance(meta, fedexec.ObjectRef)
    assert FedexecWrapper.materialize([data, "plain", (meta,)]) == [
        [2, 4, 6, 2], "plain", ({"x": 4},)]
    queue = [[lambda df, n: df + n, (one,), {}], [lambda df, n: df * n, (), {"n": two}]]
    df_ref = FedexecWrapper.deploy(
        run_queue, f_args=(queue, ex.put(pandas.DataFrame({"a": [1, 2]}))))
    assert_frame_equal(FedexecWrapper.materialize(df_ref), pandas.DataFrame({"a": [4, 6]}))
    FedexecWrapper.wait([data, meta, data])
    assert FedexecWrapper.is_future(data) and not FedexecWrapper.is_future(1)
    assert FedexecWrapper.put(pair) is pair  # functions are not stored (see put)
