"""The native object store: file format, zero-copy reads, LRU spilling, cleanup."""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from fedexec import ObjectStoreFullError, serialization
from fedexec.backends.native import store
from fedexec.backends.native.kept_mappings import KEPT
from fedexec.backends.native.store import (
    ALIGNMENT,
    StoreManager,
    object_size,
    read_object,
    write_object,
)

PREFIX = f"fedexec-test-store-{os.getpid()}-"
HAS_PROC_MAPS = os.path.exists("/proc/self/maps")


def _new_root() -> str:
    return tempfile.mkdtemp(prefix=f"{PREFIX}{uuid.uuid4().hex[:8]}-", dir=store.shm_root())


def _leftovers() -> list[str]:
    return [name for name in os.listdir(store.shm_root()) if name.startswith(PREFIX)]


@pytest.fixture
def shm_dir():
    """A fresh directory under /dev/shm, removed afterwards."""
    root = _new_root()
    yield root
    shutil.rmtree(root, ignore_errors=True)
    assert not os.path.exists(root)


@pytest.fixture
def make_store(tmp_path):
    """Factory of StoreManagers on fresh directories; checks nothing is left behind."""
    made: list[StoreManager] = []

    def make(capacity: int, spill_capacity: int | None = None,
             pool_capacity: int = 0) -> StoreManager:
        root = _new_root()
        os.rmdir(root)  # the store makes it
        manager = StoreManager(root, str(tmp_path / f"spill{len(made)}"), capacity,
                               spill_capacity, pool_capacity)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.cleanup()
        assert not os.path.exists(manager.directory)
        assert not os.path.exists(manager.spill_directory)
    assert _leftovers() == []


def _mapping_ranges(path: str) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of ``path`` (deleted or not)."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].rstrip("\n").removesuffix(" (deleted)") == path:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((lo, hi))
    return ranges


def _put(manager: StoreManager, obj_id: str, value) -> str:
    s = serialization.dumps(value)
    path = manager.reserve(obj_id, object_size(s.data, s.buffers))
    write_object(path, s.data, s.buffers)
    manager.seal(obj_id)
    return path


@pytest.fixture(autouse=True)
def _no_kept_mappings():
    """Each test starts and ends with no file kept mapped by this process."""
    KEPT.clear()
    yield
    KEPT.clear()


def _put_reusing(manager: StoreManager, obj_id: str, value,
                 writer: int | None = None) -> tuple[str, bool]:
    """Put as the node manager does for a writer (``writer`` set: one that keeps
    its mapping, as a client does): (path, whether a freed file was reused)."""
    s = serialization.dumps(value)
    reused = manager.stats()["reuse_count"]
    path, staging = manager.reserve_segment(obj_id, object_size(s.data, s.buffers), writer)
    write_object(path, s.data, s.buffers, staging, keep_mapped=writer is not None)
    manager.seal(obj_id)
    return path, manager.stats()["reuse_count"] > reused


def _objects(manager: StoreManager) -> list[str]:
    """Names of the object files in the store's directory (not the freed files kept)."""
    return sorted(n for n in os.listdir(manager.directory) if not n.startswith("."))


def _kept(manager: StoreManager) -> list[str]:
    return sorted(n for n in os.listdir(manager.directory) if n.startswith(".free-"))


def _get(path: str):
    data, buffers = read_object(path)
    return serialization.loads(data, buffers)


def _blob(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, n, dtype=np.uint8)


# ------------------------------------------------------------------ file format

VALUES = {
    "bytes": b"\x01\x02" * 100_000,
    "bytearray": bytearray(b"ab" * 100_000),
    "float64": np.arange(50_000, dtype=np.float64),
    "fortran": np.asfortranarray(np.arange(300 * 400, dtype=np.int32).reshape(300, 400)),
    "structured": np.zeros(10_000, dtype=[("a", "<i8"), ("b", "<f4")]),
    "small": {"x": 1, "y": [1.5, "s"]},
    "empty array": np.zeros(0, dtype=np.int16),
    "nested": {"a": [np.ones(70_000), (np.arange(20_000, dtype=np.int8), b"k" * 100)],
               "b": {"c": np.full((100, 100, 10), 7, dtype=np.uint16)}},
}


def _assert_same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("name", list(VALUES))
def test_round_trip(shm_dir, name):
    value = VALUES[name]
    s = serialization.dumps(value)
    path = os.path.join(shm_dir, "obj")
    size = write_object(path, s.data, s.buffers)
    assert size == object_size(s.data, s.buffers) == os.stat(path).st_size
    assert os.stat(path).st_mode & 0o777 == 0o600
    _assert_same(_get(path), value)
    assert os.listdir(shm_dir) == ["obj"]  # the temporary name is gone


def test_segments_are_64_byte_aligned_and_match_the_input(shm_dir):
    buffers = [b"a" * 1, b"bb" * 33, np.arange(1000, dtype=np.int64), b""]
    path = os.path.join(shm_dir, "obj")
    write_object(path, b"stream", buffers)
    data, views = read_object(path)
    assert bytes(data) == b"stream"
    assert [bytes(v) for v in views] == [memoryview(b).tobytes() for b in buffers]
    for view in [data, *views]:
        if view.nbytes:
            assert np.frombuffer(view, np.uint8).__array_interface__["data"][0] % ALIGNMENT == 0


def test_read_rejects_missing_and_foreign_files(shm_dir):
    with pytest.raises(FileNotFoundError):
        read_object(os.path.join(shm_dir, "absent"))
    foreign = os.path.join(shm_dir, "foreign")
    with open(foreign, "wb") as f:
        f.write(b"not an object file at all, just some bytes")
    with pytest.raises(ValueError, match="not a version-1"):
        read_object(foreign)
    tiny = os.path.join(shm_dir, "tiny")
    open(tiny, "wb").close()
    with pytest.raises(ValueError, match="not a fedexec object"):
        read_object(tiny)


