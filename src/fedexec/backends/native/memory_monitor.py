"""The memory monitor's policy: when a node's memory use passes a threshold, which
worker to kill. Pure decisions (``pick_victim``, ``MemoryMonitor.poll``) over a
snapshot the node manager hands in; the only I/O is reading memory use
(``MemoryReader``) and a worker's RSS, both injectable for tests::

    node manager loop ──poll(now, candidates, alive)──▶ MemoryMonitor
         ▲                                                │ every interval_s: read use;
         └──────────── Kill(victim, usage) or None ◀──────┘ past threshold: pick_victim

Which worker dies (newest first within each group, groups in this order):

1. a task that may be retried (``max_retries`` left, an OOM kill uses one up);
2. any other task;
3. an actor (its in-flight calls fail as on any actor crash; it restarts per
   ``max_restarts``).

After a kill nothing else is killed until that worker is gone (its memory is
given back), so one spike kills one worker, not the whole pool.

Memory use is the node's memory cgroup when this process is in one with a limit
(usage minus inactive file cache, against the limit), else the machine's
(``total - available``). Settings: ``memory_usage_threshold`` (default 0.95; also
``FEDEXEC_MEMORY_USAGE_THRESHOLD``, read when a runtime is started) and
``memory_monitor_interval_s`` (default 0.25; 0 turns the monitor off).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_THRESHOLD",
    "ENV_THRESHOLD",
    "Candidate",
    "Kill",
    "MemoryMonitor",
    "MemoryReader",
    "MemoryUsage",
    "pick_victim",
    "settings",
    "worker_rss",
]

DEFAULT_THRESHOLD = 0.95
DEFAULT_INTERVAL_S = 0.25
ENV_THRESHOLD = "FEDEXEC_MEMORY_USAGE_THRESHOLD"
_KILL_GRACE_S = 10.0  # stop waiting for a killed worker to vanish after this long


def settings(options: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, float]:
    """The monitor's settings from backend ``options``, else ``environ``, else the
    defaults. Raises ``ValueError`` for a threshold outside (0, 1] or a negative
    interval, naming where the bad value came from."""
    raw: Any = options.get("memory_usage_threshold")
    source = "the backend option memory_usage_threshold"
    if raw is None and environ.get(ENV_THRESHOLD):
        raw, source = environ[ENV_THRESHOLD], ENV_THRESHOLD
    threshold = DEFAULT_THRESHOLD if raw is None else _number(raw, source)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"{source} must be a fraction in (0, 1] of the node's memory, "
                         f"got {raw!r}")
    raw = options.get("memory_monitor_interval_s")
    interval = DEFAULT_INTERVAL_S if raw is None else _number(
        raw, "the backend option memory_monitor_interval_s")
    if interval < 0:
        raise ValueError(f"memory_monitor_interval_s must be >= 0 seconds (0 turns the "
                         f"memory monitor off), got {raw!r}")
    return {"memory_usage_threshold": threshold, "memory_monitor_interval_s": interval}


def _number(raw: Any, source: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{source} must be a number, got {raw!r}") from None
    if value != value:  # NaN
        raise ValueError(f"{source} must be a number, got {raw!r}")
    return value


# ------------------------------------------------------------------- reading
@dataclass(frozen=True)
class MemoryUsage:
    """Memory in use on the node: ``used`` of ``total`` bytes, and what was measured."""

    used: int
    total: int
    source: str  # "cgroup" or "system"

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total > 0 else 0.0


class MemoryReader:
    """Reads the node's memory use (see the module docstring). The cgroup is found
    once, from ``proc_cgroup`` and the hierarchy mounted at ``root``."""

    def __init__(self, proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup",
                 system: Callable[[], Any] = psutil.virtual_memory):
        self._system = system
        self._files = _find_cgroup(proc_cgroup, root)

    def __call__(self) -> MemoryUsage:
        machine = self._system()
        if self._files is not None:
            found = _read_cgroup(*self._files)
            if found is not None and found[1] < machine.total:  # a real limit
                return MemoryUsage(found[0], found[1], "cgroup")
        return MemoryUsage(machine.total - machine.available, machine.total, "system")


def _find_cgroup(proc_cgroup: str, root: str) -> tuple[str, str, str, str] | None:
    """(limit, usage, stat file, inactive-file key) of this process's memory
    cgroup: cgroup v1's memory controller if mounted, else the v2 unified one."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    v1 = v2 = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if "memory" in controllers.split(","):
            v1 = path
        elif hid == "0" and controllers == "":
            v2 = path
    layouts = []
    if v1 is not None:
        layouts.append((os.path.join(root, "memory"), v1, "memory.limit_in_bytes",
                        "memory.usage_in_bytes", "total_inactive_file"))
    if v2 is not None:
        layouts.append((root, v2, "memory.max", "memory.current", "inactive_file"))
    for base, path, limit, usage, key in layouts:
        # Inside a cgroup namespace the process's own cgroup is the mount's root.
        for d in (os.path.join(base, path.lstrip("/")), base):
            if os.path.exists(os.path.join(d, limit)) and os.path.exists(os.path.join(d, usage)):
                return (os.path.join(d, limit), os.path.join(d, usage),
                        os.path.join(d, "memory.stat"), key)
    return None


