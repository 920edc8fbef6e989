"""fedexec.data without a runtime: blocks and batches, read tasks, the optimizer's
rewrites, fusion and the limits handed up the physical plan."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import fedexec.data as fd
from fedexec.data.batcher import batch_blocks
from fedexec.data.block import BlockAccessor
from fedexec.data.columns import SelectColumns
from fedexec.data.combine import LimitOperator
from fedexec.data.compute import ActorPoolStrategy, TaskPoolStrategy, compute_for
from fedexec.data.datasource import RangeDatasource
from fedexec.data.operators import MapOperator
from fedexec.data.plan import Limit, MapOp, Read, optimize, plan_physical
from fedexec.data.transforms import MapBatches, MapRows

RESOURCES = {"CPU": 2.0, "memory": 1e9}


# --------------------------------------------------------------------------- package
def test_public_names_are_documented_and_import_is_lazy():
    assert len(set(fd.__all__)) == len(fd.__all__)
    for name in fd.__all__:
        assert (getattr(fd, name).__doc__ or "").strip(), name
    code = ("import sys, fedexec; assert 'pyarrow' not in sys.modules; "
            "from fedexec import data; import fedexec.data as fd; assert data is fd; "
            "print(fd.range.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "fedexec.data.read_api"


# --------------------------------------------------------------------------- blocks
def test_tabular_block_batches_in_every_format():
    table = pa.table({"a": [1, 2, 3], "s": ["x", "y", "z"]})
    acc = BlockAccessor.for_block(table)
    batch = acc.to_batch("numpy")
    assert batch["a"].tolist() == [1, 2, 3] and batch["s"].tolist() == ["x", "y", "z"]
    assert acc.to_batch("pandas").equals(pd.DataFrame({"a": [1, 2, 3], "s": ["x", "y", "z"]}))
    assert acc.to_batch("pyarrow") is table
    assert list(acc.iter_rows()) == [{"a": 1, "s": "x"}, {"a": 2, "s": "y"}, {"a": 3, "s": "z"}]
    with pytest.raises(ValueError, match="batch_format"):
        acc.to_batch("dicts")


def test_plain_rows_appear_as_item_and_come_back_plain():
    acc = BlockAccessor.for_block([3, 4, 5])
    batch = acc.to_batch("default")
    assert batch["item"].tolist() == [3, 4, 5]
    assert BlockAccessor.from_batch({"item": batch["item"] * 2}, plain=True) == [6, 8, 10]
    assert isinstance(BlockAccessor.from_batch({"item": batch["item"]}), pa.Table)
    assert BlockAccessor.for_block([{"k": 1}, (2,)]).to_batch("numpy")["item"].dtype == object
    assert BlockAccessor.for_block([1, 2]).to_batch("pandas")["item"].tolist() == [1, 2]
    assert BlockAccessor.from_batch([7, 8]) == [7, 8]


def test_tensor_columns_keep_their_shape():
    arr = np.arange(24).reshape(4, 2, 3)
    table = BlockAccessor.from_batch({"t": arr, "i": np.arange(4)})
    acc = BlockAccessor.for_block(table)
    np.testing.assert_array_equal(acc.to_batch("numpy")["t"], arr)
    rows = list(acc.iter_rows())
    np.testing.assert_array_equal(rows[2]["t"], arr[2])
    assert rows[2]["i"] == 2
    again = BlockAccessor.from_rows(rows)
    np.testing.assert_array_equal(BlockAccessor.for_block(again).to_batch("numpy")["t"], arr)


def test_a_dataframe_batch_becomes_a_block_without_starting_threads(monkeypatch):
    """A task converts every pandas batch it makes (two processes per two CPUs):
    pyarrow's own conversion would start a thread pool per batch of more than a
    hundred rows per column, which costs more than it saves on small columns."""
    import threading

    started = []
    real_start = threading.Thread.start

    def counting_start(self):
        started.append(self.name)
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    frame = pd.DataFrame({"k": np.arange(50_000), "x": np.arange(50_000) * 0.5})
    block = BlockAccessor.from_batch(frame)
    assert started == []
    assert block.equals(pa.table({"k": np.arange(50_000), "x": np.arange(50_000) * 0.5}))


def test_from_batch_rejects_what_cannot_be_a_block():
    with pytest.raises(ValueError, match="equal lengths"):
        BlockAccessor.from_batch({"a": [1, 2], "b": [1]})
    with pytest.raises(TypeError, match="dict of arrays"):
        BlockAccessor.from_batch(42)


def test_concat_keeps_order_and_refuses_to_mix_kinds():
    t = pa.table({"a": [1]})
    assert BlockAccessor.concat([t, t.slice(0, 0), t]).column("a").to_pylist() == [1, 1]
    assert BlockAccessor.concat([[1], [], [2, 3]]) == [1, 2, 3]
    assert BlockAccessor.concat([[], t]).num_rows == 1  # empty blocks are skipped
    with pytest.raises(ValueError, match="plain rows"):
        BlockAccessor.concat([t, [1]])


def test_size_of_plain_rows_is_their_pickled_size():
    size = BlockAccessor.for_block(list(range(10_000))).size_bytes()
    assert 20_000 < size < 100_000


def test_batch_blocks_cuts_exact_batches_across_blocks():
    blocks = [pa.table({"a": list(range(i, i + 7))}) for i in range(0, 35, 7)]
    batches = list(batch_blocks(iter(blocks), 10))
    assert [b.num_rows for b in batches] == [10, 10, 10, 5]
    assert pa.concat_tables(batches).column("a").to_pylist() == list(range(35))
    assert [b.num_rows for b in batch_blocks(iter(blocks), 10, drop_last=True)] == [10, 10, 10]
    assert [b.num_rows for b in batch_blocks(iter(blocks), None)] == [7] * 5
    with pytest.raises(ValueError, match="batch_size"):
        list(batch_blocks(iter(blocks), 0))


# --------------------------------------------------------------------------- reading
def test_read_tasks_cover_the_range_and_honour_limit_and_columns():
    tasks = RangeDatasource(100, tabular=True).get_read_tasks(3)
    assert [t.metadata.num_rows for t in tasks] == [33, 33, 34]
    rows = [r for t in tasks for b in t() for r in BlockAccessor.for_block(b).iter_rows()]
    assert rows == [{"id": i} for i in range(100)]
    limited = tasks[1].with_limit(5)
    assert limited.metadata.num_rows == 5
    assert [r["id"] for b in limited() for r in BlockAccessor.for_block(b).iter_rows()] == \
        list(range(33, 38))
    (only,) = list(tasks[0].with_columns(["id"])())
    assert only.column_names == ["id"]
    with pytest.raises(ValueError, match="int n >= 0"):
        RangeDatasource(-1, tabular=False)


# --------------------------------------------------------------------------- optimizer
def _read(n=1000):
    return Read(datasource=RangeDatasource(n, tabular=True), parallelism=10)


def _map(child, stage, **kw):
    return MapOp((child,), stage=stage, **kw)


def ident(row):
    return row


def test_limit_is_pushed_into_the_read_through_row_preserving_maps():
    plan = optimize(Limit((_map(_read(), MapRows(ident, "map")),), n=7))
    assert isinstance(plan, Limit) and plan.n == 7
    assert plan.inputs[0].inputs[0].limit == 7
    kept = optimize(Limit((_map(_read(), MapRows(ident, "filter")),), n=7))
    assert kept.inputs[0].inputs[0].limit is None  # a filter may need more rows
    merged = optimize(Limit((Limit((_read(),), n=3),), n=9))
    assert merged.n == 3 and merged.inputs[0].limit == 3


def test_select_columns_is_pushed_into_the_read():
    plan = optimize(_map(_read(), SelectColumns(["id"])))
    assert isinstance(plan, Read) and plan.columns == ("id",)
    plan = optimize(_map(Limit((_read(),), n=4), SelectColumns(["id"])))
    assert isinstance(plan, Limit) and plan.inputs[0].columns == ("id",)


def test_transforms_fuse_into_the_read_unless_resources_differ():
    mapped = _map(_map(_read(), MapRows(ident, "map")), MapRows(ident, "filter"))
    (op,) = plan_physical(mapped, fd.DataContext(), RESOURCES)
    assert op.name == "ReadRangeTable->Map(ident)->Filter(ident)"
    assert op.is_source and len(op.read_tasks()) == 10
    other = _map(mapped, MapBatches(ident, batch_size=8, batch_format="numpy"),
                 options={"num_gpus": 1})
    ops = plan_physical(other, fd.DataContext(), RESOURCES)
    assert [o.name for o in ops] == ["ReadRangeTable->Map(ident)->Filter(ident)",
                                     "MapBatches(ident)"]
    assert ops[1].min_rows_per_task == 8


class Model:
    def __call__(self, batch):
        return batch


def test_task_maps_before_an_actor_pool_run_in_its_actors_but_reads_do_not():
    pool = ActorPoolStrategy(1, 2)
    stage = MapBatches(Model, batch_size=4, batch_format="numpy")
    ops = plan_physical(_map(_read(), stage, compute=pool), fd.DataContext(), RESOURCES)
    assert [o.name for o in ops] == ["ReadRangeTable", "MapBatches(Model)"]
    inner = _map(Limit((_read(),), n=50), MapRows(ident, "map"))
    ops = plan_physical(_map(inner, stage, compute=pool), fd.DataContext(), RESOURCES)
    assert [o.name for o in ops] == ["ReadRangeTable", "Limit[50]", "Map(ident)->MapBatches(Model)"]


def test_a_limit_is_handed_up_through_row_preserving_operators():
    plan = Limit((_map(_read(), MapRows(ident, "map")),), n=12)
    source, limit = plan_physical(plan, fd.DataContext(), RESOURCES)
    assert isinstance(limit, LimitOperator) and isinstance(source, MapOperator)
    assert source.row_limit == 12
    # a flat_map's output needs at most 12 rows, but its input may need any number
    plan = Limit((_map(_read(), MapRows(ident, "flat_map"), options={"num_cpus": 2}),), n=12)
    source, flat, _ = plan_physical(plan, fd.DataContext(), RESOURCES)
    assert (source.row_limit, flat.row_limit) == (None, 12)


def test_compute_strategy_from_concurrency():
    assert compute_for(ident, None) == TaskPoolStrategy(None)
    assert compute_for(ident, 3) == TaskPoolStrategy(3)
    assert compute_for(Model, None) == ActorPoolStrategy(1, None)
    assert compute_for(Model, 2) == ActorPoolStrategy(2, 2)
    assert compute_for(Model, (1, 4)) == ActorPoolStrategy(1, 4)
    for bad in (0, (2, 1), (0, 3), "2", (1, 2, 3)):
        with pytest.raises(ValueError):
            compute_for(Model, bad)
