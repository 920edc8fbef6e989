"""fedexec.data's streaming execution on every backend: fusion, order, early
stopping, the memory budget, actor pools, errors naming the operator, stalls,
progress and stats."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pytest
from _data_support import MarkingSource, count_marks, data_executor_fixture, mark
from _support import block, gates_fixture, spin, wait_for_path

import fedexec
import fedexec.data as fd
from fedexec.backends import capabilities

data_executor = data_executor_fixture()
gates = gates_fixture()


def add_one(row):
    return {"id": row["id"] + 1}


def keep_even(row):
    return row["id"] % 2 == 0


def double(batch):
    return {"id": batch["id"] * 2}


# --------------------------------------------------------------------------- plan
def test_consecutive_transforms_fuse_into_the_read():
    ds = fd.range_table(100, parallelism=4).map(add_one).filter(keep_even).map_batches(double)
    assert ds.take_all() == [{"id": 2 * i} for i in range(2, 102, 2)]
    report = ds.stats()
    assert "Operator 1 ReadRangeTable->Map(add_one)->Filter(keep_even)->MapBatches(double): " \
           "4 tasks executed" in report
    assert "Operator 2" not in report
    assert "Remote cpu time" in report and "Output rows: 50" in report


def test_a_read_larger_than_the_target_block_size_returns_several_blocks():
    fd.DataContext.get_current().target_max_block_size = 1000  # bytes
    ds = fd.range_table(1000, parallelism=2)  # 4000 bytes per read task
    assert ds.num_blocks() == 8
    assert ds.take_all() == [{"id": i} for i in range(1000)]


def slow_start(batch):
    if batch["id"][0] < 10:
        time.sleep(0.5)  # the first block finishes last
    return batch


def test_outputs_keep_input_order_when_later_tasks_finish_first():
    ds = fd.range_table(100, parallelism=10).map_batches(slow_start, batch_size=None)
    assert [r["id"] for r in ds.iter_rows()] == list(range(100))


def test_take_starts_only_the_read_tasks_it_needs(tmp_path):
    ds = fd.read_datasource(MarkingSource(10_000_000, 1000, str(tmp_path)))
    start = time.monotonic()
    assert ds.take(10) == [{"id": i} for i in range(10)]
    assert time.monotonic() - start < 20  # generous: it returns in well under a second
    assert count_marks(str(tmp_path), "read") == 1
    assert ds.map(add_one).limit(5).take_all() == [{"id": i} for i in range(1, 6)]
    assert count_marks(str(tmp_path), "read") == 2


def test_take_after_a_batch_transform_reads_only_the_first_chunk(tmp_path):
    directory = str(tmp_path)
    ds = fd.read_datasource(MarkingSource(10_000_000, 10, directory, chunks=100))
    assert ds.map_batches(double, batch_size=8).take(3) == [{"id": 0}, {"id": 2}, {"id": 4}]
    # the limit cannot pass map_batches into the read, but a task stops after 3
    # output rows: its read yields one chunk of its 100 (at most the 2 tasks of the
    # slow start ran)
    reads = count_marks(directory, "read")
    assert 1 <= reads <= 2
    assert count_marks(directory, "chunk") <= reads


def test_count_of_a_read_with_known_rows_reads_nothing(tmp_path):
    directory = str(tmp_path)
    ds = fd.read_datasource(MarkingSource(1000, 10, directory))
    assert ds.count() == 1000 and ds.map(add_one).limit(15).count() == 15
    assert fd.range(10**12).count() == 10**12
    assert count_marks(directory, "read") == 0
    assert ds.filter(keep_even).count() == 500  # a filter must run
    assert count_marks(directory, "read") == 10


def test_take_after_a_filter_stops_reading_once_it_has_the_rows(tmp_path):
    ds = fd.read_datasource(MarkingSource(100_000, 1000, str(tmp_path))).filter(keep_even)
    assert ds.take(10) == [{"id": i} for i in range(0, 20, 2)]
    assert count_marks(str(tmp_path), "read") < 60  # of 1000: about the tasks in flight


def test_closing_the_iterator_stops_the_run_and_its_thread(tmp_path):
    directory = str(tmp_path)
    it = fd.read_datasource(MarkingSource(2000, 200, directory, delay=0.05)).iter_batches(
        batch_size=10)
    assert len(next(it)["id"]) == 10
    it.close()
    started = count_marks(directory, "read")
    time.sleep(1.0)
    assert count_marks(directory, "read") - started <= 10  # at most the tasks in flight
    assert count_marks(directory, "read") < 60
    assert not [t for t in threading.enumerate() if t.name.startswith("fedexec-data")]


# --------------------------------------------------------------------------- memory
def pad(batch):
    n = len(batch["id"])
    return {"id": batch["id"], "pad": np.zeros((n, 1024), dtype=np.uint8)}


def test_memory_budget_bounds_what_is_held_for_a_slow_consumer():
    ctx = fd.DataContext.get_current()
    ctx.memory_budget_bytes = 1 << 20  # 1 MiB; each block is 256 KiB
    ds = fd.range_table(256 * 40, parallelism=40).map_batches(pad, batch_size=None)
    seen = 0
    for batch in ds.iter_batches(batch_size=256, prefetch_batches=0):
        seen += len(batch["id"])
        time.sleep(0.01)
    assert seen == 256 * 40
    peak = ds._last_stats.peak_memory_usage
    block_bytes = 256 * 1032
    assert peak <= ctx.memory_budget_bytes + 2 * block_bytes, peak


# --------------------------------------------------------------------------- actors
class Tagger:
    def __init__(self, directory, offset=0):
        mark(directory, "init")
        self.offset = offset
        self.pid = os.getpid()

    def __call__(self, batch):
        n = len(batch["id"])
        return {"id": batch["id"] + self.offset, "pid": np.full(n, self.pid)}


@pytest.mark.requires("actors")
def test_actor_pool_constructs_the_class_once_per_actor(tmp_path):
    directory = str(tmp_path)
    ds = fd.range_table(400, parallelism=20).map_batches(
        Tagger, batch_size=10, concurrency=2, fn_constructor_args=(directory,),
        fn_constructor_kwargs={"offset": 1000})
    rows = ds.take_all()
    assert [r["id"] for r in rows] == list(range(1000, 1400))
    assert count_marks(directory, "init") == 2  # 40 batches, 2 actors, 2 constructions
    assert "Actors: 2" in ds.stats()
    ds.count()
    assert count_marks(directory, "init") == 4  # each run has its own pool


@pytest.mark.requires("actors")
def test_autoscaling_actor_pool_stays_within_its_bounds(tmp_path):
    directory = str(tmp_path)
    source = fd.range_table(300, parallelism=30).materialize()
    ds = source.map(add_one).map_batches(
        Tagger, batch_size=5, concurrency=(1, 3), fn_constructor_args=(directory,))
    assert [r["id"] for r in ds.take_all()] == list(range(1, 301))
    assert 1 <= count_marks(directory, "init") <= 3
    assert "Map(add_one)->MapBatches(Tagger)" in ds.stats()  # fused into the actors


class Plus:
    def __call__(self, batch):
        return {"item": batch["item"] + 1}


@pytest.mark.requires("actors")
def test_a_pool_holding_every_cpu_is_warned_about(ex):
    cpus = int(ex.cluster_resources()["CPU"])
    ds = fd.from_items(list(range(20))).map_batches(Plus, concurrency=cpus, num_cpus=1)
    with pytest.warns(RuntimeWarning, match="hold all"):
        assert ds.take_all() == list(range(1, 21))  # no other task needs a CPU here


def test_actor_pool_on_a_backend_without_actors_fails_before_anything_runs(backend_name,
                                                                           tmp_path):
    if "actors" in capabilities(backend_name):
        pytest.skip(f"{backend_name} has actors")
    directory = str(tmp_path)
    ds = fd.read_datasource(MarkingSource(100, 4, directory)).map_batches(
        Tagger, concurrency=1, fn_constructor_args=(directory,))
    with pytest.raises(fedexec.UnsupportedOnBackendError, match=r"no actors.*use a function"):
        ds.take_all()
    assert count_marks(directory, "read") == 0


# --------------------------------------------------------------------------- faults
def die_once(batch, directory):
    marker = os.path.join(directory, "died")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return batch


@pytest.mark.requires("worker_processes")
def test_a_task_whose_worker_dies_is_retried(tmp_path):
    ds = fd.range_table(40, parallelism=4).map_batches(die_once, fn_args=(str(tmp_path),))
    assert [r["id"] for r in ds.take_all()] == list(range(40))
    assert os.path.exists(tmp_path / "died")


class SlowTagger(Tagger):
    def __init__(self, directory):
        super().__init__(directory)
        mark(directory, f"pid{os.getpid()}")

    def __call__(self, batch):
        time.sleep(0.05)
        return super().__call__(batch)


@pytest.mark.requires("actors", "worker_processes", "actor_restarts")
def test_an_actor_killed_mid_run_is_restarted_and_its_calls_retried(tmp_path):
    import signal

    directory = str(tmp_path)
    ds = fd.range_table(400, parallelism=40).map_batches(
        SlowTagger, batch_size=10, concurrency=2, fn_constructor_args=(directory,))
    it = ds.iter_rows()
    rows = [next(it) for _ in range(20)]
    pids = [int(n.split("-")[0][3:]) for n in os.listdir(directory) if n.startswith("pid")]
    os.kill(pids[0], signal.SIGKILL)
    rows.extend(it)
    assert [r["id"] for r in rows] == list(range(400))
    # the actors of the killed process (one, or both where a backend hosts several
    # actors in one worker process) were constructed again
    assert count_marks(directory, "init") == 2 + pids.count(pids[0])


# --------------------------------------------------------------------------- errors
def reject_57(row):
    if row["id"] == 57:
        raise ValueError("row 57 is bad")
    return True


class BrokenInit:
    def __init__(self):
        raise RuntimeError("cannot load the model")

    def __call__(self, batch):
        return batch


def test_an_error_in_user_code_names_the_operator():
    ds = fd.range_table(100, parallelism=4).map(add_one).filter(reject_57)
    with pytest.raises(ValueError, match="row 57 is bad") as info:
        ds.take_all()
    assert isinstance(info.value, fedexec.TaskError)
    assert "in operator Filter(reject_57)" in str(info.value)
    assert "ReadRangeTable->Map(add_one)->Filter(reject_57)" in str(info.value)


@pytest.mark.requires("actors")
def test_an_error_in_an_actor_pool_class_names_the_operator():
    ds = fd.range_table(10).map_batches(BrokenInit, concurrency=1)
    with pytest.raises(fedexec.FedexecError, match="cannot load the model") as info:
        ds.take_all()
    assert "in operator MapBatches(BrokenInit)" in str(info.value)


def fail_when_the_other_runs(batch, directory, release):
    """Block 0 fails once block 1's task runs; block 1 spins until cancelled."""
    first = int(batch["id"][0])
    if first == 0:
        assert wait_for_path(os.path.join(directory, "started"))
        raise ValueError("block 0 fails")
    spin(os.path.join(directory, "started"), release, os.path.join(directory, "interrupted"))
    return batch


