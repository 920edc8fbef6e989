"""The node's shared-memory object store: one file per object, spilled to disk when full.

Data flow on one node (messages go through the node manager's sockets, not this
module; the node manager is the only process that calls :class:`StoreManager`)::

    writer (driver / worker)            node manager: StoreManager          reader (driver / worker)
    ------------------------            --------------------------          ------------------------
    s = dumps(value)
    n = object_size(s.data, s.buffers)
          --- "put X, n bytes" ------>  reserve_segment(X, n, writer)
                                          spill LRU unpinned objects
                                          shm -> spill dir if full;
                                          take a kept freed file: one this
                                          writer wrote last, else one nobody
                                          maps; renamed to X's staging name
          <-- path, staging ---------
    write_object(path, data, buffers, staging)
      tmp file + pwrite, or, if nobody
      else has the staging file open
      (a lease on the writer's own fd),
      memcpy into the writer's mapping
      of it, kept for the next put;
      then link to path
          --- "sealed X" ------------>  seal(X)
                                                           <--- "get X" --- (asks)
                                        ensure_local(X)  (restore from disk
                                        pin(X)            if it was spilled)
                                                           --- path ----->
                                                                            read_object(path)
                                                                              mmap PROT_READ
                                                                            loads(data, buffers)
                                                                              -> zero-copy,
                                                                                 read-only views
                                                           <--- "mapped X"
                                        unpin(X)
          ... no reference left anywhere ...
                                        free(X): keep the shm file for reuse
                                          (rename to ".free-N") or unlink it;
                                          unlink the spill file

State of :class:`StoreManager` (single-threaded; no locks)::

    _entries : dict[obj_id, _Entry]   every object the store knows
        .size  : int                  bytes of its file (the reserved size until sealed)
        .state : RESERVED             being written into shm; counts in _used; never spilled
               | LOCAL                sealed, file in `directory`; counts in _used
               | SPILLED              sealed, file only in `spill_directory`; counts in _spilled
        .pins  : int                  > 0: never spilled
    _lru     : OrderedDict[obj_id, None]
                                      exactly the LOCAL entries with pins == 0,
                                      least recently used first (the spill order)
    _used    : int                    sum of .size over RESERVED and LOCAL  (<= capacity)
    _spilled : int                    sum of .size over SPILLED    (<= spill_capacity)
    _pool    : OrderedDict[path, size] freed shm files kept for reuse, oldest first,
                                      named ".free-N" in `directory` (ids have no ".")
    _owners  : dict[path, writer]     kept files -> the writer that wrote them last
                                      (it may still map them; _Entry.writer before)
    _pooled  : int                    sum of their sizes; _pooled <= pool_capacity and
                                      _used + _pooled <= capacity
    _staged  : set[obj_id]            RESERVED ids whose writer got a kept file, at
                                      "<path>.reuse.tmp" until it links it to <path>
    _num_spilled, _spill_count, _restore_count : int   counters for stats()

A sealed object lives in exactly one place: in shared memory (LOCAL) or in the
spill directory (SPILLED); ``ensure_local`` and spilling move it, ``free`` deletes it.

File format (little-endian; the same file is copied verbatim to the spill directory)::

    0   magic       8 bytes  b"FXOBJ\\x00\\r\\n"
    8   version     u32      1
    12  header_len  u32      24 + 16 * (count + 1)
    16  count       u32      number of out-of-band buffers
    20  reserved    u32      0
    24  (offset u64, length u64) of the pickle stream, then of each buffer
    ... the pickle stream at the first multiple of 64 after the header, each buffer at
        the next multiple of 64 after the previous segment; the file ends with the last one.

Buffers are 64-byte aligned in the file and the mapping starts on a page, so any
numpy dtype (and AVX-512 loads) is aligned in the reader's view.

Why one file per object, not one arena with an allocator. Measured with the
functions of this module on the development VM (2 cores AMD EPYC, Linux 6.18,
tmpfs /dev/shm with 4 KiB pages, no shmem huge pages; spill directory on ext4 under
/tmp, so spill/restore hit the page cache, not the disk), best of 5-300 runs::

    object    write_object    read_object    fault in every   spill copy    restore copy   unlink
              (create, size,  (open, mmap,   page of the      shm -> disk   disk -> shm    (free)
              pwrite, link)   parse)         reader's view    (sendfile)    (sendfile)
    1 KiB        26 us           15 us            --            0.1 ms         25 us          8 us
    1 MiB       0.30 ms          22 us          0.05 ms         0.3 ms        0.31 ms      0.12 ms
    200 MiB       71 ms        0.1 ms             15 ms           61 ms         75 ms        22 ms

    memcpy of 200 MiB: 16 ms into warm memory (12.9 GB/s), 20 ms into fresh
    anonymous memory (10 GB/s, transparent huge pages).
    Filling a fresh 200 MiB tmpfs file: pwrite 75 ms (2.8 GB/s); through a shared
    mapping 145 ms (1.4 GB/s; 130 ms with posix_fallocate first; MAP_POPULATE does
    not help). So write_object uses pwrite.

* The fixed cost of a file (~25 us to write, ~15 us to map, ~10 us to unlink) is
  noise for what goes into the store: values under ~100 KiB travel inline in
  control messages and never reach it. At 1 MiB the fixed cost is < 10 %.
* The variable cost is the kernel's: tmpfs allocates and zeroes a fresh 4 KiB page
  per 4 KiB written, so a new file fills at ~2.8 GB/s where memcpy into warm,
  already-faulted memory runs at ~13 GB/s. A pre-faulted arena would write a
  200 MiB object in ~16 ms instead of ~71 ms. We accept that for now because the
  arena's price is correctness machinery the kernel otherwise gives for free:
  - freeing or spilling an object that a reader still maps is safe with files
    (``unlink`` keeps existing mappings valid); an arena would need cross-process
    reference counts on every block before reusing it;
  - no allocator, no fragmentation, no compaction; ``free`` is ``unlink``, spilling
    is a file copy, restoring is a copy back, and a crashed node leaves one
    directory that ``cleanup``/``rm -r`` removes;
  - a reader maps only the object it reads, not the whole arena.
  Reusing the pages of freed files gets most of that back (next section).
* Freeing or spilling a large object unlinks its file in the node manager's thread,
  which returns the pages to the kernel at ~0.1 ms per MiB (22 ms for 200 MiB);
  hand the unlink to a helper thread if that ever shows in the manager's latency.

Reusing freed files. ``free`` keeps an object's shm file (up to ``pool_capacity``
bytes of them, oldest deleted first) instead of unlinking it, and
``reserve_segment`` hands one of a similar size (1/2x to 2x) to the next writer,
who copies into it through a shared mapping: the pages exist, so the copy is a
memcpy, once the mapping's page table is filled. Filling it (``MAP_POPULATE``)
and tearing it down cost per 4 KiB page, so a writer keeps the mapping of the
last file it wrote (:mod:`.kept_mappings`), and the store hands a writer the
files it wrote last first: the writer's next put of a similar size into that
file is the copy alone. Measured as above, 200 MiB, with memcpy at 19-20 ms in
the same run: into the kept mapping 20-23 ms; through a new mapping 33-46 ms
(8-13 ms to fill the page table, 20-23 ms to copy, 7-11 ms to unmap); pwrite into
the existing pages 58 ms; a new file 75-115 ms; ``free`` is a rename instead of a
22 ms unlink. So in one runtime the first put of a size writes a new file, the
second fills a mapping, the later ones copy. Unmapping on a helper thread was
tried and dropped: a get in the same process right after waited for it (the
address-space lock). Huge pages would remove the page-table work too, but tmpfs
here uses 4 KiB pages (``/dev/shm`` has no ``huge=``, shmem THP is ``never``,
no hugetlb pages are reserved), and the store must not need root setup.

Why it is safe:
  - no reader ever sees a reused file change: a file is taken for reuse only
    when no process has it open or mapped, which the kernel answers exactly (a
    write lease is granted only to a file's sole opener, and a mapping holds its
    file open until its last view is gone, in every process that has it, forked
    children included; see :func:`_unshared`). The store asks for files nobody
    wrote last or another writer wrote; a writer asks on its own descriptor, right
    before writing, for files it may still map (its mapping shares that one open
    file description, a reader's open is another), and writes a new file instead
    if the answer is no, leaving the staging file to ``seal``, which keeps it
    again. A file still mapped (a numpy view kept after its ref was dropped) stays
    kept but unused until it is unmapped, or is deleted when its room is needed,
    which leaves the view valid as before;
  - nobody can open a kept file between that check and the writer: its name is
    known only to the store, and the writer gets it under a staging name that is
    linked to the object's path only after every byte is written (as new files);
  - kept files count against ``capacity`` and always make way: a reservation
    first deletes as many as it needs, before spilling, so what fits, what is
    spilled and when ``ObjectStoreFullError`` is raised depend on the objects
    alone, exactly as without them;
  - a writer that dies leaves its staging file, which ``abort`` deletes; kept
    files live in ``directory``, which ``cleanup`` (or the stale-session reaper,
    after a crash) deletes with everything else;
  - without file leases (not Linux, or leases disabled) nothing is reused.

Capacity accounting is approximate in four ways, all documented for callers:
a process that mapped an object before it was spilled or freed keeps its pages
alive until its views are gone (``unlink`` does not invalidate mappings), and
those pages are no longer counted; likewise a writer's kept mapping of a file
the store deleted (spilled, or a kept file trimmed), until that writer's next
write or exit (one file per writer process, :mod:`.kept_mappings`); tmpfs rounds
each file up to whole pages; and
``/dev/shm`` itself may be smaller than ``capacity`` (containers often give 64
MiB), in which case the writer's ``pwrite`` fails with ENOSPC and the node
manager should ``abort`` the object.

A reader must hold a pin (or otherwise be sure the object is not spilled or
freed) between learning the path and calling :func:`read_object`; once mapped,
nothing the store does can invalidate its views. A published file is modified
(reused) only after it is freed and nobody else has it open or mapped, so a
reader's mapping never sees a change or a truncation (no SIGBUS).

Why this module is over 600 lines: the object file's format and both of its sides
(the writers' and readers' functions, run in every process, and the node
manager's ``StoreManager``, with its staging, leases and reuse of freed files)
change together, and this docstring states their contract. The next seam is the
format and the writer/reader functions (``write_object``, ``read_object``) as a
module of their own.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import glob
import itertools
import mmap
import os
import pickle
import re
import shutil
import signal
import struct
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ...exceptions import ObjectStoreFullError
from .kept_mappings import KEPT, KeptMapping

try:
    import fcntl
except ImportError:  # not POSIX: no file leases, so freed files are never reused
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ALIGNMENT",
    "Reservation",
    "StoreManager",
    "default_pool_capacity",
    "object_size",
    "read_object",
    "shm_root",
    "write_object",
]

#: Every segment (pickle stream, buffers) starts at a multiple of this in the file.
ALIGNMENT = 64

_MAGIC = b"FXOBJ\x00\r\n"
_VERSION = 1
_PREFIX = struct.Struct("<8sIIII")  # magic, version, header_len, count, reserved
_SEGMENT = struct.Struct("<QQ")  # offset, length
_ID_RE = re.compile(r"[0-9A-Za-z_\-]+")
_tmp_counter = itertools.count()
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def shm_root() -> str:
    """Where per-node store directories go: ``/dev/shm``, else the temp directory."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


