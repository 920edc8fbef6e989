"""fedexec.data iteration extras on every backend: the local shuffle buffer,
torch batches (dtypes, shapes, devices, collate_fn), ``to_torch``, ``from_torch``
and ``Dataset.iterator()``."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from _data_support import data_executor_fixture

import fedexec.data as fd

try:
    import torch
except ImportError:  # scripts/test.sh installs it; elsewhere the torch tests skip
    torch = None

data_executor = data_executor_fixture()
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed "
                                 "(pip install torch==2.13.0)")


def ids(batches, column="id"):
    return [list(b[column]) for b in batches]


# --------------------------------------------------------------------------- local shuffle
def test_local_shuffle_mixes_rows_across_blocks_reproducibly():
    ds = fd.range_table(100, parallelism=10)  # blocks of 10 rows

    def run(seed):
        return ids(ds.iter_batches(batch_size=7, local_shuffle_buffer_size=25,
                                   local_shuffle_seed=seed))

    first = run(3)
    assert [len(b) for b in first] == [7] * 14 + [2]
    rows = [r for b in first for r in b]
    assert sorted(rows) == list(range(100)) and rows != list(range(100))
    assert run(3) == first  # the seed makes it reproducible
    assert run(4) != first
    # a batch is drawn once 25 + 7 rows are held: the first one comes from the first
    # 4 blocks (40 rows), and it mixes rows from several blocks
    assert max(first[0]) < 40 and len({r // 10 for r in first[0]}) > 1


def test_local_shuffle_drop_last_and_plain_rows():
    batches = list(fd.range(50, parallelism=5).iter_batches(
        batch_size=8, local_shuffle_buffer_size=10, local_shuffle_seed=0, drop_last=True))
    assert [len(b["item"]) for b in batches] == [8] * 6
    assert len({int(x) for b in batches for x in b["item"]}) == 48


def test_local_shuffle_needs_a_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        fd.range(10).iter_batches(batch_size=None, local_shuffle_buffer_size=4)
    with pytest.raises(ValueError, match="local_shuffle_buffer_size"):
        fd.range(10).iter_batches(local_shuffle_buffer_size=0)


# --------------------------------------------------------------------------- torch batches
def tabular(n=20):
    rng = np.random.default_rng(1)
    return fd.from_items([{"x": float(i), "n": i, "img": rng.random((2, 3))} for i in range(n)],
                         parallelism=3)


@needs_torch
def test_iter_torch_batches_dtypes_and_shapes():
    batches = list(tabular().iter_torch_batches(batch_size=8, dtypes={"x": torch.float32}))
    assert [b["x"].shape for b in batches] == [(8,), (8,), (4,)]
    first = batches[0]
    assert first["x"].dtype == torch.float32 and first["n"].dtype == torch.int64
    assert first["img"].shape == (8, 2, 3) and first["img"].dtype == torch.float64
    assert first["n"].tolist() == list(range(8))
    assert first["x"].device.type == "cpu"
    one = next(iter(tabular().iter_torch_batches(batch_size=4, dtypes=torch.float16)))
    assert {t.dtype for t in one.values()} == {torch.float16}


@needs_torch
def test_iter_torch_batches_with_a_collate_fn():
    def collate(batch):
        return torch.as_tensor(batch["n"]) * 2, torch.as_tensor(batch["x"])

    out = list(tabular(10).iter_torch_batches(batch_size=5, collate_fn=collate))
    assert [a.tolist() for a, _ in out] == [[0, 2, 4, 6, 8], [10, 12, 14, 16, 18]]
    with pytest.raises(ValueError, match="dtypes"):
        tabular().iter_torch_batches(collate_fn=collate, dtypes=torch.float32)


@needs_torch
def test_iter_torch_batches_of_plain_rows_and_a_string_column():
    batch = next(iter(fd.range(10).iter_torch_batches(batch_size=10)))
    assert batch["item"].tolist() == list(range(10))
    words = fd.from_items([{"w": "a", "n": 1}, {"w": "b", "n": 2}])
    with pytest.raises(TypeError, match="column 'w'"):
        list(words.iter_torch_batches())
    batch = next(iter(words.select_columns(["n"]).iter_torch_batches()))
    assert batch["n"].tolist() == [1, 2]


def test_torch_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
        fd.range(3).iter_torch_batches()
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
        fd.from_torch([1, 2, 3])


# --------------------------------------------------------------------------- to_torch / from_torch
@needs_torch
def test_to_torch_gives_feature_and_label_tensors():
    ds = fd.from_items([{"a": i, "b": 2.0 * i, "y": i % 2} for i in range(10)], parallelism=2)
    loader = ds.to_torch(label_column="y", batch_size=4, feature_column_dtypes=torch.float32)
    assert isinstance(loader, torch.utils.data.IterableDataset)
    batches = list(loader)
    features, label = batches[0]
    assert features.shape == (4, 2) and features.dtype == torch.float32
    assert features.tolist() == [[float(i), 2.0 * i] for i in range(4)]
    assert label.shape == (4, 1) and label.flatten().tolist() == [0, 1, 0, 1]
    assert [f.shape[0] for f, _ in batches] == [4, 4, 2]
    assert len(list(loader)) == 3  # each pass over it is a pass over the data
    grouped = ds.to_torch(feature_columns={"left": ["a"], "both": ["a", "b"]}, batch_size=5,
                          unsqueeze_feature_tensors=False)
    features, label = next(iter(grouped))
    assert label is None
    assert features["left"].shape == (5,) and features["both"].shape == (5, 2)
    lists = ds.to_torch(feature_columns=[["a"], ["b"]], label_column="y", batch_size=10,
                        label_column_dtype=torch.float64, unsqueeze_label_tensor=False)
    (left, right), label = next(iter(lists))
    assert left.shape == right.shape == (10, 1) and label.shape == (10,)
    assert label.dtype == torch.float64


@needs_torch
def test_from_torch_reads_samples_as_plain_rows():
    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 25

        def __getitem__(self, i):
            return torch.tensor([i, i * i]), i % 3

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(range(7))

    ds = fd.from_torch(Squares(), parallelism=4)
    assert ds.count() == 25
    rows = ds.take_all()
    assert [(x.tolist(), y) for x, y in rows] == [([i, i * i], i % 3) for i in range(25)]
    assert fd.from_torch(Stream()).take_all() == list(range(7))
    with pytest.raises(TypeError, match="torch Dataset"):
        fd.from_torch(object())


def test_dataset_iterator_is_a_data_iterator_each_pass_a_run():
    it = fd.range_table(30, parallelism=3).iterator()
    assert isinstance(it, fd.DataIterator)
    assert [r["id"] for r in it.iter_rows()] == list(range(30))
    assert ids(it.iter_batches(batch_size=12)) == [list(range(12)), list(range(12, 24)),
                                                   list(range(24, 30))]
