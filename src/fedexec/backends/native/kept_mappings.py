"""Shared-memory files a writer keeps mapped between puts: the writer's half of
"Reusing freed files" in :mod:`.store`.

Copying a 200 MiB object into a kept (already allocated) tmpfs file through a new
mapping costs ~8-13 ms to fill the mapping's page table (``MAP_POPULATE``, one entry
per 4 KiB page), ~20 ms to copy and ~7-11 ms to tear the page table down again.
A writer (a driver's or a worker's client) that keeps its last mapping and its file
descriptor gets the next put into the same file for the copy alone: the node manager
hands a kept file preferably to the writer that wrote it last
(``StoreManager.reserve_segment(..., writer=...)``).

State, one :class:`KeptMappings` per process (``KEPT``), guarded by its lock::

    _maps : OrderedDict[(st_dev, st_ino), KeptMapping]   least recently used first
        .fd      the file opened O_RDWR: the one open file description the writer
                 holds; the write lease that proves "nobody else has it open or
                 mapped" is taken on it (its own mapping shares it, so it does not
                 count as another opener)
        .mapping a shared, writable mapping of .length bytes, page table filled

A writer takes an entry out (:meth:`KeptMappings.take`) for the duration of one
write, so two threads never use one mapping, and puts it back after publishing
(:meth:`KeptMappings.keep`), which closes the least recently used entries beyond
``limit``. Entries whose file the store has deleted meanwhile (``st_nlink == 0``:
trimmed from the pool, spilled, or deleted when freed with a reader attached) are
closed at every write (:meth:`KeptMappings.sweep`); until then their pages stay
allocated, uncounted by the store: at most ``limit`` files per writer process,
until its next put or exit (store.py, "Capacity accounting is approximate"). A
forked child closes its copies of the entries; the parent's are untouched. Python's
``mmap`` keeps a duplicate of the descriptor: two descriptors per entry, one open
file description.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["KEPT", "KeptMapping", "KeptMappings"]

_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


@dataclass(eq=False)
class KeptMapping:
    """One file a writer holds open (``fd``, read-write) and maybe mapped."""

    key: tuple[int, int]
    fd: int
    mapping: mmap.mmap | None = None
    length: int = 0

    def map(self, length: int) -> mmap.mmap:
        """(Re)map the first ``length`` bytes, page table filled up front."""
        self.unmap()
        self.mapping = mmap.mmap(self.fd, length, flags=mmap.MAP_SHARED | _MAP_POPULATE,
                                 prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.length = length
        return self.mapping

    def unmap(self) -> None:
        if self.mapping is not None:
            self.mapping.close()
            self.mapping, self.length = None, 0

    def close(self) -> None:
        """Unmap and close; the file itself is the store's."""
        self.unmap()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def deleted(self) -> bool:
        """Whether the store deleted the file (no name left)."""
        return os.fstat(self.fd).st_nlink == 0


class KeptMappings:
    """At most ``limit`` mapped files of this process, reused by later writes."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self._maps: OrderedDict[tuple[int, int], KeptMapping] = OrderedDict()

    def take(self, key: tuple[int, int]) -> KeptMapping | None:
        """Remove and return the entry of the file ``key`` (st_dev, st_ino), if any;
        closes entries of deleted files."""
        with self._lock:
            found = self._maps.pop(key, None)
        self.sweep()
        return found

    def sweep(self) -> None:
        """Close the entries whose file the store deleted."""
        with self._lock:
            stale = [k for k, m in self._maps.items() if m.deleted()]
            gone = [self._maps.pop(k) for k in stale]
        for entry in gone:
            entry.close()

    def keep(self, entry: KeptMapping) -> None:
        """Put ``entry`` back as the most recently used; close what is beyond the limit."""
        with self._lock:
            self._maps[entry.key] = entry
            gone = []
            while len(self._maps) > self.limit:
                gone.append(self._maps.popitem(last=False)[1])
        for old in gone:
            old.close()

    def __len__(self) -> int:
        return len(self._maps)

    def clear(self) -> None:
        """Close every entry (e.g. before a test counts open files)."""
        with self._lock:
            entries = list(self._maps.values())
            self._maps.clear()
        for entry in entries:
            entry.close()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork
        entries = list(self._maps.values())
        self._maps.clear()
        for entry in entries:
            entry.close()


#: This process's kept mappings: one file, the last one written (see the docstring).
KEPT = KeptMappings(limit=1)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=KEPT._after_fork_in_child)