# ------------------------------------------------------------------ file format


def _byte_view(obj: Any) -> memoryview:
    """A flat unsigned-byte view of a contiguous buffer (C or Fortran order)."""
    return pickle.PickleBuffer(obj).raw()


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


def _layout(lengths: Sequence[int]) -> tuple[list[tuple[int, int]], int]:
    """(offset, length) of each segment, and the file size."""
    offset = _PREFIX.size + _SEGMENT.size * len(lengths)
    segments = []
    for length in lengths:
        offset = _align(offset)
        segments.append((offset, length))
        offset += length
    return segments, offset


def object_size(data: bytes | memoryview, buffers: Sequence[Any]) -> int:
    """Bytes the file of this object takes: header, pickle stream, aligned buffers."""
    lengths = [memoryview(data).nbytes, *(memoryview(b).nbytes for b in buffers)]
    return _layout(lengths)[1]


def _pwrite_all(fd: int, view: memoryview | bytes | bytearray, offset: int) -> None:
    view = memoryview(view)
    done = 0
    while done < view.nbytes:
        done += os.pwrite(fd, view[done:], offset + done)


#: Reused files of at least this size are filled through a mapping, not pwrite.
_MAP_MIN = 1 << 20


def _copy_pieces(mapping: mmap.mmap, pieces: Sequence[tuple[int, Any]]) -> None:
    """Copy each ``(offset, buffer)`` of ``pieces`` into ``mapping``: a plain memcpy
    when its pages exist and its page table is filled (module docstring)."""
    import numpy as np

    target = np.frombuffer(mapping, dtype=np.uint8)
    try:
        for offset, piece in pieces:
            source = np.frombuffer(piece, dtype=np.uint8)
            target[offset:offset + source.size] = source  # numpy lets go of the GIL
    finally:
        del target