def test_write_never_overwrites_an_existing_object(shm_dir):
    path = os.path.join(shm_dir, "obj")
    write_object(path, b"first", [])
    with pytest.raises(FileExistsError):
        write_object(path, b"second", [])
    assert bytes(read_object(path)[0]) == b"first"
    assert os.listdir(shm_dir) == ["obj"]


def test_a_failed_write_leaves_no_file(shm_dir, monkeypatch):
    path = os.path.join(shm_dir, "obj")
    real_pwrite = os.pwrite
    calls = []

    def failing_pwrite(fd, data, offset):
        calls.append(offset)
        assert not os.path.exists(path)  # readers never see a partial file
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", failing_pwrite)
    with pytest.raises(OSError, match="No space"):
        write_object(path, b"x" * 1000, [b"y" * 100_000])
    assert os.listdir(shm_dir) == []


def test_non_contiguous_buffers_are_refused(shm_dir):
    with pytest.raises(BufferError):
        write_object(os.path.join(shm_dir, "obj"), b"", [np.arange(100)[::2]])
    assert os.listdir(shm_dir) == []


# ------------------------------------------------------------------ zero copy


@pytest.mark.skipif(not HAS_PROC_MAPS, reason="needs /proc/self/maps")
def test_arrays_are_read_only_views_into_the_mapping(shm_dir):
    value = {"a": np.arange(200_000, dtype=np.float64), "b": np.ones((500, 300), np.int32)}
    path = os.path.join(shm_dir, "obj")
    s = serialization.dumps(value)
    write_object(path, s.data, s.buffers)
    out = _get(path)
    [(lo, hi)] = _mapping_ranges(path)
    assert hi - lo >= os.stat(path).st_size
    for arr in out.values():
        ptr = arr.__array_interface__["data"][0]
        assert lo <= ptr and ptr + arr.nbytes <= hi
        assert not arr.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 1
    _assert_same(out, value)


@pytest.mark.skipif(not HAS_PROC_MAPS, reason="needs /proc/self/maps")
def test_the_mapping_lives_exactly_as_long_as_its_views(shm_dir):
    path = os.path.join(shm_dir, "obj")
    s = serialization.dumps(np.arange(100_000, dtype=np.int64))
    write_object(path, s.data, s.buffers)
    arr = _get(path)
    gc.collect()
    assert len(_mapping_ranges(path)) == 1  # data/buffer views dropped, the array keeps it
    os.unlink(path)  # freeing or spilling unlinks: the view stays valid
    assert arr[99_999] == 99_999 and int(arr.sum()) == 99_999 * 100_000 // 2
    del arr
    gc.collect()
    assert _mapping_ranges(path) == []


READER = """
import json, sys
import numpy as np
from fedexec import serialization
from fedexec.backends.native.store import read_object
path = sys.argv[1]
data, buffers = read_object(path)
arr = serialization.loads(data, buffers)
ranges = []
for line in open("/proc/self/maps"):
    f = line.split(maxsplit=5)
    if len(f) == 6 and f[5].strip() == path:
        ranges.append([int(x, 16) for x in f[0].split("-")])
ptr = arr.__array_interface__["data"][0]
print(json.dumps({"inside": any(lo <= ptr and ptr + arr.nbytes <= hi for lo, hi in ranges),
                  "writeable": bool(arr.flags.writeable), "sum": int(arr.sum()),
                  "shape": list(arr.shape)}))
"""