def _read_cgroup(limit_file: str, usage_file: str, stat_file: str, key: str
                 ) -> tuple[int, int] | None:
    """(used, limit) of a cgroup, or None when it has no limit or cannot be read."""
    try:
        with open(limit_file) as f:
            raw = f.read().strip()
        if raw == "max":
            return None
        limit = int(raw)
        with open(usage_file) as f:
            usage = int(f.read().strip())
        inactive = 0
        with open(stat_file) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    inactive = int(value)
                    break
    except (OSError, ValueError):
        return None
    return max(0, usage - inactive), limit


def worker_rss(pid: int) -> int | None:
    """A process's resident memory in bytes (None if it is gone)."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


# -------------------------------------------------------------------- policy
@dataclass(frozen=True)
class Candidate:
    """A worker running something the monitor may kill.

    ``started``: when its current task (or its actor) started, on any clock that
    only grows; ``retriable``: the task has ``max_retries`` left."""

    worker_id: str
    pid: int
    task_id: str  # the task's id, or the actor's
    name: str
    started: float
    retriable: bool
    actor: bool = False


def pick_victim(candidates: Iterable[Candidate]) -> Candidate | None:
    """The worker to kill: retriable tasks, then other tasks, then actors; the most
    recently started within each group. None when there is nothing to kill."""
    return max(candidates, default=None,
               key=lambda c: (not c.actor, c.retriable and not c.actor, c.started))


@dataclass(frozen=True)
class Kill:
    """The monitor's decision: kill ``victim`` because of ``usage``."""

    victim: Candidate
    usage: MemoryUsage
    threshold: float

    def describe(self, rss: int | None) -> str:
        """What happened and how to avoid it (the error message and the log line)."""
        v, u = self.victim, self.usage
        what = f"actor {v.name!r} ({v.task_id})" if v.actor else f"task {v.name!r} ({v.task_id})"
        group = "actor" if v.actor else "retriable task" if v.retriable else "task"
        where = "its memory cgroup" if u.source == "cgroup" else "the machine"
        worker = f"its worker (pid {v.pid}) used {_size(rss)}" if rss is not None else \
            f"its worker was pid {v.pid}"
        return (f"{what} was killed by the memory monitor: memory use on this node "
                f"({where}) was {_size(u.used)} of {_size(u.total)} ({u.fraction:.1%}), past "
                f"memory_usage_threshold={self.threshold:.3g}; {worker}, and it was the most "
                f"recently started {group} on the node. To avoid this, run fewer such tasks "
                "at once (ask for more num_cpus, or for memory=<bytes>, per task), or raise "
                f"memory_usage_threshold (a backend option, or {ENV_THRESHOLD}).")


def _size(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


class MemoryMonitor:
    """When to look and whom to kill (see the module docstring).

    ``poll`` is called from the node manager's loop as often as it likes; it reads
    memory use once per ``interval_s`` and returns a :class:`Kill` or None."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD,
                 interval_s: float = DEFAULT_INTERVAL_S,
                 read: Callable[[], MemoryUsage] | None = None):
        self.threshold = threshold
        self.interval_s = interval_s
        self._read = read
        self._next = 0.0
        self._killed: int | None = None  # pid of the last victim, until it is gone
        self._killed_at = 0.0

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def poll(self, now: float, candidates: Callable[[], Iterable[Candidate]],
             alive: Callable[[int], bool]) -> Kill | None:
        """The worker to kill now, if memory use passed the threshold.

        ``candidates`` is called only then; ``alive(pid)`` says whether the last
        victim still holds its memory (no other kill until it is gone)."""
        if not self.enabled or now < self._next:
            return None
        self._next = now + self.interval_s
        if self._killed is not None:
            if alive(self._killed) and now - self._killed_at < _KILL_GRACE_S:
                return None
            self._killed = None
        if self._read is None:
            self._read = MemoryReader()
        usage = self._read()
        if usage.fraction <= self.threshold:
            return None
        victim = pick_victim(candidates())
        if victim is None:
            return None
        self._killed, self._killed_at = victim.pid, now
        return Kill(victim, usage, self.threshold)