def _write_staged(path: str, staging: str, size: int, pieces: Sequence[tuple[int, Any]],
                  keep_mapped: bool) -> bool:
    """Write ``pieces`` into the kept file ``staging`` and publish it at ``path``;
    False (``staging`` untouched) if some other open file description of it exists,
    i.e. someone still reads it (checked on this writer's own descriptor with a
    write lease, right before writing; see :mod:`.kept_mappings`)."""
    st = os.stat(staging)
    entry = KEPT.take((st.st_dev, st.st_ino))
    if entry is None:
        entry = KeptMapping((st.st_dev, st.st_ino), os.open(staging, os.O_RDWR | os.O_CLOEXEC))
    try:
        if not _lease_free(entry.fd):
            entry.close()
            return False
        os.ftruncate(entry.fd, size)
        if entry.length < size and (size < _MAP_MIN or st.st_size < size):
            entry.unmap()  # small, or growing into new pages: pwrite is faster there
            for offset, piece in pieces:
                _pwrite_all(entry.fd, piece, offset)
        else:
            mapping = entry.mapping if entry.length >= size else None
            _copy_pieces(mapping or entry.map(size), pieces)
        _publish(staging, path)
    except BaseException:
        entry.close()
        _unlink(staging)
        raise
    if keep_mapped and entry.mapping is not None:
        KEPT.keep(entry)
    else:
        entry.close()
    return True


def _publish(tmp: str, path: str) -> None:
    """Give ``tmp`` the name ``path`` atomically, failing if ``path`` exists."""
    try:
        os.link(tmp, path)  # no-replace, unlike rename
    except OSError as exc:  # EEXIST, or a file system without hard links
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path) from None
        os.rename(tmp, path)
        return
    os.unlink(tmp)


def _tmp_name(path: str) -> str:
    return f"{path}.{os.getpid()}-{next(_tmp_counter)}.tmp"


