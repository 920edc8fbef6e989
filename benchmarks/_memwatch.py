"""Peak memory of a whole system (this process, its descendants and its session),
sampled in a thread; used by ``data.py``'s streaming case (P4).

Each sample reads ``/proc/PID/status`` and ``/proc/PID/maps`` of every process and
adds up:

    rss    VmRSS of every process: what ``ps`` and ``psutil`` show (as asked for);
           a page of shared memory mapped by two processes counts twice
    anon   RssAnon of every process: the processes' own heaps
    shm    every shared-memory file the processes map (each file once, by inode,
           also unlinked ones, read through /proc/PID/map_files), plus every file
           in the store directories a system names (fedexec's store keeps objects
           as files that nobody may map at the moment): an object store's memory
    total  anon + shm: the memory the system holds, each page once

The peaks of ``rss`` and ``total`` are taken sample by sample. Spill directories
(``spill_dirs``) are watched too: the largest size seen of each file name, added
up, is the bytes spilled (a file written and removed between two samples is missed).
The process list is refreshed once a second; a sample costs a few milliseconds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

SHM_PREFIX = "/dev/shm/"


def _status_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of ``pid`` in KiB; zeros if it is gone."""
    rss = anon = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, anon


def _mapped_shm(pid: int, seen: dict[tuple[int, int], int]) -> None:
    """Add the shared-memory files ``pid`` maps to ``seen`` ((dev, inode) -> bytes)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = [ln for ln in f if SHM_PREFIX in ln]
    except OSError:
        return
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 6:
            continue
        path = parts[5].strip()
        try:
            if path.endswith(" (deleted)"):
                st = os.stat(f"/proc/{pid}/map_files/{parts[0]}")
            else:
                st = os.stat(path)
        except OSError:
            continue
        seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512


def _dir_files(path: str, seen: dict[tuple[int, int], int]) -> None:
    """Add every file under ``path`` to ``seen`` ((dev, inode) -> bytes allocated)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                _dir_files(entry.path, seen)
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
        except OSError:
            continue


def system_pids() -> set[int]:
    """This process, its descendants, and the processes of its session."""
    import psutil

    me = psutil.Process()
    pids = {me.pid}
    try:
        pids.update(c.pid for c in me.children(recursive=True))
    except psutil.Error:
        pass
    sid = os.getsid(0)
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                pids.add(p.pid)
        except (OSError, psutil.Error):
            continue
    return pids


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and of its children it has reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def system_cpu() -> dict[int, float]:
    """CPU seconds so far of each of the system's processes (:func:`system_pids`);
    a process reaped by another of them moves its seconds into that one's."""
    return {pid: _cpu_of(pid) for pid in system_pids()}


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the system's processes used from ``before`` to ``after``
    (:func:`system_cpu` snapshots; a process that exited unreaped is missed)."""
    return sum(max(0.0, v - before.get(pid, 0.0)) for pid, v in after.items())


class MemoryWatch:
    """Samples the system's memory every ``interval`` s between ``start()`` and
    ``stop()``; ``stop()`` returns the peaks in bytes (see the module docstring).

    ``store_dirs`` and ``spill_dirs`` are called once a second and return the
    directories whose files are the system's object store (in shared memory) and
    its spill files.
    """

    def __init__(self, interval: float = 0.2,
                 store_dirs: Callable[[], list[str]] | None = None,
                 spill_dirs: Callable[[], list[str]] | None = None) -> None:
        self.interval = interval
        self.store_dirs = store_dirs or (lambda: [])
        self.spill_dirs = spill_dirs or (lambda: [])
        self.peak = {"rss": 0, "anon": 0, "shm": 0, "total": 0}
        self.samples = 0
        self.processes = 0
        self._spilled: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memwatch", daemon=True)

    def start(self) -> MemoryWatch:
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=30)
        return {**{f"peak_{k}": v for k, v in self.peak.items()},
                "spilled": sum(self._spilled.values()), "spill_files": len(self._spilled),
                "samples": self.samples, "processes": self.processes}

    def _run(self) -> None:
        pids: set[int] = set()
        stores: list[str] = []
        spills: list[str] = []
        refreshed = 0.0
        while True:
            now = time.monotonic()
            if now - refreshed >= 1.0:
                pids, refreshed = system_pids(), now
                self.processes = max(self.processes, len(pids))
                try:
                    stores, spills = list(self.store_dirs()), list(self.spill_dirs())
                except Exception:  # a system's own lookup failing must not end the watch
                    stores, spills = [], []
            self._sample(pids, stores, spills)
            if self._stop.wait(self.interval):
                self._sample(pids, stores, spills)
                return

    def _sample(self, pids: set[int], stores: list[str], spills: list[str]) -> None:
        rss = anon = 0
        shm: dict[tuple[int, int], int] = {}
        for pid in pids:
            r, a = _status_kib(pid)
            rss, anon = rss + r * 1024, anon + a * 1024
            _mapped_shm(pid, shm)
        for d in stores:
            _dir_files(d, shm)
        shm_bytes = sum(shm.values())
        values = {"rss": rss, "anon": anon, "shm": shm_bytes, "total": anon + shm_bytes}
        for k, v in values.items():
            self.peak[k] = max(self.peak[k], v)
        for d in spills:
            try:
                for entry in os.scandir(d):
                    size = entry.stat(follow_symlinks=False).st_size
                    if size > self._spilled.get(entry.path, 0):
                        self._spilled[entry.path] = size
            except OSError:
                continue
        self.samples += 1