@pytest.mark.requires("cancel_running")
def test_an_error_cancels_the_tasks_still_running(tmp_path, gates):
    gate = gates()
    directory = str(tmp_path)
    ds = fd.range_table(40, parallelism=4).map_batches(
        fail_when_the_other_runs, batch_size=None, fn_args=(directory, gate.release))
    with pytest.raises(ValueError, match="block 0 fails"):
        ds.take_all()
    assert wait_for_path(os.path.join(directory, "interrupted"), timeout=20)


def hang(batch, release):
    block(release)
    return batch


def test_a_stalled_run_raises_naming_what_waits(gates):
    gate = gates()
    fd.DataContext.get_current().stall_timeout_s = 1.5
    ds = fd.range_table(10, parallelism=2).map_batches(hang, fn_args=(gate.release,))
    with pytest.raises(fd.DataStallError, match=r"no progress") as info:
        ds.take_all()
    assert isinstance(info.value, TimeoutError)
    assert "MapBatches(hang): 2 tasks in flight" in str(info.value)
    assert "stall_timeout_s" in str(info.value)


# --------------------------------------------------------------------------- runtimes
def sum_inside_a_task(n):
    import fedexec.data as fd

    return sum(fd.range(n, parallelism=2).map(lambda x: x * 2).take_all())