def write_object(path: str, data: bytes | memoryview, buffers: Sequence[Any],
                 staging: str = "", keep_mapped: bool = False) -> int:
    """Write a serialized object to a new file at ``path``, atomically.

    The bytes go to a file next to ``path`` that is then linked into place, so a
    reader never sees a partial file, and an existing ``path`` is never
    overwritten: a new temporary file (``O_EXCL``, mode 0600), or ``staging``, a
    freed file whose pages are already allocated (see
    :meth:`StoreManager.reserve_segment`); it is cut or grown to the object's size
    and every byte of it is overwritten (alignment gaps with zeros). ``staging`` is
    written only if no other process (nor another file description in this one)
    has it open or mapped, checked right before; otherwise a new file is written
    and ``staging`` left to the store (:meth:`StoreManager.seal` keeps it again).

    Args:
        path: where the file goes (from :meth:`StoreManager.reserve`).
        data: the pickle stream.
        buffers: the out-of-band buffers, in order (any contiguous buffers).
        staging: the reservation's staging file, or "" to make a new file.
        keep_mapped: keep ``staging``'s mapping (of 1 MiB or more) for a later
            write into the same file (:mod:`.kept_mappings`); for writers that
            reserve with ``writer=`` set.

    Returns:
        The file's size, equal to :func:`object_size` of the same arguments.

    Raises:
        FileExistsError: ``path`` exists already.
        FileNotFoundError: ``staging`` does not exist (the reservation was aborted).
        BufferError: a buffer is not contiguous.
        OSError: e.g. ENOSPC when ``/dev/shm`` is full; the temporary or staging
            file is removed.
    """
    views = [_byte_view(data), *(_byte_view(b) for b in buffers)]
    segments, size = _layout([v.nbytes for v in views])
    header = bytearray(_PREFIX.pack(_MAGIC, _VERSION, _PREFIX.size + _SEGMENT.size * len(views),
                                    len(views) - 1, 0))
    for segment in segments:
        header += _SEGMENT.pack(*segment)
    header += bytes(segments[0][0] - len(header))  # zeros up to the pickle stream
    pieces: list[tuple[int, Any]] = [(0, header)]
    ends = [offset for offset, _ in segments[1:]] + [size]
    for view, (offset, length), end in zip(views, segments, ends):
        pieces.append((offset, view))
        if staging and end > offset + length:  # a new file's gaps read as zeros
            pieces.append((offset + length, bytes(end - offset - length)))
    if staging and _write_staged(path, staging, size, pieces, keep_mapped):
        return size
    KEPT.sweep()
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.ftruncate(fd, size)
            for offset, piece in pieces:
                _pwrite_all(fd, piece, offset)
        finally:
            os.close(fd)
        _publish(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    return size


def read_object(path: str) -> tuple[memoryview, list[memoryview]]:
    """Map the object file at ``path`` read-only and return views of its parts.

    The views share one read-only mapping, which stays alive while any view, or
    anything built on one (a numpy array from :func:`fedexec.serialization.loads`),
    is alive; it is unmapped when the last is gone. Spilling or freeing the object
    afterwards does not affect them.

    Returns:
        ``(data, buffers)``: the pickle stream and the out-of-band buffers, ready
        for :func:`fedexec.serialization.loads` (zero-copy, read-only arrays).

    Raises:
        FileNotFoundError: no object file at ``path``.
        ValueError: the file is not an object file of this version.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size < _PREFIX.size:
            raise ValueError(f"{path} is not a fedexec object file (only {size} bytes)")
        mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    view = memoryview(mapped)
    magic, version, header_len, count, _ = _PREFIX.unpack_from(view)
    if magic != _MAGIC or version != _VERSION:
        raise ValueError(f"{path} is not a version-{_VERSION} fedexec object file")
    if header_len != _PREFIX.size + _SEGMENT.size * (count + 1) or header_len > size:
        raise ValueError(f"{path} has a corrupt header")
    parts = []
    for i in range(count + 1):
        offset, length = _SEGMENT.unpack_from(view, _PREFIX.size + _SEGMENT.size * i)
        if offset < header_len or offset + length > size:
            raise ValueError(f"{path} has a corrupt header (segment {i} out of the file)")
        parts.append(view[offset:offset + length])
    return parts[0], parts[1:]


# ------------------------------------------------------------------ the manager


class _State(enum.Enum):
    RESERVED = "reserved"
    LOCAL = "local"
    SPILLED = "spilled"


@dataclass(slots=True)
class _Entry:
    size: int
    state: _State
    pins: int = 0
    writer: int | None = None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


_F_SETLEASE = getattr(fcntl, "F_SETLEASE", None)  # Linux only
_F_SETSIG = getattr(fcntl, "F_SETSIG", None)
_NO_LEASES = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTTY)


def _unshared(path: str) -> bool | None:
    """Whether no process, this one included, has the file at ``path`` open or
    mapped; None where the kernel cannot tell (no file leases).

    The kernel grants a write lease only to the sole opener of a file, and a
    mapping keeps its file open until the last view of it is gone (also after
    ``close`` and across ``fork``), so the lease asks exactly "does anyone still
    read or write this?". The lease is dropped at once; nobody can open the file
    meanwhile because only the store knows its name. Should someone open it anyway,
    the kernel tells the lease holder with a signal, SIGIO by default, which would
    kill it: the file is set to send SIGURG instead, which is ignored.

    Raises:
        OSError: the file is gone, or is not this user's (the caller forgets it).
    """
    if _F_SETLEASE is None or _F_SETSIG is None:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _lease_free(fd)
    finally:
        os.close(fd)


def _lease_free(fd: int) -> bool | None:
    """Whether the open file description of ``fd`` is the only one of its file
    (mappings made from it share it): :func:`_unshared` on a descriptor; None
    without file leases.

    Raises:
        OSError: the file is not this user's.
    """
    if _F_SETLEASE is None or _F_SETSIG is None:
        return None
    try:
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_WRLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EBUSY):
            return False
        if exc.errno in _NO_LEASES:
            return None
        raise
    fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
    return True


def _copy_fd(src: int, dst: int, size: int) -> None:
    done = 0
    while done < size:
        try:
            sent = os.sendfile(dst, src, done, size - done)
        except OSError as exc:  # sendfile to a regular file is Linux-only
            if done or exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK):
                raise
            break
        if sent == 0:
            raise OSError(errno.EIO, "the file shrank while being copied")
        done += sent
    while done < size:
        chunk = os.pread(src, min(size - done, 8 << 20), done)
        if not chunk:
            raise OSError(errno.EIO, "the file shrank while being copied")
        _pwrite_all(dst, chunk, done)
        done += len(chunk)


def _copy_atomic(src: str, dst: str, staging: str = "") -> None:
    """Copy ``src`` to a new file ``dst`` (mode 0600) through a temporary name (or
    ``staging``, a freed file to reuse), so readers see all or nothing; sendfile(2)
    keeps the bytes out of user space."""
    tmp = staging or _tmp_name(dst)
    with open(src, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        flags = os.O_WRONLY | os.O_CLOEXEC | (0 if staging else os.O_CREAT | os.O_EXCL)
        fd = os.open(tmp, flags, 0o600)
        try:
            try:
                os.ftruncate(fd, size)
                _copy_fd(source.fileno(), fd, size)
            finally:
                os.close(fd)
            os.replace(tmp, dst)
        except BaseException:
            _unlink(tmp)
            raise


#: A reservation reuses a freed file of between half and twice its size.
_FIT = 2
#: Freed files probed (for a reader still mapping them) per reservation at most.
_PROBES = 4
_STAGING = ".reuse.tmp"


def default_pool_capacity(capacity: int) -> int:
    """How many bytes of freed files a store of ``capacity`` keeps for reuse: a
    quarter of it, at most 1 GiB."""
    return min(capacity // 4, 1 << 30)


class Reservation(NamedTuple):
    """Where a reserved object's file goes (``path``), and ``staging``: a freed
    file to write it into (:func:`write_object`), or "" to make a new file."""

    path: str
    staging: str


def _fresh_directory(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.listdir(path):
        raise FileExistsError(
            f"store directory {path} is not empty; pass a new directory (the store "
            "deletes it entirely at cleanup)")


class StoreManager:
    """Bookkeeping of one node's object store: capacity, LRU spilling, pins.

    Used only by the node manager, from one thread. It never opens object files
    for reading; writers and readers use :func:`write_object` and
    :func:`read_object` on the paths it hands out. See the module docstring for
    the state it keeps and the protocol around it.

    Args:
        directory: the shared-memory directory (e.g. under :func:`shm_root`); made
            if missing, must be empty; deleted entirely by :meth:`cleanup`.
        spill_directory: where spilled objects go, on local disk; same rules.
        capacity: bytes of shared memory the objects may take.
        spill_capacity: bytes the spill directory may take; None: as much as the
            disk has free.
        pool_capacity: bytes of freed files kept for reuse (see "Reusing freed
            files" in the module docstring; at most ``capacity``); 0: none, every
            freed file is deleted.
    """

    def __init__(self, directory: str, spill_directory: str, capacity: int,
                 spill_capacity: int | None = None, pool_capacity: int = 0):
        if capacity < 0 or pool_capacity < 0 or (spill_capacity is not None
                                                  and spill_capacity < 0):
            raise ValueError("capacities must be >= 0")
        directory, spill_directory = os.path.abspath(directory), os.path.abspath(spill_directory)
        if directory == spill_directory:
            raise ValueError("directory and spill_directory must differ")
        _fresh_directory(directory)
        _fresh_directory(spill_directory)
        self.directory = directory
        self.spill_directory = spill_directory
        self.capacity = capacity
        self.spill_capacity = spill_capacity
        self._entries: dict[str, _Entry] = {}
        self._lru: OrderedDict[str, None] = OrderedDict()
        self._used = 0
        self._spilled = 0
        self._num_spilled = 0
        self._spill_count = 0
        self._restore_count = 0
        self.pool_capacity = min(pool_capacity, capacity)
        self._pool: OrderedDict[str, int] = OrderedDict()  # freed file -> size, oldest first
        self._owners: dict[str, int] = {}  # kept file -> the writer that wrote it last
        self._pooled = 0
        self._pool_names = itertools.count()
        self._staged: set[str] = set()  # reserved ids written into a reused file
        self._reuse_count = 0
        self._closed = False

    # -- paths and queries

    def path(self, obj_id: str) -> str:
        """Where the shared-memory file of ``obj_id`` is, or will be."""
        if not _ID_RE.fullmatch(obj_id):
            raise ValueError(f"invalid object id {obj_id!r} (letters, digits, '_' and '-' only)")
        return os.path.join(self.directory, obj_id)

    def _spill_path(self, obj_id: str) -> str:
        return os.path.join(self.spill_directory, obj_id)

    def contains(self, obj_id: str) -> bool:
        """Whether ``obj_id`` is sealed and not freed (in shared memory or spilled)."""
        entry = self._entries.get(obj_id)
        return entry is not None and entry.state is not _State.RESERVED

    def is_spilled(self, obj_id: str) -> bool:
        """Whether ``obj_id`` is on disk only (``ensure_local`` brings it back)."""
        entry = self._entries.get(obj_id)
        return entry is not None and entry.state is _State.SPILLED

    def size_of(self, obj_id: str) -> int:
        """Bytes of ``obj_id``'s file (the reserved size until sealed). KeyError if unknown."""
        return self._entry(obj_id).size

    def stats(self) -> dict[str, int | None]:
        """Counters: ``used_bytes``, ``capacity``, ``num_objects`` (any state),
        ``num_spilled``, ``spilled_bytes``, ``spill_capacity``, ``spill_count`` and
        ``restore_count`` (files copied to and from disk since the start);
        ``pooled_bytes``, ``num_pooled`` and ``pool_capacity`` (freed files kept for
        reuse, not counted in ``used_bytes``) and ``reuse_count`` (objects written or
        restored into one)."""
        return {
            "used_bytes": self._used,
            "capacity": self.capacity,
            "num_objects": len(self._entries),
            "num_spilled": self._num_spilled,
            "spilled_bytes": self._spilled,
            "spill_capacity": self.spill_capacity,
            "spill_count": self._spill_count,
            "restore_count": self._restore_count,
            "pooled_bytes": self._pooled,
            "num_pooled": len(self._pool),
            "pool_capacity": self.pool_capacity,
            "reuse_count": self._reuse_count,
        }

    def _entry(self, obj_id: str) -> _Entry:
        try:
            return self._entries[obj_id]
        except KeyError:
            raise KeyError(f"unknown object {obj_id!r}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the object store was cleaned up")

    # -- life cycle of an object

    def reserve(self, obj_id: str, size: int) -> str:
        """Make room for a new object of ``size`` bytes and return its path.

        The caller then writes a new file there (:func:`write_object`) and calls
        :meth:`seal`, or :meth:`abort` if writing failed. Least recently used,
        unpinned, sealed objects are spilled to disk as needed; nothing is spilled
        if the object would not fit anyway. Freed files kept for reuse are deleted
        first, as needed.

        Raises:
            ObjectStoreFullError: it does not fit even after spilling all that can
                be spilled, the spill space is exhausted, or it is bigger than the
                whole capacity.
            ValueError: ``obj_id`` is already known, or ``size`` < 0.
        """
        return self._reserve(obj_id, size, reuse=False).path

    def reserve_segment(self, obj_id: str, size: int, writer: int | None = None
                        ) -> Reservation:
        """:meth:`reserve`, reusing a freed file if one of a similar size is unused.

        If ``staging`` is set, the writer must write into that file (it exists, with
        its pages allocated) and publish it at ``path``: ``write_object(path, data,
        buffers, staging)``. Nobody else knows the staging name, and no process
        has the file open or mapped (checked, see :func:`_unshared`), except,
        for a file that ``writer`` wrote last, maybe ``writer`` itself, which
        keeps its mapping and checks before writing (:func:`write_object`).
        ``writer``: who writes (e.g. a connection id; None: not known), so
        that it gets back the files it still has mapped. Same errors as :meth:`reserve`.
        """
        return self._reserve(obj_id, size, reuse=True, writer=writer)

    def _reserve(self, obj_id: str, size: int, reuse: bool,
                 writer: int | None = None) -> Reservation:
        self._check_open()
        path = self.path(obj_id)
        if obj_id in self._entries:
            raise ValueError(f"object {obj_id!r} is already in the store")
        if size < 0:
            raise ValueError(f"size must be >= 0, not {size}")
        staging = self._stage(obj_id, size, writer) if reuse else ""
        try:
            self._make_room(size, obj_id)
        except BaseException:
            if staging:
                self._staged.discard(obj_id)
                self._pool_add(staging, os.stat(staging).st_size, writer)
            raise
        self._entries[obj_id] = _Entry(size, _State.RESERVED, writer=writer)
        self._used += size
        return Reservation(path, staging)

    def seal(self, obj_id: str) -> None:
        """Record that the writer finished ``obj_id``'s file; it becomes readable.

        The file's actual size replaces the reserved one.

        Raises:
            KeyError: unknown id.
            ValueError: not reserved (already sealed), or the file is larger than
                reserved (the writer's fault: ``abort`` it).
            FileNotFoundError: the file was not written (``abort`` it).
        """
        entry = self._entry(obj_id)
        if entry.state is not _State.RESERVED:
            raise ValueError(f"object {obj_id!r} is already sealed")
        published = os.stat(self.path(obj_id))
        actual = published.st_size
        if actual > entry.size:
            raise ValueError(f"object {obj_id!r} has {actual} bytes, more than the "
                             f"{entry.size} reserved; abort it and reserve object_size()")
        self._used -= entry.size - actual
        entry.size = actual
        entry.state = _State.LOCAL
        if entry.pins == 0:
            self._lru[obj_id] = None
        if obj_id in self._staged:
            self._staged.discard(obj_id)
            self._unstage(self.path(obj_id) + _STAGING, published)

    def _unstage(self, staging: str, published: os.stat_result) -> None:
        """After a seal: count the reuse of a staging file, delete the staging name
        of a writer that died between linking and unlinking it, or keep the staging
        file again if the writer left it (someone still had it open:
        :func:`write_object`)."""
        try:
            st = os.stat(staging)
        except FileNotFoundError:
            self._reuse_count += 1
            return
        if (st.st_dev, st.st_ino) == (published.st_dev, published.st_ino):
            self._reuse_count += 1
            _unlink(staging)
        else:
            self._pool_add(staging, st.st_size)

    def abort(self, obj_id: str) -> None:
        """The writer of a reserved object failed: forget it and delete any partial
        file (also temporary files a crashed writer left). Unknown id: no-op.

        Raises:
            ValueError: the object is sealed (use :meth:`free`).
        """
        entry = self._entries.get(obj_id)
        if entry is None:
            return
        if entry.state is not _State.RESERVED:
            raise ValueError(f"object {obj_id!r} is sealed; free it instead")
        self.free(obj_id)

    def ensure_local(self, obj_id: str) -> str:
        """Make ``obj_id`` readable in shared memory and return its path.

        A spilled object is copied back (spilling least recently used ones to make
        room). The object becomes the most recently used. Pin it before handing
        the path to a reader, so it is not spilled before the reader maps it.

        Raises:
            KeyError: unknown id.
            ValueError: not sealed yet.
            ObjectStoreFullError: no room can be made for it.
            OSError: its spilled copy cannot be read (removed behind the store's back).
        """
        self._check_open()
        entry = self._entry(obj_id)
        path = self.path(obj_id)
        if entry.state is _State.LOCAL:
            if obj_id in self._lru:
                self._lru.move_to_end(obj_id)
            return path
        if entry.state is _State.RESERVED:
            raise ValueError(f"object {obj_id!r} is not sealed yet")
        staging = self._stage(obj_id, entry.size)
        try:
            self._make_room(entry.size, obj_id)
        except BaseException:
            if staging:
                self._staged.discard(obj_id)
                self._pool_add(staging, os.stat(staging).st_size)
            raise
        self._staged.discard(obj_id)  # _copy_atomic renames or removes it
        self._reuse_count += bool(staging)
        spilled = self._spill_path(obj_id)
        try:
            _copy_atomic(spilled, path, staging)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise ObjectStoreFullError(
                    f"cannot restore object {obj_id!r} ({entry.size} bytes): "
                    f"{self.directory} is full ({exc}). Give the node more shared memory "
                    "(/dev/shm) or a smaller object_store_memory.") from exc
            raise
        _unlink(spilled)
        entry.state = _State.LOCAL
        self._spilled -= entry.size
        self._used += entry.size
        self._num_spilled -= 1
        self._restore_count += 1
        if entry.pins == 0:
            self._lru[obj_id] = None
        return path

    def pin(self, obj_id: str) -> None:
        """Keep ``obj_id`` from being spilled until a matching :meth:`unpin`.

        Pins are counted. Pinning a spilled object does not restore it. KeyError if unknown.
        """
        entry = self._entry(obj_id)
        entry.pins += 1
        if entry.pins == 1:
            self._lru.pop(obj_id, None)

    def unpin(self, obj_id: str) -> None:
        """Undo one :meth:`pin`; the last one makes the object the most recently used.

        Raises:
            KeyError: unknown id.
            ValueError: the object is not pinned.
        """
        entry = self._entry(obj_id)
        if entry.pins == 0:
            raise ValueError(f"object {obj_id!r} is not pinned")
        entry.pins -= 1
        if entry.pins == 0 and entry.state is _State.LOCAL:
            self._lru[obj_id] = None

    def free(self, obj_id: str) -> None:
        """Delete ``obj_id`` wherever it is (pinned or not) and release its space.

        Unknown id: no-op. Processes that mapped it keep their views.
        """
        entry = self._entries.pop(obj_id, None)
        if entry is None:
            return
        self._lru.pop(obj_id, None)
        if entry.state is _State.SPILLED:
            _unlink(self._spill_path(obj_id))
            self._spilled -= entry.size
            self._num_spilled -= 1
            return
        path = self.path(obj_id)
        self._used -= entry.size
        if entry.state is _State.LOCAL:
            self._pool_add(path, entry.size, entry.writer)  # readers keep their views
            return
        _unlink(path)
        self._staged.discard(obj_id)
        for tmp in glob.glob(glob.escape(path) + ".*.tmp"):  # of a writer that died
            _unlink(tmp)

    def cleanup(self) -> None:
        """Delete the directory and the spill directory entirely and forget every
        object. Idempotent; the store cannot be used afterwards."""
        self._closed = True
        shutil.rmtree(self.directory, ignore_errors=True)
        shutil.rmtree(self.spill_directory, ignore_errors=True)
        self._entries.clear()
        self._lru.clear()
        self._pool.clear()
        self._owners.clear()
        self._staged.clear()
        self._used = self._spilled = self._num_spilled = self._pooled = 0

    def __enter__(self) -> StoreManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # -- spilling

    def _make_room(self, size: int, obj_id: str) -> None:
        """Spill least recently used objects until ``size`` more bytes fit, and
        delete freed files kept for reuse until they fit beside them too.

        Whether an object fits depends on the objects alone (the kept files always
        make way), so the store is full exactly when it would be without them.
        """
        if size > self.capacity:
            raise ObjectStoreFullError(
                f"object {obj_id!r} ({size} bytes) is larger than the whole object store "
                f"({self.capacity} bytes). Start the runtime with a larger "
                "object_store_memory, or split the value.")
        excess = self._used + size - self.capacity
        victims: list[str] = []
        freed = 0
        for victim in self._lru if excess > 0 else ():
            if freed >= excess:
                break
            victims.append(victim)
            freed += self._entries[victim].size
        if freed < excess:
            raise ObjectStoreFullError(
                f"object store full: object {obj_id!r} needs {size} bytes, "
                f"{self.capacity - self._used} of {self.capacity} are free and only "
                f"{freed} more can be spilled (the rest is pinned or being written). "
                "Free references to objects you no longer need, or start the runtime "
                "with a larger object_store_memory.")
        if victims:
            self._check_spill_space(freed, obj_id)
        self._trim_pool(self.capacity - (self._used - freed + size))
        for victim in victims:
            self._spill(victim)

    def _check_spill_space(self, nbytes: int, obj_id: str) -> None:
        if self.spill_capacity is not None:
            room = self.spill_capacity - self._spilled
            where = f"spill_capacity {self.spill_capacity} bytes"
        else:
            room = shutil.disk_usage(self.spill_directory).free
            where = f"free disk space under {self.spill_directory}"
        if nbytes > room:
            raise ObjectStoreFullError(
                f"object store and spill space full: making room for object {obj_id!r} "
                f"means spilling {nbytes} bytes, but only {room} are left ({where}). "
                "Free references to objects you no longer need, start the runtime with a "
                "larger object_store_memory, or give spilling more disk space.")

    def _spill(self, obj_id: str) -> None:
        entry = self._entries[obj_id]
        path = self.path(obj_id)
        try:
            _copy_atomic(path, self._spill_path(obj_id))
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise ObjectStoreFullError(
                    f"cannot spill object {obj_id!r}: {self.spill_directory} is full "
                    f"({exc}). Free references to objects you no longer need, or give "
                    "spilling more disk space.") from exc
            raise
        os.unlink(path)  # readers that mapped it keep their views
        del self._lru[obj_id]
        entry.state = _State.SPILLED
        self._used -= entry.size
        self._spilled += entry.size
        self._num_spilled += 1
        self._spill_count += 1

    # -- freed files kept for reuse

    def _pool_add(self, path: str, size: int, writer: int | None = None) -> None:
        """Keep the freed file at ``path`` (that ``writer`` wrote) for reuse under a
        name only the store knows, or delete it if it does not fit in the pool."""
        if not self.pool_capacity or size > self.pool_capacity:
            _unlink(path)
            return
        name = os.path.join(self.directory, f".free-{next(self._pool_names)}")
        try:
            os.rename(path, name)
        except FileNotFoundError:
            return
        self._pool[name] = size
        self._pooled += size
        if writer is not None:
            self._owners[name] = writer
        self._trim_pool(self.capacity - self._used)
        self._trim_pool(self.pool_capacity)

    def _trim_pool(self, room: int) -> None:
        """Delete the oldest kept files until they take at most ``room`` bytes."""
        while self._pool and self._pooled > room:
            name, size = self._pool.popitem(last=False)
            self._pooled -= size
            self._owners.pop(name, None)
            _unlink(name)

    def _stage(self, obj_id: str, size: int, writer: int | None = None) -> str:
        """Take a kept file for a new object of ``size`` bytes: the smallest one of
        ``size`` to ``_FIT * size`` bytes, else the largest one of ``size / _FIT``
        to ``size``, that no process has open or mapped, those ``writer`` wrote
        last first (not checked here: the writer may still map them, and checks
        itself). Renamed to the object's staging name, which it returns ("" if none)."""
        if _F_SETLEASE is None or _F_SETSIG is None:  # cannot tell who maps a file
            self._no_reuse()
            return ""
        bigger = sorted((n, p) for p, n in self._pool.items() if size <= n <= _FIT * size)
        smaller = sorted(((n, p) for p, n in self._pool.items() if size <= _FIT * n < _FIT * size),
                         reverse=True)
        fitting = bigger + smaller
        own = [c for c in fitting if writer is not None and self._owners.get(c[1]) == writer]
        for n, name in (own + [c for c in fitting if c not in own])[:_PROBES]:
            mine = (n, name) in own
            try:
                unused = True if mine else _unshared(name)
            except OSError:  # gone, or not ours: forget it
                unused = False
                self._pool_forget(name)
                _unlink(name)
            if unused is None:  # the kernel cannot tell who maps a file: never reuse
                self._no_reuse()
                return ""
            if unused:
                staging = self.path(obj_id) + _STAGING
                try:
                    os.rename(name, staging)
                except FileNotFoundError:
                    self._pool_forget(name)
                    continue
                self._pool_forget(name)
                self._staged.add(obj_id)
                return staging
        return ""

    def _pool_forget(self, name: str) -> None:
        size = self._pool.pop(name, None)
        if size is not None:
            self._pooled -= size
        self._owners.pop(name, None)

    def _no_reuse(self) -> None:
        self.pool_capacity = 0
        self._trim_pool(0)