@pytest.mark.skipif(not HAS_PROC_MAPS, reason="needs /proc/self/maps")
def test_another_process_reads_zero_copy(shm_dir):
    value = np.arange(300_000, dtype=np.int64).reshape(600, 500)
    path = os.path.join(shm_dir, "obj")
    s = serialization.dumps(value)
    write_object(path, s.data, s.buffers)
    out = subprocess.run([sys.executable, "-c", READER, path], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen == {"inside": True, "writeable": False, "sum": int(value.sum()),
                    "shape": [600, 500]}


# ------------------------------------------------------------------ StoreManager

MB = 1 << 20


def test_put_get_and_accounting(make_store):
    manager = make_store(capacity=4 * MB)
    value = _blob(MB, 1)
    path = _put(manager, "a", value)
    assert path == manager.path("a") and manager.contains("a") and not manager.is_spilled("a")
    assert manager.ensure_local("a") == path
    np.testing.assert_array_equal(_get(path), value)
    stats = manager.stats()
    assert stats["used_bytes"] == manager.size_of("a") == os.stat(path).st_size > MB
    assert stats["num_objects"] == 1 and stats["capacity"] == 4 * MB


def test_reserved_objects_count_but_are_not_contained(make_store):
    manager = make_store(capacity=MB)
    manager.reserve("w", 1000)
    assert not manager.contains("w") and manager.stats()["used_bytes"] == 1000
    with pytest.raises(ValueError, match="not sealed"):
        manager.ensure_local("w")
    with pytest.raises(ValueError, match="already in the store"):
        manager.reserve("w", 10)
    with pytest.raises(FileNotFoundError):
        manager.seal("w")  # nothing was written


def test_seal_takes_the_actual_size_and_refuses_more_than_reserved(make_store):
    manager = make_store(capacity=MB)
    path = manager.reserve("a", 10_000)
    size = write_object(path, b"x" * 100, [])
    manager.seal("a")
    assert manager.size_of("a") == size == manager.stats()["used_bytes"]
    with pytest.raises(ValueError, match="already sealed"):
        manager.seal("a")
    path = manager.reserve("b", 10)
    write_object(path, b"y" * 100, [])
    with pytest.raises(ValueError, match="more than the"):
        manager.seal("b")


def test_least_recently_used_unpinned_objects_are_spilled_first(make_store):
    values = {k: _blob(MB, i) for i, k in enumerate("abcde")}
    size = object_size(*(lambda s: (s.data, s.buffers))(serialization.dumps(values["a"])))
    manager = make_store(capacity=3 * size)
    for k in "abc":
        _put(manager, k, values[k])
    manager.ensure_local("a")  # a is now the most recently used: b is the oldest
    _put(manager, "d", values["d"])
    assert [k for k in "abcd" if manager.is_spilled(k)] == ["b"]
    assert not os.path.exists(manager.path("b"))
    assert os.path.exists(os.path.join(manager.spill_directory, "b"))

    manager.pin("c")  # c is the oldest now, but pinned: a goes
    _put(manager, "e", values["e"])
    assert [k for k in "abcde" if manager.is_spilled(k)] == ["a", "b"]
    stats = manager.stats()
    assert stats["used_bytes"] == 3 * size <= stats["capacity"]
    assert stats["num_spilled"] == 2 and stats["spilled_bytes"] == 2 * size
    assert stats["spill_count"] == 2 and stats["restore_count"] == 0

    # restoring b spills the least recently used unpinned object (d), never c
    path = manager.ensure_local("b")
    np.testing.assert_array_equal(_get(path), values["b"])
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [k for k in "abcde" if manager.is_spilled(k)] == ["a", "d"]
    assert not os.path.exists(os.path.join(manager.spill_directory, "b"))
    assert manager.stats()["restore_count"] == 1
    for k in "abcde":  # every object is intact wherever it went
        np.testing.assert_array_equal(_get(manager.ensure_local(k)), values[k])
    assert manager.contains("c") and not manager.is_spilled("c")


def test_unpin_makes_an_object_spillable_again(make_store):
    manager = make_store(capacity=2 * MB + 8192)
    _put(manager, "a", _blob(MB, 0))
    manager.pin("a")
    manager.pin("a")
    _put(manager, "b", _blob(MB, 1))
    manager.unpin("a")
    _put(manager, "c", _blob(MB, 2))  # a still pinned once: b goes
    assert manager.is_spilled("b") and not manager.is_spilled("a")
    manager.unpin("a")
    with pytest.raises(ValueError, match="not pinned"):
        manager.unpin("a")
    _put(manager, "d", _blob(MB, 3))  # unpinned last: c is the oldest
    assert manager.is_spilled("c") and not manager.is_spilled("a")


def test_a_reader_keeps_its_view_when_the_object_is_spilled(make_store):
    manager = make_store(capacity=MB + 8192)
    value = _blob(MB, 7)
    arr = _get(_put(manager, "a", value))
    _put(manager, "b", _blob(MB, 8))
    assert manager.is_spilled("a")
    np.testing.assert_array_equal(arr, value)


def test_store_full_when_everything_is_pinned(make_store):
    manager = make_store(capacity=2 * MB + 8192)
    _put(manager, "a", _blob(MB, 0))
    _put(manager, "b", _blob(MB, 1))
    manager.pin("a")
    manager.pin("b")
    with pytest.raises(ObjectStoreFullError, match="object_store_memory") as info:
        manager.reserve("c", MB)
    assert "Free references" in str(info.value)
    assert manager.stats()["spill_count"] == 0 and not manager.contains("c")
    manager.reserve("c", 100)  # what still fits, fits


def test_nothing_is_spilled_when_the_object_would_not_fit_anyway(make_store):
    manager = make_store(capacity=2 * MB + 8192)
    _put(manager, "a", _blob(MB, 0))
    _put(manager, "b", _blob(MB, 1))
    manager.pin("b")
    with pytest.raises(ObjectStoreFullError):
        manager.reserve("c", 2 * MB)
    assert not manager.is_spilled("a") and manager.stats()["spill_count"] == 0


def test_an_object_larger_than_the_store(make_store):
    manager = make_store(capacity=MB)
    with pytest.raises(ObjectStoreFullError, match="larger than the whole object store"):
        manager.reserve("big", MB + 1)
    assert manager.stats()["num_objects"] == 0


def test_store_full_when_the_spill_space_is_exhausted(make_store):
    size = object_size(b"", [b"\0" * MB])
    manager = make_store(capacity=2 * size, spill_capacity=size)
    for k in "abc":
        path = manager.reserve(k, size)
        write_object(path, b"", [bytes([ord(k)]) * MB])
        manager.seal(k)
    assert manager.is_spilled("a")  # the spill space is now full
    with pytest.raises(ObjectStoreFullError, match="spill") as info:
        manager.reserve("d", size)
    assert "object_store_memory" in str(info.value)
    assert manager.contains("b") and not manager.is_spilled("b")
    manager.free("a")  # frees the spill space
    manager.reserve("d", size)
    assert manager.is_spilled("b")


def test_restore_fails_cleanly_when_no_room_can_be_made(make_store):
    manager = make_store(capacity=MB + 8192)
    value = _blob(MB, 3)
    _put(manager, "a", value)
    _put(manager, "b", _blob(MB, 4))
    manager.pin("b")
    with pytest.raises(ObjectStoreFullError):
        manager.ensure_local("a")
    assert manager.is_spilled("a")
    manager.unpin("b")
    np.testing.assert_array_equal(_get(manager.ensure_local("a")), value)


def test_free_deletes_both_files_and_returns_capacity(make_store):
    manager = make_store(capacity=MB + 8192)
    _put(manager, "a", _blob(MB, 0))
    _put(manager, "b", _blob(MB, 1))
    assert manager.is_spilled("a")
    manager.pin("b")
    manager.free("a")
    manager.free("b")  # pinned or not
    manager.free("never-seen")
    assert os.listdir(manager.directory) == [] and os.listdir(manager.spill_directory) == []
    stats = manager.stats()
    assert (stats["used_bytes"], stats["spilled_bytes"], stats["num_objects"],
            stats["num_spilled"]) == (0, 0, 0, 0)
    assert not manager.contains("a") and not manager.is_spilled("a")
    with pytest.raises(KeyError):
        manager.ensure_local("a")
    _put(manager, "c", _blob(MB, 2))  # the whole capacity is available again
    assert manager.stats()["spill_count"] == 1


def test_abort_removes_partial_files(make_store):
    manager = make_store(capacity=MB)
    path = manager.reserve("a", 1000)
    with open(path, "wb") as f:  # a writer that died half-way
        f.write(b"partial")
    with open(f"{path}.12345-0.tmp", "wb") as f:  # or before linking into place
        f.write(b"partial")
    manager.abort("a")
    manager.abort("unknown")
    assert os.listdir(manager.directory) == []
    assert manager.stats()["used_bytes"] == 0 and manager.stats()["num_objects"] == 0
    _put(manager, "a", b"second try" * 1000)
    with pytest.raises(ValueError, match="free it"):
        manager.abort("a")


def test_unknown_and_invalid_ids(make_store):
    manager = make_store(capacity=MB)
    for call in (manager.ensure_local, manager.pin, manager.unpin, manager.size_of,
                 manager.seal):
        with pytest.raises(KeyError):
            call("nope")
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="invalid object id"):
            manager.reserve(bad, 10)
    with pytest.raises(ValueError):
        manager.reserve("neg", -1)


