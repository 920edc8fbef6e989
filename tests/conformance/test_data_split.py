"""fedexec.data splits on every backend: ``split``, ``split_at_indices``,
``train_test_split`` (exact rows against pandas, in order) and ``streaming_split``
(n iterators fed by one run, consumed by actors at once)."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pandas as pd
import pytest
from _data_support import MarkingSource, count_marks, data_executor_fixture

import fedexec
import fedexec.data as fd
from fedexec.backends import capabilities

data_executor = data_executor_fixture()


@pytest.fixture
def df():
    rng = np.random.default_rng(11)
    return pd.DataFrame({"a": np.arange(300), "b": rng.random(300)})


def pieces(df, cuts=(40, 41, 170)):
    """``df`` cut into DataFrames of uneven sizes (one block each)."""
    bounds = [0, *cuts, len(df)]
    return [df.iloc[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def frame(ds):
    return ds.to_pandas().reset_index(drop=True)


# --------------------------------------------------------------------------- split
def test_split_cuts_whole_blocks_into_parts_of_about_equal_rows():
    parts = fd.range_table(100, parallelism=10).split(3)
    assert len(parts) == 3
    assert all(isinstance(p, fd.MaterializedDataset) for p in parts)
    rows = [[r["id"] for r in p.take_all()] for p in parts]
    assert list(itertools.chain(*rows)) == list(range(100))  # in order, nothing lost
    assert all(abs(len(r) - 100 / 3) <= 10 for r in rows)  # within one block of even
    assert sum(p.num_blocks() for p in parts) == 10  # no block was cut


def test_split_equal_gives_equal_rows_and_drops_fewer_than_n(df):
    parts = fd.from_pandas(pieces(df)).split(7, equal=True)
    assert [p.count() for p in parts] == [42] * 7  # 300 // 7; 6 rows dropped
    got = pd.concat([frame(p) for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(got, df.iloc[:294].reset_index(drop=True))


def test_split_of_plain_rows_and_more_parts_than_blocks():
    parts = fd.range(10, parallelism=2).split(4)
    assert list(itertools.chain(*(p.take_all() for p in parts))) == list(range(10))
    assert [p.count() for p in fd.range(10, parallelism=2).split(4, equal=True)] == [2] * 4
    with pytest.raises(ValueError, match="n >= 1"):
        fd.range(10).split(0)


def test_split_at_indices_matches_pandas_slices(df):
    ds = fd.from_pandas(pieces(df))
    parts = ds.split_at_indices([10, 10, 41, 200, 500])
    bounds = [0, 10, 10, 41, 200, 300, 300]
    assert len(parts) == 6
    for part, (lo, hi) in zip(parts, itertools.pairwise(bounds)):
        expected = df.iloc[lo:hi].reset_index(drop=True)
        if hi == lo:
            assert part.count() == 0 and part.take_all() == []
        else:
            pd.testing.assert_frame_equal(frame(part), expected)


def test_split_at_indices_rejects_unsorted_or_negative_indices():
    ds = fd.range(10)
    with pytest.raises(ValueError, match="sorted"):
        ds.split_at_indices([5, 2])
    with pytest.raises(ValueError, match=">= 0"):
        ds.split_at_indices([-1])


def test_train_test_split_by_fraction_and_by_count(df):
    ds = fd.from_pandas(pieces(df))
    train, test = ds.train_test_split(0.3)
    at = int(300 * (1 - 0.3))
    pd.testing.assert_frame_equal(frame(train), df.iloc[:at].reset_index(drop=True))
    pd.testing.assert_frame_equal(frame(test), df.iloc[at:].reset_index(drop=True))
    train, test = ds.train_test_split(45)
    assert (train.count(), test.count()) == (255, 45)
    assert [r["a"] for r in test.take_all()] == list(range(255, 300))
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\)"):
            ds.train_test_split(bad)
    with pytest.raises(ValueError, match=r"\(0, 300\)"):
        ds.train_test_split(300)


def test_train_test_split_with_shuffle_is_seeded():
    ds = fd.range(100, parallelism=4)
    train1, test1 = ds.train_test_split(0.2, shuffle=True, seed=5)
    _, test2 = ds.train_test_split(0.2, shuffle=True, seed=5)
    assert test1.take_all() == test2.take_all()
    assert sorted(train1.take_all() + test1.take_all()) == list(range(100))
    assert train1.take_all() != list(range(80))
    # the rows are random_shuffle(seed=seed)'s, cut as without shuffle
    assert train1.take_all() + test1.take_all() == ds.random_shuffle(seed=5).take_all()
    assert ds.train_test_split(0.2, shuffle=True, seed=6)[1].take_all() != test1.take_all()
    with pytest.raises(ValueError, match="seed"):
        ds.train_test_split(0.2, shuffle=True, seed=-1)


# --------------------------------------------------------------------------- streaming_split
class Consumer:
    """A training worker: consumes its split (in its own process on native)."""

    def __init__(self, it):
        self.it = it

    def epochs(self, n, column="id"):
        return [[r[column] for r in self.it.iter_rows()] for _ in range(n)]

    def torch_shapes(self):
        import torch

        out = []
        for batch in self.it.iter_torch_batches(batch_size=8, dtypes={"id": torch.float32}):
            out.append((tuple(batch["id"].shape), str(batch["id"].dtype),
                        tuple(batch["v"].shape), str(batch["v"].dtype)))
        return out

    def first_error(self):
        try:
            list(self.it.iter_rows())
        except Exception as e:
            return type(e).__name__, str(e), isinstance(e, ZeroDivisionError)
        return None


def consume(ex, iterators, method, *args):
    actors = [ex.actor(Consumer, it) for it in iterators]
    try:
        return ex.get([getattr(a, method).remote(*args) for a in actors], timeout=90)
    finally:
        for a in actors:
            ex.kill(a)


@pytest.mark.requires("actors")
@pytest.mark.timeout(180)
def test_streaming_split_feeds_two_actors_at_once_with_every_row_once(ex):
    its = fd.range_table(200, parallelism=10).map(add_one).streaming_split(2)
    got = [epochs[0] for epochs in consume(ex, its, "epochs", 1)]
    assert sorted(got[0] + got[1]) == list(range(1, 201))  # none lost, none twice
    assert all(rows for rows in got)
    assert all(rows == sorted(rows) for rows in got)  # each in the run's order


def add_one(row):
    return {"id": row["id"] + 1}


@pytest.mark.requires("actors")
@pytest.mark.timeout(180)
def test_streaming_split_shutdown_ends_the_coordinator(ex):
    its = fd.range_table(20, parallelism=4).streaming_split(2)
    got = [epochs[0] for epochs in consume(ex, its, "epochs", 1)]
    assert sorted(got[0] + got[1]) == list(range(20))
    its[0].shutdown()
    its[1].shutdown()  # the same coordinator: already ended, no error
    with pytest.raises(fedexec.ActorDiedError):
        list(its[1].iter_rows())


@pytest.mark.requires("actors")
@pytest.mark.timeout(180)
def test_streaming_split_equal_gives_every_consumer_the_same_rows(ex, df):
    its = fd.from_pandas(pieces(df, (7, 100, 101, 150, 290))).streaming_split(3, equal=True)
    got = [epochs[0] for epochs in consume(ex, its, "epochs", 1, "a")]
    assert [len(rows) for rows in got] == [100, 100, 100]
    its = fd.range_table(101, parallelism=7).streaming_split(3, equal=True)
    got = [epochs[0] for epochs in consume(ex, its, "epochs", 1)]
    assert [len(rows) for rows in got] == [33, 33, 33]  # 2 rows dropped
    every = sorted(itertools.chain(*got))
    assert len(set(every)) == 99 and set(every) <= set(range(101))
    its = fd.range_table(101, parallelism=7).streaming_split(3, equal=True, drop_remainder=False)
    got = [epochs[0] for epochs in consume(ex, its, "epochs", 1)]
    assert sorted(len(rows) for rows in got) == [33, 34, 34]  # none dropped
    assert sorted(itertools.chain(*got)) == list(range(101))


@pytest.mark.requires("actors")
@pytest.mark.timeout(180)
def test_streaming_split_each_iteration_is_a_new_epoch(ex, tmp_path):
    directory = str(tmp_path)
    ds = fd.read_datasource(MarkingSource(120, 6, directory))
    its = ds.streaming_split(2, equal=True)
    per_consumer = consume(ex, its, "epochs", 3)
    for epoch in range(3):
        rows = per_consumer[0][epoch] + per_consumer[1][epoch]
        assert sorted(rows) == list(range(120))
        assert len(per_consumer[0][epoch]) == len(per_consumer[1][epoch]) == 60
    assert count_marks(directory, "read") == 18  # one run per epoch, each read once


@pytest.mark.requires("actors")
@pytest.mark.timeout(180)
def test_streaming_split_torch_batches_in_consumers(ex):
    pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    ds = fd.range_table(64, parallelism=4).map_batches(
        lambda b: {"id": b["id"], "v": np.stack([b["id"], b["id"]], axis=1).astype(np.int32)})
    shapes = consume(ex, ds.streaming_split(2, equal=True), "torch_shapes")
    for batches in shapes:
        assert len(batches) == 4  # 32 rows each, batches of 8
        assert all(b == ((8,), "torch.float32", (8, 2), "torch.int32") for b in batches)


def explode(row):
    if row["id"] == 57:
        raise ZeroDivisionError("boom at 57")
    return row


@pytest.mark.requires("actors")
@pytest.mark.timeout(180)
def test_streaming_split_error_reaches_every_consumer_naming_the_operator(ex):
    its = fd.range_table(100, parallelism=4).map(explode).streaming_split(2)
    for _name, message, is_original in consume(ex, its, "first_error"):
        assert is_original and "boom at 57" in message
        assert "Map(explode)" in message


@pytest.mark.requires("actors")
@pytest.mark.timeout(180)
def test_streaming_split_slow_consumers_hold_the_run_back(tmp_path):
    directory = str(tmp_path)
    fd.DataContext.get_current().memory_budget_bytes = 1  # the run may hold ~1 block ahead
    its = fd.read_datasource(MarkingSource(400, 40, directory)).streaming_split(2)
    got: dict[int, list[int]] = {0: [], 1: []}
    paused = threading.Event()
    resume = threading.Event()

    def worker(i):
        batches = its[i].iter_batches(batch_size=None, prefetch_batches=0)
        for k, batch in enumerate(batches):
            got[i].extend(batch["id"].tolist())
            if k == 2:
                paused.set()
                resume.wait(60)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    assert paused.wait(60)
    time.sleep(1.5)  # the consumers stall: the run must wait for them
    held_back = count_marks(directory, "read")
    resume.set()
    for t in threads:
        t.join(90)
    assert held_back <= 20, f"{held_back} of 40 blocks read while the consumers stalled"
    assert sorted(got[0] + got[1]) == list(range(400))
    assert count_marks(directory, "read") == 40


def test_streaming_split_needs_actors(backend_name):
    if "actors" in capabilities(backend_name):
        pytest.skip(f"{backend_name} has actors")
    with pytest.raises(fedexec.UnsupportedOnBackendError, match="split\\(n\\)"):
        fd.range(10).streaming_split(2)


def test_streaming_split_rejects_a_bad_n():
    with pytest.raises(ValueError, match="n >= 1"):
        fd.range(10).streaming_split(0)
