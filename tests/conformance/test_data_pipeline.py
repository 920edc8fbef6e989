"""fedexec.data's classic pipeline API on every backend: ``window()``,
``repeat()``, ``DatasetPipeline`` stages and consumers, overlapped windows, and
actor pools kept across windows."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _data_support import MarkingSource, count_marks, data_executor_fixture, mark

import fedexec
import fedexec.data as fd
from fedexec.backends import capabilities
from fedexec.data.pipeline import WindowIndex, _window_seed

data_executor = data_executor_fixture()


def square(x):
    return {"data": x ** 2}


def test_the_classic_program():
    pipe = (fd.range(10000).window(blocks_per_window=2)
            .map(square)
            .filter(lambda r: r["data"] % 2 == 0)
            .flat_map(lambda r: [r, {"data": -r["data"]}]))
    expected = [v for x in range(0, 10000, 2) for v in ({"data": x * x}, {"data": -x * x})]
    assert isinstance(pipe, fd.DatasetPipeline)
    assert pipe.take(10) == expected[:10]
    assert pipe.take_all() == expected
    assert pipe.count() == 10000


def test_windows_are_groups_of_blocks_each_a_dataset():
    sizes = []

    def record(window):
        assert isinstance(window, fd.Dataset)
        sizes.append(window.count())
        return window.map_batches(lambda b: {"id": b["id"] * 10})

    pipe = fd.range_table(100, parallelism=10).window(blocks_per_window=3).foreach_window(record)
    assert "num_windows=4" in repr(pipe)
    assert [r["id"] for r in pipe.iter_rows()] == [10 * i for i in range(100)]
    assert sizes == [30, 30, 30, 10]
    # a materialized dataset is windowed by its blocks; a union by its output blocks
    mat = fd.range_table(40, parallelism=4).materialize()
    assert fd.range_table(40, parallelism=4).materialize().window(blocks_per_window=1) \
        .take_all() == mat.take_all()
    both = fd.range(5, parallelism=1).union(fd.range(5, parallelism=1))
    assert both.window(blocks_per_window=1).map(lambda x: x + 1).take_all() == \
        [1, 2, 3, 4, 5] * 2


def test_batches_span_windows_and_torch_batches():
    pipe = fd.range_table(50, parallelism=5).window(blocks_per_window=2)
    batches = [list(b["id"]) for b in pipe.iter_batches(batch_size=15)]
    assert batches == [list(range(i, min(i + 15, 50))) for i in range(0, 50, 15)]
    shuffled = [int(x) for b in pipe.iter_batches(batch_size=8, local_shuffle_buffer_size=10,
                                                  local_shuffle_seed=1) for x in b["id"]]
    assert sorted(shuffled) == list(range(50)) and shuffled != list(range(50))
    torch = pytest.importorskip("torch")
    tb = list(pipe.iter_torch_batches(batch_size=20, dtypes=torch.float32))
    assert [tuple(b["id"].shape) for b in tb] == [(20,), (20,), (10,)]
    assert tb[0]["id"].dtype == torch.float32


def test_repeat_and_epochs():
    assert fd.range(4).repeat(3).take_all() == [0, 1, 2, 3] * 3
    pipe = fd.range(6, parallelism=3).window(blocks_per_window=1).map(lambda x: x * 2).repeat(2)
    assert pipe.take_all() == [0, 2, 4, 6, 8, 10] * 2
    assert pipe.repeat(2).count() == 24
    epochs = list(pipe.iter_epochs())
    assert len(epochs) == 2 and all(e.take_all() == [0, 2, 4, 6, 8, 10] for e in epochs)
    forever = fd.range(3).repeat()
    assert forever.take(7) == [0, 1, 2, 0, 1, 2, 0]
    first_three = [e.take_all() for _, e in zip(range(3), forever.iter_epochs())]
    assert first_three == [[0, 1, 2]] * 3
    with pytest.raises(ValueError, match="forever"):
        forever.count()
    with pytest.raises(ValueError, match="repeat"):
        fd.range(3).repeat(0)


def test_show_and_errors_name_the_operator(capsys):
    fd.range(5).window(blocks_per_window=1).map(lambda x: {"v": x}).show(2)
    assert capsys.readouterr().out == "{'v': 0}\n{'v': 1}\n"

    def bad(x):
        if x == 3:
            raise KeyError("no three")
        return x

    with pytest.raises(KeyError, match="Map\\(bad\\)"):
        fd.range(10, parallelism=5).window(blocks_per_window=1).map(bad).take_all()
    with pytest.raises(TypeError, match="must return a Dataset"):
        fd.range(3).window().foreach_window(lambda w: 1).take_all()
    with pytest.raises(ValueError, match="blocks_per_window"):
        fd.range(3).window(blocks_per_window=0)
    # per-window stages check their arguments when called, not when the windows run
    pipe = fd.range(3).window()
    with pytest.raises(ValueError, match="repartition"):
        pipe.repartition_each_window(0)
    with pytest.raises(ValueError, match="batch_size"):
        pipe.map_batches(lambda b: b, batch_size=0)
    with pytest.raises(TypeError, match="map_batches"):
        pipe.map(Tag)
    with pytest.raises(KeyError, match="sort\\(\\): key columns \\['nope'\\]"):
        fd.range_table(4).window().sort_each_window("nope").take_all()


# --------------------------------------------------------------------------- overlap
class StampedSource(fd.Datasource):
    """``tasks`` read tasks of ``rows`` rows each; each leaves a ``read-<task>-<time>``
    file in ``directory`` when it starts (and then takes ``delay`` s)."""

    def __init__(self, tasks, rows, directory, delay):
        self.tasks, self.rows, self.directory, self.delay = tasks, rows, directory, delay

    def get_read_tasks(self, parallelism):
        return [fd.ReadTask(_StampedRead(i, self.rows, self.directory, self.delay),
                            fd.BlockMetadata(num_rows=self.rows, size_bytes=8 * self.rows))
                for i in range(self.tasks)]


class _StampedRead:
    def __init__(self, i, rows, directory, delay):
        self.i, self.rows, self.directory, self.delay = i, rows, directory, delay

    def __call__(self):
        stamp(self.directory, "read", self.i)
        time.sleep(self.delay)
        yield pa.table({"id": np.arange(self.i * self.rows, (self.i + 1) * self.rows)})


def stamp(directory, what, i):
    Path(directory, f"{what}-{i}-{time.time():.6f}-{uuid.uuid4().hex[:6]}").touch()


def stamps(directory, what):
    out = {}
    for name in os.listdir(directory):
        kind, i, t, _ = name.split("-")
        if kind == what:
            out[int(i)] = float(t)
    return out


def transform(batch, directory):
    window = int(batch["id"][0]) // 10
    time.sleep(1.5 if window == 0 else 0.1)  # window 0 transforms slowly
    stamp(directory, "done", window)
    return batch


@pytest.mark.timeout(120)
def test_the_next_window_reads_while_this_one_transforms(tmp_path):
    directory = str(tmp_path)
    pipe = fd.read_datasource(StampedSource(5, 10, directory, 0.1)) \
        .window(blocks_per_window=1) \
        .map_batches(transform, batch_size=None, fn_kwargs={"directory": directory})
    assert [r["id"] for r in pipe.iter_rows()] == list(range(50))
    reads, done = stamps(directory, "read"), stamps(directory, "done")
    assert sorted(reads) == sorted(done) == list(range(5))
    # windows 1 and 2 were read (and transformed) while window 0 was transforming
    assert reads[1] < done[0] and reads[2] < done[0] and done[1] < done[0]
    # at most 3 windows are held ahead of the consumer: window 3 waited for window 0
    assert reads[3] > done[0]


# --------------------------------------------------------------------------- actor pools
class Tag:
    def __init__(self, directory):
        mark(directory, "init")
        self.pid = os.getpid()

    def __call__(self, batch):
        return {"id": batch["id"], "pid": np.full(len(batch["id"]), self.pid)}


@pytest.mark.requires("actors")
@pytest.mark.timeout(120)
def test_an_actor_pool_is_kept_across_windows(tmp_path):
    directory = str(tmp_path)
    pipe = fd.range_table(120, parallelism=12).window(blocks_per_window=2).map_batches(
        Tag, concurrency=2, batch_size=None, fn_constructor_args=(directory,))
    rows = pipe.take_all()
    assert [r["id"] for r in rows] == list(range(120))
    assert count_marks(directory, "init") == 2  # 6 windows, one pool of 2
    assert len({r["pid"] for r in rows}) <= 2
    assert pipe.repeat(2).count() == 240
    assert count_marks(directory, "init") == 4  # each iteration has its own pool


# --------------------------------------------------------------------------- per-window ops
def windows_of(pipe):
    return [w.take_all() for w in pipe.iter_datasets()]


def test_random_shuffle_each_window_is_seeded_per_window_and_pass():
    base = fd.range(60, parallelism=6).window(blocks_per_window=2)
    pipe = base.random_shuffle_each_window(seed=7)
    rows = pipe.take_all()
    assert rows == pipe.take_all()  # reproducible
    parts = [rows[i:i + 20] for i in range(0, 60, 20)]
    assert [sorted(p) for p in parts] == [list(range(i, i + 20)) for i in range(0, 60, 20)]
    # each window is Dataset.random_shuffle with the seed made from (seed, pass, window)
    expected = [w.random_shuffle(seed=_window_seed(7, WindowIndex(0, k))).take_all()
                for k, w in enumerate(base.iter_datasets())]
    assert parts == expected
    # ... so windows of the same shape do not all get the same permutation
    assert len({tuple(x % 20 for x in p) for p in parts}) == 3
    assert rows != base.take_all()
    # passes differ; a pass of iter_epochs() is the same pass of the repeated pipeline
    twice = pipe.repeat(2)
    both = twice.take_all()
    assert both[:60] == rows and sorted(both[60:]) == list(range(60)) and both[60:] != rows
    assert [e.take_all() for e in twice.iter_epochs()] == [both[:60], both[60:]]
    # another seed, or none, gives another order
    assert base.random_shuffle_each_window(seed=8).take_all() != rows
    unseeded = base.random_shuffle_each_window()
    first, second = unseeded.take_all(), unseeded.take_all()
    assert sorted(first) == sorted(second) == list(range(60)) and first != second
    with pytest.raises(ValueError, match="seed"):
        base.random_shuffle_each_window(seed=-1)


def test_per_window_sort_shuffle_and_column_ops_match_pandas():
    df = pd.DataFrame({"id": np.arange(40), "v": (np.arange(40) * 7) % 11})
    ds = fd.from_pandas([df.iloc[i:i + 10] for i in range(0, 40, 10)])
    pipe = ds.window(blocks_per_window=2)
    got = pd.DataFrame(pipe.sort_each_window("v", descending=True).take_all())
    expected = pd.concat([df.iloc[i:i + 20].sort_values("v", ascending=False, kind="stable")
                          for i in (0, 20)], ignore_index=True)
    pd.testing.assert_frame_equal(got, expected)
    ops = (pipe.add_column("w", lambda b: b["v"] * 2).drop_columns(["id"])
           .rename_columns({"v": "value"}).select_columns(["w", "value"]))
    pd.testing.assert_frame_equal(
        pd.DataFrame(ops.take_all()),
        pd.DataFrame({"w": df["v"] * 2, "value": df["v"]}))
    assert [w.num_blocks() for w in pipe.repartition_each_window(5).iter_datasets()] == [5, 5]
    mixed = windows_of(pipe.randomize_block_order_each_window(seed=3))
    assert [sorted(r["id"] for r in w) for w in mixed] == [list(range(0, 20)),
                                                           list(range(20, 40))]
    assert str(pipe.schema()) == str(ds.schema())
    assert fd.range(3).filter(lambda x: x > 5).window().schema() is None


# --------------------------------------------------------------------------- writing
class RecordingSink(fd.Datasink):
    """Writes nothing; the driver-side calls it got are kept on the class."""

    calls: list = []

    def on_write_start(self):
        RecordingSink.calls.append("start")

    def write(self, blocks, ctx):
        return (ctx.run_id.split("_", 1)[1], ctx.task_index,
                sum(fd.BlockAccessor.for_block(b).num_rows() for b in blocks))

    def on_write_complete(self, results):
        RecordingSink.calls.append(("complete", results))

    def on_write_failed(self, error):
        RecordingSink.calls.append(("failed", error))


def test_pipeline_writes_files_in_its_order(tmp_path):
    df = pd.DataFrame({"id": np.arange(50), "half": np.arange(50) / 2,
                       "name": [f"r{i}" for i in range(50)]})
    pipe = fd.range_table(50, parallelism=5).window(blocks_per_window=2).map(
        lambda r: {"id": r["id"], "half": r["id"] / 2, "name": f"r{r['id']}"})
    for fmt, read, pandas_read in (("parquet", fd.read_parquet, pd.read_parquet),
                                   ("csv", fd.read_csv, pd.read_csv),
                                   ("json", fd.read_json,
                                    lambda p: pd.read_json(p, lines=True))):
        out = tmp_path / fmt
        getattr(pipe, f"write_{fmt}")(str(out))
        names = sorted(os.listdir(out))
        write = names[0].split("_")[0]
        # {write}_{pass}_{window}_{task}: one file per block, sorted in the pipeline's order
        assert names == [f"{write}_0000_{w:06d}_{t:06d}.{fmt}"
                         for w, tasks in ((0, 2), (1, 2), (2, 1)) for t in range(tasks)]
        pd.testing.assert_frame_equal(read(str(out)).to_pandas(), df)
        pd.testing.assert_frame_equal(
            pd.concat([pandas_read(out / n) for n in names], ignore_index=True), df)
    fd.range_table(6, parallelism=2).window(blocks_per_window=1).repeat(2).write_numpy(
        str(tmp_path / "npy"), column="id")
    back = fd.read_numpy(str(tmp_path / "npy")).take_all()
    assert [int(r["data"]) for r in back] == list(range(6)) * 2


def test_pipeline_write_calls_the_sink_once_and_names_a_failing_operator():
    RecordingSink.calls.clear()
    fd.range(9, parallelism=3).window(blocks_per_window=2).repeat(2).write_datasink(
        RecordingSink())
    assert RecordingSink.calls == ["start", ("complete", [
        ("0000_000000", 0, 3), ("0000_000000", 1, 3), ("0000_000001", 0, 3),
        ("0001_000000", 0, 3), ("0001_000000", 1, 3), ("0001_000001", 0, 3)])]

    def bad(x):
        if x == 7:
            raise KeyError("no seven")
        return x

    RecordingSink.calls.clear()
    with pytest.raises(KeyError, match="Map\\(bad\\)"):
        fd.range(9, parallelism=3).window(blocks_per_window=1).map(bad).write_datasink(
            RecordingSink())
    assert RecordingSink.calls[0] == "start" and len(RecordingSink.calls) == 2
    assert RecordingSink.calls[1][0] == "failed"
    assert isinstance(RecordingSink.calls[1][1], KeyError)
    with pytest.raises(ValueError, match="forever"):
        fd.range(3).repeat().write_parquet("unused")
    with pytest.raises(TypeError, match="Datasink"):
        fd.range(3).window().write_datasink(object())


def test_pipeline_stats_report_each_window_of_the_last_iteration(tmp_path):
    pipe = fd.range(30, parallelism=3).window(blocks_per_window=2).map(lambda x: x + 1)
    assert pipe.stats() == ""
    assert pipe.repeat(1).take_all() == list(range(1, 31))
    assert pipe.count() == 30
    report = pipe.stats()
    assert report.index("== Pass 0, window 0 ==") < report.index("== Pass 0, window 1 ==")
    assert "ReadRange->Map(<lambda>): 2 tasks executed" in report
    assert "ReadRange->Map(<lambda>): 1 tasks executed" in report
    assert "* Output rows: 20" in report and "* Output rows: 10" in report
    pipe.write_parquet(str(tmp_path))
    assert "->WriteParquet: 2 tasks executed" in pipe.stats()


# --------------------------------------------------------------------------- split
class Shard:
    """A training worker consuming its shard of a pipeline (an actor)."""

    def __init__(self, it):
        self.it = it

    def passes(self, n):
        return [[r["id"] for r in self.it.iter_rows()] for _ in range(n)]


@pytest.mark.requires("actors")
@pytest.mark.timeout(180)
def test_split_feeds_workers_from_one_iteration_of_the_pipeline(ex, tmp_path):
    directory = str(tmp_path)
    pipe = (fd.read_datasource(MarkingSource(120, 6, directory)).window(blocks_per_window=2)
            .map(lambda r: {"id": r["id"] + 1}).repeat(2))
    shards = pipe.split(2, equal=True)
    actors = [ex.actor(Shard, s) for s in shards]
    try:
        got = ex.get([a.passes.remote(2) for a in actors], timeout=120)
    finally:
        for a in actors:
            ex.kill(a)
    for k in range(2):  # each pass is one iteration: both repeats, every row twice
        rows = got[0][k] + got[1][k]
        assert sorted(rows) == sorted(list(range(1, 121)) * 2)
        assert len(got[0][k]) == len(got[1][k]) == 120
    assert count_marks(directory, "read") == 6 * 2 * 2  # 2 repeats per pass, 2 passes


def test_split_of_a_pipeline_needs_actors_and_a_good_n(backend_name):
    with pytest.raises(ValueError, match="split\\(\\) needs a number of splits"):
        fd.range(10).window().split(0)
    if "actors" in capabilities(backend_name):
        return
    with pytest.raises(fedexec.UnsupportedOnBackendError, match="split\\(\\) runs"):
        fd.range(10).window().split(2)


# --------------------------------------------------------------------------- rewindow
def test_rewindow_regroups_the_output_blocks_per_pass_or_across_passes():
    pipe = fd.range(60, parallelism=6).window(blocks_per_window=1).map(lambda x: x * 2)
    bigger = pipe.rewindow(blocks_per_window=4)
    assert [w.count() for w in bigger.iter_datasets()] == [40, 20]
    assert bigger.map(lambda x: x + 1).take_all() == [2 * i + 1 for i in range(60)]
    per_pass = pipe.repeat(2).rewindow(blocks_per_window=4)
    assert [w.count() for w in per_pass.iter_datasets()] == [40, 20, 40, 20]
    assert len(list(per_pass.iter_epochs())) == 2
    across = pipe.repeat(2).rewindow(blocks_per_window=4, preserve_epoch=False)
    assert [w.count() for w in across.iter_datasets()] == [40, 40, 40]
    assert across.take_all() == per_pass.take_all() == [2 * i for i in range(60)] * 2
    # the windows' places (seeds per window and pass) are the original pipeline's
    shuffled = pipe.random_shuffle_each_window(seed=1).repeat(2)
    assert shuffled.rewindow(blocks_per_window=3).take_all() == shuffled.take_all()
    with pytest.raises(ValueError, match="blocks_per_window"):
        pipe.rewindow(blocks_per_window=0)
