"""The node's worker processes: forking a worker (from the node manager itself,
so that it starts with the node's imports), forwarding its output lines (prefixed
with its pid), reaping the ones that exited, SIGKILL, and the memory monitor that
picks a worker to kill when the machine runs short (``memory_monitor.py``). A
component the node manager owns (``NodeManager.processes``, a
:class:`WorkerProcesses`), over :class:`ProcessesNode`, what it uses of the node
(the worker table, the selector, what a forked child must close).

It keeps no state of its own: workers live in the node's ``workers`` /
``workers_by_pid`` tables; what a dead worker means for its tasks and actor is the
node's (``_worker_died``: the core decides).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any, Protocol

from ..._pids import pid_alive
from . import worker as worker_main  # imported once here: every fork starts with it
from .memory_monitor import Candidate, Kill, MemoryMonitor, worker_rss
from .protocol import ErrorKind
from .records import _Actor, _Conn, _Task, _Worker

if TYPE_CHECKING:
    from .core.scheduler import LocalScheduler
    from .lease_desk import LeaseDesk

__all__ = ["ProcessesNode", "WorkerProcesses"]

_READ = selectors.EVENT_READ


class ProcessesNode(Protocol):
    """What :class:`WorkerProcesses` uses of the node manager."""

    @property
    def node_id(self) -> str: ...
    @property
    def socket_path(self) -> str: ...
    @property
    def token(self) -> bytes: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def core(self) -> LocalScheduler: ...
    @property
    def workers(self) -> dict[str, _Worker]: ...
    @property
    def workers_by_pid(self) -> dict[int, _Worker]: ...
    @property
    def tasks(self) -> dict[str, _Task]: ...
    @property
    def actors(self) -> dict[str, _Actor]: ...
    @property
    def conns(self) -> dict[Any, Any]: ...
    @property
    def sel(self) -> selectors.BaseSelector: ...
    @property
    def listeners(self) -> list[socket.socket]: ...
    @property
    def memory(self) -> MemoryMonitor: ...
    @property
    def leases(self) -> LeaseDesk: ...
    @property
    def _wake_r(self) -> int: ...
    @property
    def _wake_w(self) -> int: ...

    def _worker_died(self, worker: _Worker, why: str,
                     error: tuple[ErrorKind, str] | None = None) -> None: ...


class WorkerProcesses:
    """The node's worker processes (see the module docstring)."""

    def __init__(self, node: ProcessesNode) -> None:
        self.node = node

    def spawn(self, worker_id: str) -> _Worker:
        log_r, log_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: become a worker
            try:
                os.close(log_r)
                os.dup2(log_w, 1)
                os.dup2(log_w, 2)
                os.close(log_w)
                self._child_close()
                worker_main.main_from_fork(self.node.socket_path, self.node.token, worker_id, self.node.node_id,
                                      self.node.config)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(1)
        os.close(log_w)
        os.set_blocking(log_r, False)
        worker = _Worker(worker_id, pid, log_r, self.node.core.workers[worker_id])
        self.node.workers[worker_id] = worker
        self.node.workers_by_pid[pid] = worker
        self.node.sel.register(log_r, _READ, worker)
        return worker

    def _child_close(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(Exception):
            self.node.sel.close()
        for listener in self.node.listeners:
            listener.close()
        for conn in self.node.conns.values():
            if isinstance(conn, _Conn):
                conn.sock.close()
        for w in self.node.workers.values():
            with contextlib.suppress(OSError):
                os.close(w.log_fd)
        os.close(self.node._wake_r)
        os.close(self.node._wake_w)

    def read_log(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.log_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(KeyError, ValueError):
                self.node.sel.unregister(worker.log_fd)
            with contextlib.suppress(OSError):
                os.close(worker.log_fd)
            if worker.log_buf:
                self._emit_log(worker, worker.log_buf + b"\n")
            return
        buf = worker.log_buf + data
        cut = buf.rfind(b"\n") + 1
        worker.log_buf = buf[cut:]
        if cut:
            self._emit_log(worker, buf[:cut])

    def _emit_log(self, worker: _Worker, chunk: bytes) -> None:
        prefix = f"(pid={worker.pid}) ".encode()
        lines = b"".join(prefix + line + b"\n" for line in chunk.splitlines())
        with contextlib.suppress(OSError):
            os.write(sys.stderr.fileno() if self.node.config.get("log_to_stderr") else 1, lines)

    def reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.node.workers_by_pid.get(pid)
            if worker is not None:
                self.node._worker_died(worker, "its process exited")

    def kill(self, worker: _Worker) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)


    # --------------------------------------------------------- memory monitor
    @property
    def memory_wait(self) -> float:
        """How long the loop may sleep before the memory monitor wants to look."""
        return self.node.memory.interval_s if self.node.memory.enabled else 1.0

    def check_memory(self, now: float) -> None:
        """Kill a worker if the node's memory use passed the threshold (see
        memory_monitor.py for whom)."""
        kill = self.node.memory.poll(now, self._memory_candidates, pid_alive)
        if kill is not None:
            self._oom_kill(kill)

    def _memory_candidates(self) -> list[Candidate]:
        out = []
        for worker_id, task_id, actor_id, retriable in self.node.core.running():
            w = self.node.workers.get(worker_id)
            t = self.node.tasks.get(task_id) if task_id is not None else None
            if w is not None and t is not None:
                out.append(Candidate(w.id, w.pid, t.id, t.name, t.started, retriable))
            elif w is not None and actor_id in self.node.actors:
                a = self.node.actors[actor_id]
                out.append(Candidate(w.id, w.pid, a.id, a.name or a.spec.get("class_name", ""),
                                     a.started, False, actor=True))
        for worker_id, leased in self.node.leases.running.items():  # (see lease_desk.py)
            w = self.node.workers.get(worker_id)
            if w is not None:
                out.append(Candidate(w.id, w.pid, leased.task_id, leased.name, leased.started,
                                     leased.retriable))
        return out

    def _oom_kill(self, kill: Kill) -> None:
        """SIGKILL the victim's worker; fail its task with OutOfMemoryError, or retry
        it if ``max_retries`` allows (the kill uses up one retry)."""
        worker = self.node.workers.get(kill.victim.worker_id)
        if worker is None or worker.pid != kill.victim.pid or worker.slot.state == "DEAD":
            return
        message = kill.describe(worker_rss(worker.pid))
        error = (ErrorKind.OUT_OF_MEMORY, f"{message} No retries were left (max_retries).")
        leased = self.node.leases.oom_killed(worker.id, *error)  # its caller asks why
        self.kill(worker)
        task = self.node.core.running_task(worker.id)
        if leased is not None:
            outcome = "retrying the task (max_retries)" if leased.retriable else \
                "failing the task with OutOfMemoryError"
        elif task is None:
            outcome = "its in-flight calls fail; it restarts if max_restarts allows"
        elif task.retries_left == 0:
            outcome = "failing the task with OutOfMemoryError"
        else:
            outcome = "retrying the task (max_retries)"
        sys.stderr.write(f"fedexec memory monitor (node {self.node.node_id}): killed worker pid "
                         f"{worker.pid}, {outcome}: {message}\n")
        # Now, not when it is reaped: its connection is closed, so nothing it still
        # sends counts, and a task with retries left goes back to the queue.
        self.node._worker_died(worker, "it was killed by the memory monitor: " + message, error)
