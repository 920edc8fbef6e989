"""``fedexec.integrations.dask``: Dask collections computed by fedexec tasks.

Every test runs on the ``native`` and the ``local`` backend, on a default executor
made by ``fedexec.init`` (the conftest shuts it down after each test). Results are
compared with Dask's own synchronous scheduler on the same collections.
"""

from __future__ import annotations

import gc
import os
import threading
import time

import numpy as np
import pytest

import fedexec

dask = pytest.importorskip("dask")
pytest.importorskip("dask._task_spec")

import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402
from _dask_tasks import (  # noqa: E402
    CustomError,
    counted,
    counted_block,
    executions,
    fail,
    fail_on,
    make_tracked,
    merge_tracked,
    total,
    where,
)
from dask.utils_test import GetFunctionTestMixin, add, inc  # noqa: E402
from fedexec.integrations.dask import (  # noqa: E402
    FedexecDaskScheduler,
    fedexec_dask_get,
    fedexec_persist,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["native", "local"])
def ex(request):
    """The default executor, on each backend, with 2 CPUs."""
    return fedexec.init(backend=request.param, num_cpus=2)


def _dd():
    return pytest.importorskip("dask.dataframe")


def _persisted_refs(collection):
    """The ObjectRefs held by the chunks of a persisted collection's graph."""
    from dask._task_spec import Task

    graph = dict(collection.__dask_graph__())
    return [n.args[0] for n in graph.values()
            if isinstance(n, Task) and n.args and isinstance(n.args[0], fedexec.ObjectRef)]


# -- results equal to Dask's own scheduler ----------------------------------------------
def test_array_results_equal_sync(ex):
    x = da.random.default_rng(42).random((60, 60), chunks=(15, 20))
    cases = {
        "x+x.T mean": (x + x.T).mean(axis=0),
        "rechunk sum": x.rechunk((25, 7)).sum(axis=1),
        "std": x.std(),
        "argmax": x.argmax(axis=0),
        "matmul": (x @ x.T)[::7, 3:9],
        "cumsum": x.cumsum(axis=1)[:, -1],
    }
    for name, expr in cases.items():
        expected = expr.compute(scheduler="sync")
        got = expr.compute(scheduler=fedexec_dask_get)
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_array_from_numpy_data(ex):
    """Graph data (``DataNode``s) is stored once and shared by reference."""
    base = np.arange(10_000, dtype=np.float64).reshape(100, 100)
    x = da.from_array(base, chunks=(30, 40))
    y = (x - x.mean(axis=0)).round(3)
    np.testing.assert_array_equal(y.compute(scheduler=fedexec_dask_get),
                                  y.compute(scheduler="sync"))


def test_dataframe_results_equal_sync(ex, tmp_path):
    dd = _dd()
    import pandas as pd

    rng = np.random.default_rng(0)
    for i in range(3):
        pd.DataFrame({
            "k": rng.integers(0, 5, 40), "v": rng.random(40), "w": np.arange(40) + 40 * i,
        }).to_csv(tmp_path / f"part-{i}.csv", index=False)
    df = dd.read_csv(str(tmp_path / "part-*.csv"))
    names = dd.from_pandas(pd.DataFrame({"k": range(5), "name": list("abcde")}),
                           npartitions=2)
    cases = {
        "groupby-agg": df.groupby("k").agg({"v": ["sum", "mean"], "w": "max"}),
        "merge": df.merge(names, on="k").groupby("name").v.sum(),
        "filter-assign": df[df.v > 0.5].assign(z=lambda d: d.v * d.w).z.sum(),
        "len": df.w.count(),
    }
    for name, expr in cases.items():
        expected = expr.compute(scheduler="sync")
        got = expr.compute(scheduler=fedexec_dask_get)
        if hasattr(expected, "sort_index"):
            pd.testing.assert_frame_equal(pd.DataFrame(got).sort_index(),
                                          pd.DataFrame(expected).sort_index(), obj=name)
        else:
            assert got == expected, name


