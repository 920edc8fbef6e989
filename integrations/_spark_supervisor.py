"""The watchdog between a fedexec actor and the Spark daemon it runs.

Run as ``python -m fedexec.integrations._spark_supervisor OWNER_PID WORKDIR -- CMD...``
by :class:`~fedexec.integrations._spark_daemon.SparkDaemon`. It starts CMD (the
Spark daemon) in a new process group, which then also holds everything the daemon
starts (a Spark worker's executor JVMs and their Python workers)::

    actor process (OWNER_PID)
      └─ supervisor (this module)
           └─ spark-class → java Master / Worker     group leader; output → WORKDIR/log
                └─ executor JVMs → pyspark daemons    same group

Files in WORKDIR: ``log`` (the daemon's output), ``pgid`` (written at start),
``exit_code`` (written once the daemon has exited).

The daemon's group is killed (SIGKILL to every member) when:

* the owner dies, SIGKILL included: its pidfd becomes readable (where pidfds are
  missing, the parent pid changes, checked every ``_POLL`` s);
* SIGTERM arrives (the actor's ``stop``): the group gets SIGTERM first and
  ``GRACE`` seconds for the daemon to exit;
* the daemon exits by itself: then the supervisor stays until the owner dies or
  stops it, so that the owner can read the log.

Once the owner is gone or has stopped it, the supervisor removes WORKDIR (logs,
Spark's work and local dirs) and exits. Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time

GRACE = 10.0  # seconds the daemon gets to exit after SIGTERM
_POLL = 0.5  # seconds between checks, where pidfds are missing

OWNER_GONE, STOP, EXITED = "owner gone", "stop", "exited"


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has exited (without reaping it: its pid still names
    the group, so the group can be killed afterwards)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class _Watch:
    """Waits for the events of the module docstring, without busy polling."""

    def __init__(self, owner: int, wake: int):
        self.owner = owner
        self.wake = wake
        self.owner_fd = _pidfd(owner)

    def owner_alive(self) -> bool:
        return os.getppid() == self.owner

    def next_event(self, child: int | None, timeout: float | None = None) -> str | None:
        """The first of OWNER_GONE, STOP, EXITED (``child`` exited) to happen,
        or None after ``timeout`` seconds."""
        child_fd = _pidfd(child) if child is not None else None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if not self.owner_alive():
                    return OWNER_GONE
                if child is not None and _exited(child):
                    return EXITED
                fds = [fd for fd in (self.owner_fd, child_fd, self.wake) if fd is not None]
                exact = self.owner_fd is not None and (child is None or child_fd is not None)
                wait = None if exact else _POLL
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                ready, _, _ = select.select(fds, [], [], wait)
                if self.wake in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake, 64)
                    return STOP
                if self.owner_fd in ready:
                    return OWNER_GONE
        finally:
            if child_fd is not None:
                os.close(child_fd)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _run(watch: _Watch, command: list[str], workdir: str) -> str:
    """Run the daemon until an event ends it; returns that event."""
    with open(os.path.join(workdir, "log"), "ab") as out:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, cwd=workdir,
                                 start_new_session=True)
    with open(os.path.join(workdir, "pgid"), "w") as f:
        f.write(str(child.pid))
    event = watch.next_event(child.pid) or EXITED  # (no timeout: never None)
    if event == STOP:
        _kill_group(child.pid, signal.SIGTERM)
        if watch.next_event(child.pid, GRACE) == OWNER_GONE:
            event = OWNER_GONE
    _kill_group(child.pid, signal.SIGKILL)  # the daemon and all it started
    code = child.wait()
    with open(os.path.join(workdir, "exit_code"), "w") as f:
        f.write(str(code))
    return event


def main(argv: list[str]) -> int:
    owner, workdir = int(argv[0]), argv[1]
    command = argv[argv.index("--") + 1:]
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch = _Watch(owner, wake_r)
    try:
        if not watch.owner_alive():  # the owner died before we got here
            return 1
        if _run(watch, command, workdir) == EXITED:
            watch.next_event(None)  # the owner reads the log, then stops us or dies
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