def take_all_of(ds):
    return ds.take_all()


def test_a_dataset_consumed_inside_a_task_runs_on_that_tasks_runtime(ex):
    assert ex.get(ex.submit(sum_inside_a_task, 100), timeout=60) == 9900
    lazy = fd.range(10, parallelism=2).map(lambda x: x + 1)
    assert ex.get(ex.submit(take_all_of, lazy), timeout=60) == list(range(1, 11))
    materialized = fd.range_table(10, parallelism=3).materialize()  # its blocks travel as refs
    assert ex.get(ex.submit(take_all_of, materialized), timeout=60) == [
        {"id": i} for i in range(10)]
    assert not fedexec.is_initialized()  # no default executor was made for it


def test_progress_bars_only_on_a_terminal(monkeypatch, capsys):
    from fedexec.data import progress

    fd.range(10).map(lambda x: x).take_all()
    assert "ReadRange" not in capsys.readouterr().err  # not a terminal: nothing
    monkeypatch.setattr(progress, "_stderr_is_terminal", lambda: True)
    fd.range(10, parallelism=2).map(lambda x: x).take_all()
    err = capsys.readouterr().err
    assert "ReadRange->Map(<lambda>)" in err and "10 rows" in err
    fd.DataContext.get_current().enable_progress_bars = False
    fd.range(10).take_all()
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- extension points
def negate_block(block):
    from fedexec.data.block import BlockAccessor

    out = block.set_column(0, "id", pa.compute.negate(block.column("id")))
    return [[BlockAccessor.for_block(out).get_metadata()], out]