def test_bag_results_equal_sync(ex):
    b = db.from_sequence(range(200), npartitions=7)
    cases = {
        "map-filter": b.map(lambda i: i * 3).filter(lambda i: i % 2 == 0).sum(),
        "foldby": b.foldby(lambda i: i % 5, lambda acc, i: acc + i, 0),
        "frequencies": b.map(lambda i: i % 4).frequencies(),
        "distinct": b.map(lambda i: i // 10).distinct(),
    }
    for name, expr in cases.items():
        expected = expr.compute(scheduler="sync")
        got = expr.compute(scheduler=fedexec_dask_get)
        if isinstance(expected, list):
            got, expected = sorted(got), sorted(expected)
        assert got == expected, name


def test_delayed_and_nested_collections(ex):
    x = dask.delayed(inc)(1)
    y = dask.delayed(add)(x, 10)
    arr = da.arange(10, chunks=3)
    got = dask.compute({"a": x, "b": [y, arr.sum()], "c": 7}, scheduler=fedexec_dask_get)
    assert got == ({"a": 2, "b": [12, 45], "c": 7},)


def test_config_set_runs_every_task_in_fedexec(ex):
    b = db.from_sequence(range(12), npartitions=4).map(where)
    with dask.config.set(scheduler=fedexec_dask_get):
        got = b.compute()
    assert [x for x, _, _ in got] == list(range(12))
    assert all(in_task for _, _, in_task in got)
    if ex.backend == "native":  # worker processes, not this one
        assert os.getpid() not in {pid for _, pid, _ in got}


# -- graph format -------------------------------------------------------------------
def test_raw_graphs_and_nested_keys(ex):
    from dask._task_spec import Alias, DataNode, List, Task, TaskRef

    legacy = {"x": 1, "y": (inc, "x"), "z": (add, "x", "y"), "a": "z", "l": ["x", (inc, "y")]}
    assert fedexec_dask_get(legacy, [["x"], "y", ["z", ["a", "l"]]]) == \
        ((1,), 2, (3, (3, [1, 3])))
    spec = {
        "x": DataNode("x", 5),
        "y": Task("y", inc, TaskRef("x")),
        "z": Alias("z", "y"),
        "w": Task("w", sum, List(TaskRef("y"), TaskRef("z"), 100)),
    }
    assert fedexec_dask_get(spec, ["w", "z"]) == (112, 6)


def test_missing_keys(ex):
    from dask._task_spec import Task, TaskRef

    with pytest.raises(KeyError):
        fedexec_dask_get({"x": 1}, "nope")
    with pytest.raises(KeyError):
        fedexec_dask_get({"x": 1}, [["x"], ["nope"]])
    with pytest.raises(KeyError, match="missing"):
        fedexec_dask_get({"y": Task("y", inc, TaskRef("missing"))}, "y")


def test_graph_is_culled(ex, tmp_path):
    log = str(tmp_path / "runs")
    dsk = {"a": (counted, log, 1), "b": (counted, log, 2), "c": (inc, "a")}
    assert fedexec_dask_get(dsk, "c") == 11
    assert executions(log) == 1  # "b" is not needed, so it never ran


# -- no data through the driver ------------------------------------------------------
def test_dependencies_travel_as_refs_between_workers(ex, tmp_path, monkeypatch):
    """Intermediate values go task to task as resolved ObjectRef arguments: the
    calling thread never deserializes one (each load of a ``Tracked`` is logged)."""
    log = str(tmp_path / "loads")
    parts = [dask.delayed(make_tracked)(i, log) for i in range(4)]
    merged = dask.delayed(merge_tracked)(dask.delayed(merge_tracked)(parts[0], parts[1]),
                                         dask.delayed(merge_tracked)(parts[2], parts[3]))
    result = dask.delayed(total)(merged)

    submitted = []
    submit_one = ex._submit_one

    def recording(fn, args, kwargs, options):
        submitted.append((options.name, args))
        return submit_one(fn, args, kwargs, options)

    monkeypatch.setattr(ex, "_submit_one", recording)  # what submit and options() use
    got = result.compute(scheduler=fedexec_dask_get)
    monkeypatch.undo()
    assert got == sum(sum(range(i, i + 100)) for i in range(4))
    # one fedexec task per graph task, each dependency a top-level ObjectRef argument
    assert len(submitted) == 8
    for name, args in submitted:
        assert name.startswith("dask:")
        node, dep_keys, *deps = args
        assert len(deps) == len(dep_keys) == len(node.dependencies)
        assert all(isinstance(d, fedexec.ObjectRef) for d in deps)
    with open(log) as f:
        loads = [tuple(map(int, line.split())) for line in f]
    assert len(loads) >= 7  # every Tracked was loaded by its consumer task ...
    assert (os.getpid(), threading.get_ident()) not in loads  # ... never by the driver
    if ex.backend == "native":
        assert os.getpid() not in {pid for pid, _ in loads}


# -- errors ------------------------------------------------------------------------
def test_errors_surface_as_the_original_type(ex):
    with pytest.raises(CustomError, match="failed on 1") as info:
        fedexec_dask_get({"x": 1, "y": (fail, "x"), "z": (inc, "y")}, "z")
    assert isinstance(info.value, fedexec.TaskError)
    assert info.value.args == ("failed on 1",)

    b = db.from_sequence(range(10), npartitions=5).map(fail_on, bad=7)
    with pytest.raises(CustomError, match="failed on 7"):
        b.sum().compute(scheduler=fedexec_dask_get)
    x = da.ones((10, 10), chunks=5).map_blocks(fail, exc_type=ZeroDivisionError, dtype=float)
    with pytest.raises(ZeroDivisionError):
        x.sum().compute(scheduler=fedexec_dask_get)
    # the executor is still usable afterwards
    assert db.from_sequence(range(5)).sum().compute(scheduler=fedexec_dask_get) == 10


# -- persist ------------------------------------------------------------------------
def test_persist_reuses_stored_chunks(ex, tmp_path):
    log = str(tmp_path / "runs")
    b = db.from_sequence(range(8), npartitions=4).map(lambda i: counted(log, i))
    (bp,) = fedexec_persist(b, wait=True)
    assert executions(log) == 8
    refs = _persisted_refs(bp)
    assert len(refs) == 4 and all(r.done() for r in refs)  # one ref per partition

    expected = [i * 10 for i in range(8)]
    assert bp.compute(scheduler=fedexec_dask_get) == expected
    assert bp.map(inc).sum().compute(scheduler=fedexec_dask_get) == sum(expected) + 8
    assert bp.sum().compute(scheduler="sync") == sum(expected)  # other schedulers fetch
    assert executions(log) == 8  # never recomputed


def test_collection_persist_under_config(ex, tmp_path):
    """``x.persist()`` under ``dask.config.set(scheduler=fedexec_dask_get)`` keeps the
    chunks in fedexec's store (Dask's scheduler persist protocol)."""
    log = str(tmp_path / "runs")
    x = da.ones((20, 20), chunks=10).map_blocks(counted_block, log, dtype=float)
    before = executions(log)  # Dask may call the function on empty arrays for metadata
    with dask.config.set(scheduler=fedexec_dask_get):
        xp = x.persist()
        refs = _persisted_refs(xp)
        assert len(refs) == 4
        fedexec.wait(refs, num_returns=4, timeout=60)
        assert executions(log) == before + 4
        total_ = (xp + xp.T).sum().compute()
        again = xp[:5].mean().compute()
    assert total_ == 20 * 20 * 4 and again == 2
    assert executions(log) == before + 4  # never recomputed

    dd = _dd()
    import pandas as pd

    pdf = pd.DataFrame({"k": np.arange(30) % 3, "v": np.arange(30.0)})
    with dask.config.set(scheduler=fedexec_dask_get):
        (dfp,) = dask.persist(dd.from_pandas(pdf, npartitions=3))
        assert len(_persisted_refs(dfp)) == 3
        got = dfp.groupby("k").v.sum().compute()
    pd.testing.assert_series_equal(got, pdf.groupby("k").v.sum())


def test_store_freed_after_compute_and_with_persisted_collection():
    """Intermediate objects are freed once consumed; persisted chunks live exactly as
    long as the persisted collection (native store counters; chunks of 320 KB, above
    the size the native runtime keeps inline instead of in shared memory)."""
    ex = fedexec.init(backend="native", num_cpus=2)

    def objects(expected, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            n = ex._backend.stats()["store"]["num_objects"]
            if n == expected or time.monotonic() > deadline:
                return n
            time.sleep(0.05)

    x = da.random.default_rng(1).random((800, 800), chunks=200)
    assert (x + x.T).mean().compute(scheduler=fedexec_dask_get) == pytest.approx(
        (x + x.T).mean().compute(scheduler="sync"))
    assert objects(0) == 0
    (xp,) = fedexec_persist(x, wait=True)
    assert objects(16) == 16
    xp.sum().compute(scheduler=fedexec_dask_get)
    assert objects(16) == 16
    del xp
    gc.collect()
    assert objects(0) == 0


def test_persist_containers_and_delayed(ex, tmp_path):
    log = str(tmp_path / "runs")
    d = dask.delayed(counted)(log, 4)
    b = db.from_sequence(range(3), npartitions=3).map(lambda i: counted(log, i))
    out = fedexec_persist({"d": d, "parts": [b, 5]}, wait=True)
    assert executions(log) == 4
    (got,) = out
    assert got["parts"][1] == 5
    assert dask.compute(got["d"] + 1, got["parts"][0].sum(),
                        scheduler=fedexec_dask_get) == (41, 30)
    assert executions(log) == 4


def test_persist_error(ex):
    b = db.from_sequence(range(6), npartitions=3).map(fail_on, bad=4)
    with pytest.raises(CustomError, match="failed on 4"):
        fedexec_persist(b, wait=True)
    (bp,) = fedexec_persist(b)  # asynchronous: the error shows when computed
    with pytest.raises(CustomError, match="failed on 4"):
        bp.compute(scheduler=fedexec_dask_get)


# -- executors and options -----------------------------------------------------------
@pytest.mark.parametrize("backend", ["native", "local"])
def test_explicit_executor(backend):
    with fedexec.Executor(backend=backend, num_cpus=2) as ex:
        sched = FedexecDaskScheduler(ex, max_retries=0)
        b = db.from_sequence(range(6), npartitions=3).map(where)
        got = b.compute(scheduler=sched)
        assert [x for x, _, _ in got] == list(range(6))
        assert fedexec_dask_get({"x": (inc, 1)}, "x", executor=ex) == 2
        refs = fedexec_dask_get({"x": (inc, 1), "y": (inc, "x")}, ["x", "y"],
                                executor=ex, return_refs=True)
        assert all(isinstance(r, fedexec.ObjectRef) for r in refs)
        assert ex.get(list(refs)) == [2, 3]
        (xp,) = fedexec_persist(da.arange(6, chunks=2), executor=ex)
        assert xp.sum().compute(scheduler=sched) == 15
    assert not fedexec.is_initialized()  # the default executor was never created
    with pytest.raises(TypeError):
        FedexecDaskScheduler(object())
    with pytest.raises(ValueError):
        FedexecDaskScheduler(no_such_option=1)
    with pytest.raises(ValueError):
        FedexecDaskScheduler(num_cpus=-1)


def test_compute_inside_a_task(ex):
    """Inside a task, the scheduler uses the runtime running that task."""
    def job(n):
        import dask.bag as db
        from fedexec.integrations.dask import fedexec_dask_get

        return db.from_sequence(range(n), npartitions=3).map(inc).sum().compute(
            scheduler=fedexec_dask_get)

    assert ex.submit(job, 9).result(timeout=60) == sum(range(1, 10))


# -- Dask's own expectations of a get function ----------------------------------------
class TestDaskGetFunctionContract(GetFunctionTestMixin):
    """``dask.utils_test.GetFunctionTestMixin``: Dask's tests for any ``get``."""

    get = staticmethod(fedexec_dask_get)

    @pytest.fixture(autouse=True, params=["native", "local"])
    def _executor(self, request):
        fedexec.init(backend=request.param, num_cpus=2)
