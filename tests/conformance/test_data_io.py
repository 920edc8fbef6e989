"""fedexec.data's file readers and writers on every backend: rows against pandas
reading the same files, in order; the pushdowns (limit, columns, filter, exact
counts) by what they leave undone (files opened, bytes read, tasks run); errors
naming the file and the operator; write-then-read round trips."""

from __future__ import annotations

import gzip
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from _data_support import count_marks, data_executor_fixture, mark

import fedexec
import fedexec.data as fd
from fedexec.data.formats import CSVDatasource, NumpyDatasource
from fedexec.data.parquet import ParquetDatasource

data_executor = data_executor_fixture()


def frame(lo: int, hi: int) -> pd.DataFrame:
    ids = np.arange(lo, hi)
    return pd.DataFrame({"id": ids, "x": ids * 0.5, "name": [f"n{i}" for i in ids]})


def write_parquet_files(directory, count: int, rows: int, **kwargs) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(directory, f"part-{i:03d}.parquet")
        frame(i * rows, (i + 1) * rows).to_parquet(path, **kwargs)
        paths.append(path)
    return paths


def assert_same(ds: fd.Dataset, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(ds.to_pandas(), expected.reset_index(drop=True))


def read_all(reader, paths, **kwargs) -> pd.DataFrame:
    return pd.concat([reader(p, **kwargs) for p in paths], ignore_index=True)


# --------------------------------------------------------------------------- instrumented
class MarkingParquet(ParquetDatasource):
    """Leaves an ``open-*`` file in ``marks`` each time a task opens a data file."""

    def __init__(self, paths, marks, **kwargs):
        super().__init__(paths, **kwargs)
        self.marks = marks

    def open_input(self, path):
        mark(self.marks, "open")
        return super().open_input(path)


class CountingParquet(ParquetDatasource):
    """Reads through a file object that appends the bytes of every read to
    ``<marks>/bytes.log``."""

    def __init__(self, paths, marks, **kwargs):
        super().__init__(paths, **kwargs)
        self.marks = marks

    def open_input(self, path):
        return pa.PythonFile(CountingFile(path, os.path.join(self.marks, "bytes.log")), mode="r")


class CountingFile:
    def __init__(self, path, log):
        self._f = open(path, "rb")
        self._log = log
        self.closed = False

    def read(self, n=-1):
        data = self._f.read(n)
        fd_ = os.open(self._log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd_, f"{len(data)}\n".encode())
        finally:
            os.close(fd_)
        return data

    def seek(self, *args):
        return self._f.seek(*args)

    def tell(self):
        return self._f.tell()

    def close(self):
        self.closed = True
        self._f.close()


def bytes_read(marks) -> int:
    log = os.path.join(marks, "bytes.log")
    if not os.path.exists(log):
        return 0
    with open(log) as f:
        total = sum(int(line) for line in f)
    os.unlink(log)
    return total


class MarkingCSV(CSVDatasource):
    def __init__(self, paths, marks, **kwargs):
        super().__init__(paths, **kwargs)
        self.marks = marks

    def open_input(self, path):
        mark(self.marks, "open")
        return super().open_input(path)


class MarkingNumpy(NumpyDatasource):
    def __init__(self, paths, marks, **kwargs):
        super().__init__(paths, **kwargs)
        self.marks = marks

    def read_piece(self, piece, *, columns, limit):
        mark(self.marks, "open")
        yield from super().read_piece(piece, columns=columns, limit=limit)


# --------------------------------------------------------------------------- paths
def test_a_directory_is_read_recursively_in_order_skipping_hidden_files(tmp_path):
    root = tmp_path / "data"
    paths = write_parquet_files(root, 2, 10) + write_parquet_files(root / "sub", 2, 10)
    frame(0, 3).to_parquet(root / ".hidden.parquet")
    frame(0, 3).to_parquet(root / "_temporary.parquet")
    (root / "_SUCCESS").touch()
    (root / "_logs").mkdir()
    frame(0, 3).to_parquet(root / "_logs" / "x.parquet")
    ordered = paths[:2] + paths[2:]  # files, then the subdirectory's, by name
    assert_same(fd.read_parquet(str(root)), read_all(pd.read_parquet, ordered))
    # a single file, a list mixing files and directories, a pathlib.Path
    assert_same(fd.read_parquet(paths[1]), pd.read_parquet(paths[1]))
    assert_same(fd.read_parquet([paths[3], str(root / "sub")]),
                read_all(pd.read_parquet, [paths[3], paths[2], paths[3]]))
    assert fd.read_parquet(root / "sub").count() == 20


def test_file_extensions_and_missing_paths(tmp_path):
    paths = write_parquet_files(tmp_path, 2, 5)
    frame(0, 5).to_csv(tmp_path / "notes.csv", index=False)
    assert fd.read_parquet(str(tmp_path), file_extensions=["parquet"]).count() == 10
    missing = str(tmp_path / "nope.parquet")
    for reader in (fd.read_parquet, fd.read_csv, fd.read_json, fd.read_text, fd.read_numpy,
                   fd.read_binary_files):
        with pytest.raises(FileNotFoundError, match=re.escape(missing)):
            reader([paths[0], missing])
    assert fd.read_parquet([paths[0], missing], ignore_missing_paths=True).count() == 5
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").touch()
    with pytest.raises(FileNotFoundError, match="no files to read"):
        fd.read_csv(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="only local paths"):
        fd.read_csv("s3://bucket/x.csv")


# --------------------------------------------------------------------------- parquet
def test_read_parquet_matches_pandas_with_columns_and_filter(tmp_path):
    paths = write_parquet_files(tmp_path, 3, 40, row_group_size=7)
    expected = read_all(pd.read_parquet, paths)
    ds = fd.read_parquet(str(tmp_path))
    assert_same(ds, expected)
    assert ds.schema().names == ["id", "x", "name"]
    assert_same(fd.read_parquet(str(tmp_path), columns=["name", "id"]),
                expected[["name", "id"]])
    where = (pads.field("id") >= 33) & (pads.field("id") < 95)
    filtered = read_all(pd.read_parquet, paths, filters=where, columns=["x"])
    assert_same(fd.read_parquet(str(tmp_path), columns=["x"], filter=where), filtered)
    dnf = fd.read_parquet(str(tmp_path), filter=[("id", ">=", 33), ("id", "<", 95)])
    assert_same(dnf, read_all(pd.read_parquet, paths, filters=where))
    assert dnf.count() == 95 - 33
    nothing = fd.read_parquet(str(tmp_path), filter=pads.field("id") > 10_000)
    assert nothing.count() == 0 and nothing.take_all() == []
    with pytest.raises(TypeError, match="pyarrow expression"):
        fd.read_parquet(str(tmp_path), filter="id > 3")


def test_parquet_count_comes_from_the_footers_and_reads_no_data(tmp_path):
    paths = write_parquet_files(tmp_path / "data", 3, 25, row_group_size=10)
    marks = str(tmp_path)
    ds = fd.read_datasource(MarkingParquet([str(tmp_path / "data")], marks))
    assert ds.count() == 75 and ds.limit(30).count() == 30
    assert ds.map(lambda r: r).count() == 75
    assert count_marks(marks, "open") == 0
    assert_same(ds, read_all(pd.read_parquet, paths))
    assert count_marks(marks, "open") == 3


def test_take_on_many_files_opens_only_the_files_it_needs(tmp_path):
    data = tmp_path / "data"
    paths = write_parquet_files(data, 20, 10)
    marks = str(tmp_path)
    ds = fd.read_datasource(MarkingParquet(str(data), marks))
    assert ds.take(5) == frame(0, 5).to_dict("records")
    assert count_marks(marks, "open") == 1  # row counts are known: one read task started
    for i, path in enumerate(paths):
        frame(i * 10, (i + 1) * 10).to_csv(path.replace(".parquet", ".csv"), index=False)
    csv = fd.read_datasource(MarkingCSV(str(data), marks, file_extensions=["csv"]))
    assert csv.take(5) == frame(0, 5).to_dict("records")
    # unknown row counts: at most the read tasks of the slow start (2) opened a file
    assert 1 <= count_marks(marks, "open") - 1 <= 2
    # a read task of several files stops at the first that has the rows
    grouped = fd.read_datasource(MarkingCSV(str(data), marks, file_extensions=["csv"],
                                            parallelism=2), parallelism=2)
    before = count_marks(marks, "open")
    assert grouped.take(3) == frame(0, 3).to_dict("records")
    assert 1 <= count_marks(marks, "open") - before <= 2


def test_a_limit_reads_only_the_row_groups_it_needs(tmp_path):
    path = write_parquet_files(tmp_path / "data", 1, 20_000, row_group_size=1000,
                               compression=None)[0]
    marks = str(tmp_path)
    ds = fd.read_datasource(CountingParquet(path, marks))
    assert len(ds.take_all()) == 20_000
    everything = bytes_read(marks)
    assert ds.take(5) == frame(0, 5).to_dict("records")
    few = bytes_read(marks)
    assert 0 < few < everything / 5, (few, everything)


def test_column_pushdown_reads_only_those_columns(tmp_path):
    path = str(tmp_path / "wide.parquet")
    rng = np.random.default_rng(0)
    wide = pd.DataFrame({f"c{i}": rng.random(5000) for i in range(10)})
    wide.to_parquet(path, compression=None)
    marks = str(tmp_path)
    full = fd.read_datasource(CountingParquet(path, marks))
    assert_same(full, wide)
    everything = bytes_read(marks)
    # select_columns right after the read is pushed into it ...
    assert_same(full.select_columns(["c3"]), wide[["c3"]])
    pushed = bytes_read(marks)
    # ... and so is read_parquet(columns=...)
    own = fd.read_datasource(CountingParquet(path, marks, columns=["c3", "c7"]))
    assert_same(own, wide[["c3", "c7"]])
    two = bytes_read(marks)
    assert 0 < pushed < everything / 4 and pushed < two < everything / 2, \
        (pushed, two, everything)
    with pytest.raises(KeyError, match="c1"):
        own.select_columns(["c1"]).take_all()


def test_a_large_parquet_file_is_read_by_several_tasks(tmp_path):
    path = write_parquet_files(tmp_path, 1, 10_000, row_group_size=1000)[0]
    ctx = fd.DataContext.get_current()
    ctx.target_max_block_size = 40_000  # bytes: about 2 row groups of 3 columns
    ds = fd.read_parquet(path)
    assert ds.count() == 10_000
    assert_same(ds, pd.read_parquet(path))
    tasks = int(re.search(r"ReadParquet: (\d+) tasks executed", ds.stats()).group(1))
    assert 3 <= tasks <= 10
    ctx.target_max_block_size = 1 << 30
    assert fd.read_parquet(path, parallelism=4).num_blocks() == 4  # split to reach it
    assert fd.read_parquet(path, override_num_blocks=1).num_blocks() == 1


# --------------------------------------------------------------------------- csv, json
def test_read_csv_matches_pandas_with_options_and_column_pushdown(tmp_path):
    paths = []
    for i in range(3):
        path = str(tmp_path / f"{i}.csv")
        frame(i * 30, (i + 1) * 30).to_csv(path, index=False, sep=";")
        paths.append(path)
    options = {"parse_options": pacsv.ParseOptions(delimiter=";"),
               "convert_options": pacsv.ConvertOptions(column_types={"x": pa.float32()})}
    ds = fd.read_csv(str(tmp_path), **options)
    expected = read_all(pd.read_csv, paths, sep=";", dtype={"x": "float32"})
    assert_same(ds, expected)
    assert_same(ds.select_columns(["name"]), expected[["name"]])
    assert ds.count() == 90
    # tiny parse blocks: a file streams through several batches, in order
    small = fd.read_csv(paths[0], read_options=pacsv.ReadOptions(block_size=64),
                        parse_options=pacsv.ParseOptions(delimiter=";"))
    assert_same(small, pd.read_csv(paths[0], sep=";"))
    with pytest.raises(TypeError, match="delimiter"):
        fd.read_csv(paths[0], delimiter=";")


def test_read_csv_groups_files_into_the_parallelism_asked(tmp_path):
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.csv"))
        frame(i * 5, (i + 1) * 5).to_csv(paths[-1], index=False)
    (tmp_path / "empty.csv").write_text("")
    ds = fd.read_csv(str(tmp_path), parallelism=2)
    assert_same(ds, read_all(pd.read_csv, paths))
    assert ds.num_blocks() == 2


def test_read_json_lines_matches_pandas(tmp_path):
    paths = []
    for i in range(3):
        path = str(tmp_path / f"{i}.jsonl")
        frame(i * 20, (i + 1) * 20).to_json(path, orient="records", lines=True)
        paths.append(path)
    with gzip.open(tmp_path / "3.jsonl.gz", "wt") as f:
        frame(60, 70).to_json(f, orient="records", lines=True)
    expected = read_all(pd.read_json, [*paths, str(tmp_path / "3.jsonl.gz")], lines=True)
    assert_same(fd.read_json(str(tmp_path)), expected)
    assert_same(fd.read_json(str(tmp_path)).select_columns(["x"]).limit(25),
                expected[["x"]].iloc[:25])


# --------------------------------------------------------------------------- text, numpy, binary
def test_read_text_gives_a_row_per_line(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"first\r\nsecond\n\nthird")
    (tmp_path / "b.txt").write_text("fourth\n  \nfifth\n")
    with gzip.open(tmp_path / "c.txt.gz", "wt") as f:
        f.write("sixth\nseventh\n")
    ds = fd.read_text(str(tmp_path))
    assert ds.take_all() == [{"text": t} for t in
                             ["first", "second", "third", "fourth", "  ", "fifth", "sixth",
                              "seventh"]]
    kept = fd.read_text([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")],
                        drop_empty_lines=False)
    expected = (tmp_path / "a.txt").read_text().splitlines() + \
        (tmp_path / "b.txt").read_text().splitlines()
    assert [r["text"] for r in kept.take_all()] == expected
    assert fd.read_text(str(tmp_path)).count() == 8
    (tmp_path / "latin.txt").write_bytes("café\n".encode("latin-1"))
    assert fd.read_text(str(tmp_path / "latin.txt"), encoding="latin-1").take_all() == \
        [{"text": "café"}]


def test_read_numpy_rows_and_counts_from_headers(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    arrays = [np.arange(12, dtype=np.float32).reshape(4, 3), np.arange(6).reshape(2, 3) * 1.0]
    for i, a in enumerate(arrays):
        np.save(data / f"{i}.npy", a)
    marks = str(tmp_path)
    ds = fd.read_datasource(MarkingNumpy(str(data), marks))
    assert ds.count() == 6 and count_marks(marks, "open") == 0
    rows = ds.take_all()
    assert count_marks(marks, "open") == 2
    assert [list(r) for r in rows] == [["data"]] * 6
    np.testing.assert_array_equal(np.stack([r["data"] for r in rows]),
                                  np.concatenate(arrays))
    flat = fd.read_numpy(str(data / "1.npy"), include_paths=True).take_all()
    assert flat[0]["path"] == str(data / "1.npy") and list(flat[1]["data"]) == [3.0, 4.0, 5.0]


def test_read_binary_files_gives_a_row_per_file(tmp_path):
    blobs = {"a.bin": b"\x00\x01\x02", "b/c.bin": os.urandom(1000), "d.gz": b"not gzip"}
    for name, content in blobs.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(content)
    ds = fd.read_binary_files(str(tmp_path))
    assert ds.count() == 3
    assert ds.take_all() == [{"bytes": content, "path": str(tmp_path / name)}
                             for name, content in sorted(blobs.items())]
    assert fd.read_binary_files(str(tmp_path / "a.bin"), include_paths=False).take_all() == \
        [{"bytes": b"\x00\x01\x02"}]


def test_include_paths_adds_each_rows_file(tmp_path):
    paths = write_parquet_files(tmp_path, 2, 3)
    rows = fd.read_parquet(str(tmp_path), include_paths=True).take_all()
    assert [r["path"] for r in rows] == [paths[0]] * 3 + [paths[1]] * 3
    assert fd.read_parquet(str(tmp_path), include_paths=True).select_columns(
        ["path"]).take(1) == [{"path": paths[0]}]


def take_all_of(ds):
    return ds.take_all()


def test_a_file_dataset_built_here_is_read_inside_a_task(ex, tmp_path):
    paths = write_parquet_files(tmp_path, 2, 5)
    ds = fd.read_parquet(str(tmp_path))
    assert ds.count() == 10  # planned here first: the footers are cached
    rows = ex.get(ex.submit(take_all_of, ds), timeout=60)
    assert rows == read_all(pd.read_parquet, paths).to_dict("records")
    frame(0, 4).to_csv(tmp_path / "a.csv", index=False)
    csv = fd.read_csv(str(tmp_path / "a.csv"))  # never planned here
    assert ex.get(ex.submit(take_all_of, csv), timeout=60) == frame(0, 4).to_dict("records")


# --------------------------------------------------------------------------- errors
def test_an_unreadable_file_fails_naming_the_file_and_the_operator(tmp_path):
    good = tmp_path / "good.jsonl"
    frame(0, 5).to_json(good, orient="records", lines=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\nthis is not json\n')
    with pytest.raises(pa.ArrowInvalid) as info:
        fd.read_json(str(tmp_path)).take_all()
    assert isinstance(info.value, fedexec.TaskError)
    assert f"ReadJSON: cannot read {bad}" in str(info.value)
    assert "in operator ReadJSON" in str(info.value)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(UnicodeError, match=f"ReadText: cannot read {tmp_path / 'bad.txt'}"):
        fd.read_text(str(tmp_path / "bad.txt")).map(lambda r: r).take_all()
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(pa.ArrowInvalid,
                       match=f"ReadParquet: cannot read {tmp_path / 'bad.parquet'}"):
        fd.read_parquet(str(tmp_path / "bad.parquet")).count()
    frame(0, 5).to_parquet(tmp_path / "good.parquet")
    with pytest.raises(KeyError,
                       match=r"ReadParquet: cannot read .*good.parquet: KeyError: columns .*nope"):
        fd.read_parquet(str(tmp_path / "good.parquet"), columns=["nope"]).take_all()


# --------------------------------------------------------------------------- writers
def file_names(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_write_parquet_round_trip_one_file_per_block(tmp_path):
    source = fd.from_pandas([frame(0, 30), frame(30, 40), frame(40, 100)])
    ds = source.map_batches(lambda b: {**b, "y": b["id"] * 2}, batch_size=None)
    out = tmp_path / "out" / "nested"
    ds.write_parquet(str(out), compression="zstd")
    names = file_names(out)
    assert len(names) == 3
    run = names[0].split("_")[0]
    assert names == [f"{run}_{i:06d}.parquet" for i in range(3)]
    assert [pq.read_metadata(out / n).num_rows for n in names] == [30, 10, 60]
    expected = frame(0, 100).assign(y=np.arange(100) * 2)
    assert_same(fd.read_parquet(str(out)), expected)
    pd.testing.assert_frame_equal(read_all(pd.read_parquet, [out / n for n in names]), expected)
    assert "MapBatches(<lambda>)->WriteParquet: 3 tasks executed" in ds.stats()
    # a second write adds its own files
    fd.from_pandas(frame(100, 110)).write_parquet(str(out))
    assert len(file_names(out)) == 4 and fd.read_parquet(str(out)).count() == 110


def test_write_csv_and_json_round_trip(tmp_path):
    ds = fd.range_table(50, parallelism=4).map(lambda r: {"id": r["id"], "half": r["id"] / 2,
                                                          "name": f"r{r['id']}"})
    expected = pd.DataFrame({"id": np.arange(50), "half": np.arange(50) / 2,
                             "name": [f"r{i}" for i in range(50)]})
    ds.write_csv(str(tmp_path / "csv"))
    names = file_names(tmp_path / "csv")
    assert len(names) == 4 and all(n.endswith(".csv") for n in names)
    assert_same(fd.read_csv(str(tmp_path / "csv")), expected)
    pd.testing.assert_frame_equal(
        read_all(pd.read_csv, [tmp_path / "csv" / n for n in names]), expected)
    ds.write_json(str(tmp_path / "json"))
    names = file_names(tmp_path / "json")
    assert len(names) == 4 and all(n.endswith(".json") for n in names)
    assert_same(fd.read_json(str(tmp_path / "json")), expected)
    pd.testing.assert_frame_equal(
        read_all(pd.read_json, [tmp_path / "json" / n for n in names], lines=True), expected)


def test_write_numpy_round_trip(tmp_path):
    images = np.arange(5 * 2 * 3, dtype=np.int16).reshape(5, 2, 3)
    fd.from_numpy([images[:2], images[2:]]).write_numpy(str(tmp_path / "npy"), column="data")
    assert len(file_names(tmp_path / "npy")) == 2
    back = fd.read_numpy(str(tmp_path / "npy")).take_all()
    np.testing.assert_array_equal(np.stack([r["data"] for r in back]), images)
    with pytest.raises(KeyError, match="no such column") as info:
        fd.from_numpy(images).write_numpy(str(tmp_path / "bad"), column="image")
    assert "in operator WriteNumpy" in str(info.value)


def test_write_skips_empty_blocks_and_refuses_a_file_path(tmp_path):
    ds = fd.range_table(40, parallelism=4).filter(lambda r: r["id"] < 15)
    ds.write_parquet(str(tmp_path / "out"))
    assert len(file_names(tmp_path / "out")) == 2  # blocks 0 and 1 have rows
    assert fd.read_parquet(str(tmp_path / "out")).take_all() == [{"id": i} for i in range(15)]
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="writes files into a directory"):
        ds.write_csv(str(tmp_path / "file"))
    with pytest.raises(FileNotFoundError, match="try_create_dir"):
        ds.write_json(str(tmp_path / "missing"), try_create_dir=False)