def reverse_and_negate(bundles, ctx):
    """An all-to-all: every block negated by a task of its own, in reverse order."""
    blocks = [pair for bundle in bundles for pair in bundle.blocks][::-1]
    out = []
    for ref, _ in blocks:
        meta_ref, block_ref = ctx.submit(negate_block, ref, num_returns=2)
        (meta,) = ctx.executor.get(meta_ref)
        out.append(fd.RefBundle(((block_ref, meta),)))
    return out


def test_an_all_to_all_operator_gets_every_bundle_and_streams_its_output():
    from fedexec.data.plan import AllToAll

    ds = fd.range_table(40, parallelism=4).map(add_one)
    shuffled = fd.Dataset(AllToAll((ds._plan,), op_name="ReverseNegate", fn=reverse_and_negate))
    expected = [-(b * 10 + i + 1) for b in range(3, -1, -1) for i in range(10)]
    out = shuffled.map(add_one)
    assert [r["id"] for r in out.take_all()] == [v + 1 for v in expected]
    assert "Operator 2 ReverseNegate: 1 tasks executed, 4 blocks produced" in out.stats()


class FileSink(fd.Datasink):
    def __init__(self, directory):
        self.directory = directory
        self.completed = None

    def on_write_start(self):
        os.makedirs(self.directory, exist_ok=True)

    def write(self, blocks, ctx):
        rows = [r for b in blocks for r in fd.BlockAccessor.for_block(b).iter_rows()]
        path = os.path.join(self.directory, f"{ctx.run_id}-{ctx.task_index:04d}.txt")
        with open(path, "w") as f:
            f.write("\n".join(str(r["id"]) for r in rows))
        return {"path": path, "rows": len(rows)}

    def on_write_complete(self, results):
        self.completed = results


def test_a_datasink_writes_every_block_with_tasks(tmp_path):
    sink = FileSink(str(tmp_path / "out"))
    fd.range_table(30, parallelism=3).write_datasink(sink)
    assert [r["rows"] for r in sink.completed] == [10, 10, 10]
    written = [open(r["path"]).read().split("\n") for r in sink.completed]
    assert [int(v) for part in written for v in part] == list(range(30))