def test_directories_must_be_fresh(tmp_path):
    (tmp_path / "shm").mkdir()
    (tmp_path / "shm" / "someone-elses-file").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not empty"):
        StoreManager(str(tmp_path / "shm"), str(tmp_path / "spill"), MB)
    with pytest.raises(ValueError, match="must differ"):
        StoreManager(str(tmp_path / "x"), str(tmp_path / "x"), MB)


def test_cleanup_leaves_nothing_behind(tmp_path):
    root = _new_root()
    manager = StoreManager(root, str(tmp_path / "spill"), MB + 8192)
    _put(manager, "a", _blob(MB, 0))
    _put(manager, "b", _blob(MB, 1))
    manager.reserve("c", 10)
    assert manager.is_spilled("a")
    manager.cleanup()
    manager.cleanup()
    assert not os.path.exists(root) and not os.path.exists(tmp_path / "spill")
    assert _leftovers() == []
    assert manager.stats()["num_objects"] == 0
    with pytest.raises(RuntimeError, match="cleaned up"):
        manager.reserve("d", 10)


def test_context_manager_cleans_up(tmp_path):
    root = _new_root()
    with StoreManager(root, str(tmp_path / "spill"), MB) as manager:
        _put(manager, "a", b"x" * 200_000)
    assert not os.path.exists(root)


# ------------------------------------------------------------------ reusing freed files


def _fits(size: int, kept: int) -> bool:
    """Whether a kept file of ``kept`` bytes serves a reservation of ``size``."""
    return size <= kept <= 2 * size or size <= 2 * kept < 2 * size


def _fresh_file_bytes(value) -> bytes:
    """The bytes of ``value``'s object file written into a new file."""
    root = _new_root()
    try:
        s = serialization.dumps(value)
        write_object(os.path.join(root, "x"), s.data, s.buffers)
        with open(os.path.join(root, "x"), "rb") as f:
            return f.read()
    finally:
        shutil.rmtree(root)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(100_000, 3 * MB) | st.integers(1, 5_000),
                      min_size=2, max_size=6),
       seed=st.integers(0, 1 << 16), writer=st.sampled_from([None, 7]))
def test_put_get_free_cycles_reuse_freed_files_with_the_right_bytes(make_store, sizes, seed,
                                                                    writer):
    manager = make_store(capacity=8 * MB, pool_capacity=4 * MB)
    pool: list[int] = []  # the model: sizes of the kept files, oldest first
    for i, n in enumerate(sizes):
        value = _blob(n, seed + i)
        blob = serialization.dumps(value)
        size = object_size(blob.data, blob.buffers)
        best = sorted(k for k in pool if size <= k <= 2 * size) + sorted(
            (k for k in pool if size <= 2 * k < 2 * size), reverse=True)
        path, reused = _put_reusing(manager, f"o{i}", value, writer)
        assert reused == bool(best)
        if best:
            pool.remove(best[0])
        got = _get(path)
        np.testing.assert_array_equal(got, value)
        del got
        with open(path, "rb") as f:  # every byte as in a new file (gaps zeroed)
            assert f.read() == _fresh_file_bytes(value)
        manager.free(f"o{i}")
        pool.append(size)
        while sum(pool) > 4 * MB:
            pool.pop(0)
        stats = manager.stats()
        assert (stats["used_bytes"], stats["pooled_bytes"], stats["num_pooled"]) == (
            0, sum(pool), len(pool))
        assert _objects(manager) == [] and len(_kept(manager)) == len(pool)


def test_a_freed_file_mapped_here_is_not_reused_until_its_views_are_gone(make_store):
    manager = make_store(capacity=16 * MB, pool_capacity=8 * MB)
    a = _blob(2 * MB, 1)
    path, _ = _put_reusing(manager, "a", a)
    view = _get(path)
    manager.free("a")
    assert len(_kept(manager)) == 1
    _, reused = _put_reusing(manager, "b", _blob(2 * MB, 2))
    assert not reused  # a's file is still mapped by ``view``
    np.testing.assert_array_equal(view, a)
    manager.free("b")
    del view
    gc.collect()
    for name, seed in (("c", 3), ("d", 4)):  # both kept files are free now
        path, reused = _put_reusing(manager, name, _blob(2 * MB, seed))
        assert reused
        np.testing.assert_array_equal(_get(path), _blob(2 * MB, seed))
    assert manager.stats()["reuse_count"] == 2 and _kept(manager) == []


HOLDER = """
import sys, zlib
from fedexec import serialization
from fedexec.backends.native.store import read_object
arr = serialization.loads(*read_object(sys.argv[1]))
print(zlib.crc32(arr), flush=True)
for line in sys.stdin:
    print(zlib.crc32(arr), flush=True)
"""


@pytest.mark.timeout(60)
def test_a_freed_file_another_process_maps_is_not_reused_until_it_is_killed(make_store):
    import zlib

    manager = make_store(capacity=16 * MB, pool_capacity=8 * MB)
    a = _blob(3 * MB, 1)
    path, _ = _put_reusing(manager, "a", a)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert int(holder.stdout.readline()) == zlib.crc32(a)
        manager.free("a")
        _, reused = _put_reusing(manager, "b", _blob(3 * MB, 10))
        assert not reused  # a's file is the only one kept, and the holder maps it
        manager.free("b")
        for i in range(3):  # each reuses b's file, never a's: the holder's view is intact
            holder.stdin.write("check\n")
            holder.stdin.flush()
            assert int(holder.stdout.readline()) == zlib.crc32(a)
            _, reused = _put_reusing(manager, f"c{i}", _blob(3 * MB, 20 + i))
            assert reused and manager.stats()["num_pooled"] == 1
            manager.free(f"c{i}")
        holder.stdin.write("check\n")
        holder.stdin.flush()
        assert int(holder.stdout.readline()) == zlib.crc32(a)
    finally:
        holder.kill()  # SIGKILL: the kernel drops its mapping
        holder.wait(timeout=30)
    assert manager.stats()["num_pooled"] == 2
    for i in range(2):  # a's file is free now too
        path, reused = _put_reusing(manager, f"d{i}", _blob(3 * MB, 30 + i))
        assert reused
        np.testing.assert_array_equal(_get(path), _blob(3 * MB, 30 + i))
    assert manager.stats()["num_pooled"] == 0


WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, b"partial", 0)
print("writing", flush=True)
sys.stdin.read()
"""


@pytest.mark.timeout(60)
def test_a_writer_killed_while_writing_into_a_kept_file_leaves_nothing(make_store):
    manager = make_store(capacity=8 * MB, pool_capacity=4 * MB)
    _put_reusing(manager, "a", _blob(MB, 1))
    manager.free("a")
    staging = manager.reserve_segment("b", manager.stats()["pooled_bytes"]).staging
    assert staging and os.path.exists(staging) and _kept(manager) == []
    writer = subprocess.Popen([sys.executable, "-c", WRITER, staging], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "writing\n"
    writer.kill()
    writer.wait(timeout=30)
    manager.abort("b")  # what the node manager does when the writer's connection closes
    assert os.listdir(manager.directory) == []
    stats = manager.stats()
    assert (stats["used_bytes"], stats["pooled_bytes"], stats["num_objects"]) == (0, 0, 0)
    _, reused = _put_reusing(manager, "b", _blob(MB, 2))
    assert not reused


PROBER = """
import os, sys, time
from fedexec.backends.native.store import _unshared
answers = set()
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    answers.add(_unshared(sys.argv[1]))
print(sorted(answers))
"""
OPENER = "import os, sys\nwhile True: os.close(os.open(sys.argv[1], os.O_RDONLY))"


@pytest.mark.timeout(60)
def test_probing_a_file_someone_keeps_opening_does_not_kill_the_prober(shm_dir):
    """The lease break an opener causes signals the lease holder (SIGIO by default
    kills it): the node manager must survive someone opening a kept file."""
    path = os.path.join(shm_dir, "f")
    with open(path, "wb") as f:
        f.write(b"x" * 4096)
    opener = subprocess.Popen([sys.executable, "-c", OPENER, path])
    try:
        out = subprocess.run([sys.executable, "-c", PROBER, path], capture_output=True,
                             text=True, timeout=50)
    finally:
        opener.kill()
        opener.wait(timeout=30)
    assert out.returncode == 0, (out.returncode, out.stderr)
    assert out.stdout.strip() == "[False, True]"  # busy while open, free in between


def _fill(manager: StoreManager, sizes: list[int]) -> list[bool]:
    """Put objects of ``sizes`` (freeing every third), recording which ones fit."""
    fitted = []
    for i, n in enumerate(sizes):
        try:
            _put_reusing(manager, f"o{i}", _blob(n, i), writer=7)  # keeps its mapping
        except ObjectStoreFullError:
            fitted.append(False)
            continue
        fitted.append(True)
        if i % 3 == 0:
            manager.free(f"o{i}")
        stats = manager.stats()
        assert stats["used_bytes"] + stats["pooled_bytes"] <= manager.capacity
    return fitted


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(200_000, 3 * MB), min_size=1, max_size=12),
       spill=st.sampled_from([0, None]))
def test_the_store_is_full_exactly_when_it_would_be_without_kept_files(make_store, sizes,
                                                                        spill):
    with_pool = make_store(capacity=6 * MB, spill_capacity=spill, pool_capacity=6 * MB)
    without = make_store(capacity=6 * MB, spill_capacity=spill)
    assert _fill(with_pool, sizes) == _fill(without, sizes)
    a, b = with_pool.stats(), without.stats()
    assert (a["used_bytes"], a["spill_count"]) == (b["used_bytes"], b["spill_count"])


def test_kept_files_are_capped_oldest_deleted_first(make_store):
    manager = make_store(capacity=4 * MB, pool_capacity=MB + MB // 2)
    for name in "abc":
        _put_reusing(manager, name, _blob(MB, ord(name)))
    size = manager.size_of("c")
    manager.free("b")
    manager.free("c")  # only one MB-sized file fits in 1.5 MB: b's is deleted
    stats = manager.stats()
    assert (stats["num_pooled"], stats["pooled_bytes"]) == (1, size)
    assert len(_kept(manager)) == 1
    manager.free("a")
    assert manager.stats()["num_pooled"] == 1


def test_a_restore_reuses_a_kept_file(make_store):
    manager = make_store(capacity=MB + 8192, pool_capacity=2 * MB)
    _put_reusing(manager, "a", _blob(MB, 1))
    _put_reusing(manager, "b", _blob(MB, 2))
    assert manager.is_spilled("a")
    manager.free("b")
    assert manager.stats()["num_pooled"] == 1
    np.testing.assert_array_equal(_get(manager.ensure_local("a")), _blob(MB, 1))
    stats = manager.stats()
    assert (stats["reuse_count"], stats["num_pooled"], stats["restore_count"]) == (1, 0, 1)
    assert _objects(manager) == ["a"] and _kept(manager) == []


def test_without_file_leases_freed_files_are_deleted_not_reused(make_store, monkeypatch):
    monkeypatch.setattr(store, "_F_SETLEASE", None)  # e.g. not Linux
    manager = make_store(capacity=8 * MB, pool_capacity=4 * MB)
    _put_reusing(manager, "a", _blob(MB, 1))
    manager.free("a")
    path, reused = _put_reusing(manager, "b", _blob(MB, 2))
    assert not reused and manager.stats()["pool_capacity"] == 0
    np.testing.assert_array_equal(_get(path), _blob(MB, 2))
    manager.free("b")
    assert os.listdir(manager.directory) == []


def test_cleanup_deletes_kept_files(tmp_path):
    root = _new_root()
    manager = StoreManager(root, str(tmp_path / "spill"), 8 * MB, pool_capacity=4 * MB)
    _put_reusing(manager, "a", _blob(MB, 1))
    manager.free("a")
    assert len(_kept(manager)) == 1
    manager.cleanup()
    assert not os.path.exists(root) and _leftovers() == []


# ------------------------------------------------------------------ files kept mapped by writers


def _open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


def _mapped_inodes() -> set[int]:
    """Inodes of the files this process maps from /dev/shm."""
    inodes = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith(store.shm_root()):
                inodes.add(int(fields[4]))
    return inodes


@pytest.mark.skipif(not HAS_PROC_MAPS, reason="needs /proc/self/maps")
def test_a_writer_keeps_its_last_file_mapped_and_writes_the_next_object_into_it(make_store):
    manager = make_store(capacity=32 * MB, pool_capacity=16 * MB)
    _put_reusing(manager, "a", _blob(3 * MB, 1), writer=7)  # a new file: pwrite, not kept
    assert len(KEPT) == 0
    manager.free("a")
    path, reused = _put_reusing(manager, "b", _blob(3 * MB, 2), writer=7)
    inode = os.stat(path).st_ino
    assert reused and len(KEPT) == 1 and inode in _mapped_inodes()
    manager.free("b")
    for i, n in enumerate((3 * MB, 2 * MB, 3 * MB - 5)):  # the same file, shrunk and grown
        path, reused = _put_reusing(manager, f"c{i}", _blob(n, 10 + i), writer=7)
        assert reused and os.stat(path).st_ino == inode and len(KEPT) == 1
        np.testing.assert_array_equal(_get(path), _blob(n, 10 + i))
        with open(path, "rb") as f:  # every byte as in a new file
            assert f.read() == _fresh_file_bytes(_blob(n, 10 + i))
        manager.free(f"c{i}")
    stats = manager.stats()
    assert (stats["used_bytes"], stats["num_pooled"], stats["reuse_count"]) == (
        0, 1, 4)


@pytest.mark.timeout(60)
def test_a_file_a_writer_keeps_mapped_is_not_written_while_another_process_maps_it(
        make_store):
    import zlib

    manager = make_store(capacity=32 * MB, pool_capacity=16 * MB)
    _put_reusing(manager, "a0", _blob(3 * MB, 1), writer=7)
    manager.free("a0")
    a = _blob(3 * MB, 2)
    path, reused = _put_reusing(manager, "a", a, writer=7)  # into a0's file, kept mapped
    assert reused and len(KEPT) == 1
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert int(holder.stdout.readline()) == zlib.crc32(a)
        manager.free("a")  # kept, and handed back to writer 7 first, unchecked
        _, reused = _put_reusing(manager, "b", _blob(3 * MB, 10), writer=7)
        assert not reused  # writer 7 saw the holder's mapping and wrote a new file
        stats = manager.stats()
        assert (stats["num_pooled"], len(_kept(manager)), len(KEPT)) == (1, 1, 0)
        holder.stdin.write("check\n")
        holder.stdin.flush()
        assert int(holder.stdout.readline()) == zlib.crc32(a)
        manager.free("b")
        for i in range(3):  # b's file each time, never a's: the holder's view is intact
            _, reused = _put_reusing(manager, f"c{i}", _blob(3 * MB, 20 + i), writer=7)
            assert reused and manager.stats()["num_pooled"] == 1
            holder.stdin.write("check\n")
            holder.stdin.flush()
            assert int(holder.stdout.readline()) == zlib.crc32(a)
            manager.free(f"c{i}")
    finally:
        holder.kill()
        holder.wait(timeout=30)
    for i in range(2):  # a's file is free now too
        path, reused = _put_reusing(manager, f"d{i}", _blob(3 * MB, 30 + i), writer=7)
        assert reused
        np.testing.assert_array_equal(_get(path), _blob(3 * MB, 30 + i))


def test_a_kept_mapping_of_a_file_the_store_deleted_is_dropped_at_the_next_write(make_store):
    manager = make_store(capacity=8 * MB, spill_capacity=0, pool_capacity=4 * MB)
    _put_reusing(manager, "a0", _blob(3 * MB, 1), writer=7)
    manager.free("a0")
    path, _ = _put_reusing(manager, "a", _blob(3 * MB, 2), writer=7)
    fds = _open_fds()
    inode = os.stat(path).st_ino
    manager.free("a")
    big = serialization.dumps(_blob(7 * MB, 3))
    path = manager.reserve("big", object_size(big.data, big.buffers))  # the kept file
    assert manager.stats()["num_pooled"] == 0 and len(KEPT) == 1  # made way: deleted
    write_object(path, big.data, big.buffers)  # any write here drops the mapping
    assert len(KEPT) == 0 and _open_fds() <= fds - 1
    if HAS_PROC_MAPS:
        assert inode not in _mapped_inodes()


@pytest.mark.timeout(120)
def test_500_put_free_cycles_keep_open_files_and_shm_files_bounded(make_store):
    manager = make_store(capacity=16 * MB, pool_capacity=6 * MB)
    sizes = [MB + 100_000, 3 * MB // 2, 5 * MB // 2, 4 * MB, 200_000]
    fds = None
    rng = random.Random(0)
    live: list[str] = []
    for i in range(500):
        obj_id = f"o{i}"
        n = rng.choice(sizes)
        path, _ = _put_reusing(manager, obj_id, _blob(n, i % 7), writer=rng.choice([7, 8]))
        live.append(obj_id)
        if i % 50 == 0:
            np.testing.assert_array_equal(_get(path), _blob(n, i % 7))
        while len(live) > rng.randint(0, 2):
            manager.free(live.pop(0))
        if i == 20:
            fds = _open_fds()
        assert len(os.listdir(manager.directory)) <= 3 + manager.stats()["num_pooled"] <= 9
        assert len(KEPT) <= 1
    assert fds is not None and _open_fds() <= fds + 2  # a kept file: its fd + mmap's dup
    stats = manager.stats()
    assert stats["reuse_count"] > 200 and stats["used_bytes"] + stats["pooled_bytes"] <= 16 * MB


KEPT_WRITER = """
import os, sys
import numpy as np
from fedexec.backends.native.store import write_object
value = np.random.default_rng(5).integers(0, 255, 48 << 20, dtype=np.uint8)
for line in sys.stdin:
    path, staging = line.split()
    print("writing", flush=True)
    write_object(path, b"", [value], staging.strip("-"), keep_mapped=True)
    print("done", flush=True)
"""


@pytest.mark.timeout(120)
def test_a_writer_killed_while_writing_into_its_kept_mapping_leaves_nothing(make_store):
    manager = make_store(capacity=128 * MB, pool_capacity=64 * MB)
    value = np.random.default_rng(5).integers(0, 255, 48 << 20, dtype=np.uint8)
    size = object_size(b"", [value])
    writer = subprocess.Popen([sys.executable, "-c", KEPT_WRITER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        for i in range(2):  # a new file, then the same file through a mapping it keeps
            path, staging = manager.reserve_segment(f"a{i}", size, writer=7)
            writer.stdin.write(f"{path} {staging or '-'}\n")
            writer.stdin.flush()
            assert writer.stdout.readline() == "writing\n"
            assert writer.stdout.readline() == "done\n"
            manager.seal(f"a{i}")
            manager.free(f"a{i}")
        assert manager.stats()["reuse_count"] == 1
        path, staging = manager.reserve_segment("b", size, writer=7)
        assert staging
        writer.stdin.write(f"{path} {staging}\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "writing\n"
        writer.kill()  # mid-copy, or just before or after it: all must be safe
        writer.wait(timeout=30)
    finally:
        writer.kill()
        writer.wait(timeout=30)
    if os.path.exists(path):  # published only once complete
        data, buffers = read_object(path)
        assert bytes(data) == b"" and np.array_equal(np.frombuffer(buffers[0], np.uint8), value)
        del data, buffers
    manager.abort("b")  # what the node manager does when the writer's connection closes
    assert os.listdir(manager.directory) == []
    stats = manager.stats()
    assert (stats["used_bytes"], stats["pooled_bytes"], stats["num_objects"]) == (0, 0, 0)
    path, _ = _put_reusing(manager, "c", _blob(3 * MB, 3), writer=7)
    np.testing.assert_array_equal(_get(path), _blob(3 * MB, 3))


# ------------------------------------------------------------------ random sequences


SIZES = st.integers(1_000, 6_000) | st.integers(0, 100)


class StoreMachine(RuleBasedStateMachine):
    """Random reserve/seal/abort/pin/unpin/free/ensure_local against a model.

    The model keeps its own LRU order and predicts exactly which objects are
    spilled and when the store must refuse an object.
    """

    CAPACITY = 12_000

    objects = Bundle("objects")

    def __init__(self) -> None:
        super().__init__()
        self.root = _new_root()
        os.rmdir(self.root)
        self.spill_root = tempfile.mkdtemp(prefix="fedexec-test-spill-")
        self.spill_capacity: int | None = None
        self.pool_capacity = 0
        self.manager: StoreManager
        self.content: dict[str, bytes] = {}  # sealed, unfreed objects
        self.size: dict[str, int] = {}
        self.spilled: set[str] = set()
        self.pins: dict[str, int] = {}
        self.lru: list[str] = []  # local, unpinned; oldest first
        self.counter = 0

    @initialize(spill_capacity=st.sampled_from([None, 0, 8_000, 20_000]),
                pool_capacity=st.sampled_from([0, 5_000, 12_000]))
    def start(self, spill_capacity, pool_capacity):
        self.spill_capacity = spill_capacity
        self.pool_capacity = pool_capacity
        self.manager = StoreManager(self.root, os.path.join(self.spill_root, "s"),
                                    self.CAPACITY, spill_capacity, pool_capacity)

    def _make_room(self, size: int) -> list[str] | None:
        """The model's victims for ``size`` more bytes, or None: the store is full."""
        used = sum(self.size[k] for k in self.content if k not in self.spilled)
        excess = used + size - self.CAPACITY
        if size > self.CAPACITY:
            return None
        victims, freed = [], 0
        for k in self.lru:
            if freed >= excess:
                break
            victims.append(k)
            freed += self.size[k]
        if freed < excess:
            return None
        spilled = sum(self.size[k] for k in self.spilled)
        if self.spill_capacity is not None and spilled + freed > self.spill_capacity:
            return None
        return victims

    def _spill(self, victims: list[str]) -> None:
        for k in victims:
            self.lru.remove(k)
            self.spilled.add(k)

    def _reserve(self, n: int, seed: int) -> tuple[str, bytes, str | None, str]:
        """Reserve a new object of ``n`` random bytes as the model predicts: its id,
        its content, its path (None if the store refused it), and the staging file
        of a freed file it reuses ("" if none)."""
        self.counter += 1
        obj_id = f"o{self.counter}"
        data = random.Random(seed).randbytes(n)
        size = object_size(data, [])
        victims = self._make_room(size)
        if victims is None:
            with pytest.raises(ObjectStoreFullError):
                self.manager.reserve_segment(obj_id, size)
            return obj_id, data, None, ""
        path, staging = self.manager.reserve_segment(obj_id, size)
        self._spill(victims)
        return obj_id, data, path, staging

    @rule(target=objects, n=SIZES, seed=st.integers(0, 255))
    def put(self, n, seed):
        obj_id, data, path, staging = self._reserve(n, seed)
        if path is not None:
            write_object(path, data, [], staging)
            self.manager.seal(obj_id)
            self.content[obj_id] = data
            self.size[obj_id] = object_size(data, [])
            self.pins[obj_id] = 0
            self.lru.append(obj_id)
        return obj_id

    @precondition(lambda self: self.counter % 4 == 0)  # rarer than successful writes
    @rule(n=SIZES, seed=st.integers(0, 255))
    def write_fails(self, n, seed):
        obj_id, data, path, staging = self._reserve(n, seed)
        if path is not None:
            with open(staging or path, "r+b" if staging else "wb") as f:  # dies half-way
                f.write(data[: n // 2])
            self.manager.abort(obj_id)

    @rule(obj_id=objects)
    def pin(self, obj_id):
        if obj_id not in self.content:
            return
        self.manager.pin(obj_id)
        self.pins[obj_id] += 1
        if obj_id in self.lru:
            self.lru.remove(obj_id)

    @rule(obj_id=objects)
    def unpin(self, obj_id):
        if obj_id not in self.content or self.pins[obj_id] == 0:
            return
        self.manager.unpin(obj_id)
        self.pins[obj_id] -= 1
        if self.pins[obj_id] == 0 and obj_id not in self.spilled:
            self.lru.append(obj_id)

    @rule(obj_id=consumes(objects))
    def free(self, obj_id):
        self.manager.free(obj_id)
        if obj_id in self.content:
            del self.content[obj_id]
            self.spilled.discard(obj_id)
            if obj_id in self.lru:
                self.lru.remove(obj_id)

    @rule(obj_id=objects)
    def ensure_local(self, obj_id):
        if obj_id not in self.content:
            with pytest.raises(KeyError):
                self.manager.ensure_local(obj_id)
            return
        if obj_id in self.spilled:
            victims = self._make_room(self.size[obj_id])
            if victims is None:
                with pytest.raises(ObjectStoreFullError):
                    self.manager.ensure_local(obj_id)
                return
            self._spill(victims)
            self.spilled.discard(obj_id)
        path = self.manager.ensure_local(obj_id)
        if obj_id in self.lru:
            self.lru.remove(obj_id)
        if self.pins[obj_id] == 0:
            self.lru.append(obj_id)
        assert bytes(read_object(path)[0]) == self.content[obj_id]

    @precondition(lambda self: self.spilled)
    @rule(data=st.data())
    def restore(self, data):
        self.ensure_local(data.draw(st.sampled_from(sorted(self.spilled))))

    @invariant()
    def matches_the_model(self):
        stats = self.manager.stats()
        used = sum(self.size[k] for k in self.content if k not in self.spilled)
        assert stats["used_bytes"] == used <= self.CAPACITY
        assert stats["spilled_bytes"] == sum(self.size[k] for k in self.spilled)
        if self.spill_capacity is not None:
            assert stats["spilled_bytes"] <= self.spill_capacity
        assert stats["num_objects"] == len(self.content)
        assert stats["num_spilled"] == len(self.spilled)
        assert _objects(self.manager) == sorted(
            k for k in self.content if k not in self.spilled)
        assert len(_kept(self.manager)) == stats["num_pooled"]
        assert len(os.listdir(self.manager.directory)) == len(_objects(self.manager)) + len(
            _kept(self.manager))  # no staging or temporary file left
        assert stats["pooled_bytes"] <= self.pool_capacity
        assert stats["used_bytes"] + stats["pooled_bytes"] <= self.CAPACITY
        assert sorted(os.listdir(self.manager.spill_directory)) == sorted(self.spilled)
        for k, data in self.content.items():  # readable wherever it is, with its content
            assert self.manager.contains(k)
            assert self.manager.is_spilled(k) == (k in self.spilled)
            where = self.manager.spill_directory if k in self.spilled else self.manager.directory
            assert bytes(read_object(os.path.join(where, k))[0]) == data

    def teardown(self):
        if hasattr(self, "manager"):
            self.manager.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.spill_root, ignore_errors=True)
        assert not os.path.exists(self.root)


StoreMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_random_sequences = StoreMachine.TestCase


def test_no_leftovers_in_shm():
    assert _leftovers() == []
