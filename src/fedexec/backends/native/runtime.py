"""Starting and stopping an embedded native runtime (``Executor(address=None)``).

The driver starts the node manager as a subprocess (``python -m
fedexec.backends.native.node``), hands it its configuration and a fresh cluster
token on stdin, and waits for it to say it is ready; the node manager then forks
the worker pool. Everything of a session lives in two directories — a private
session directory (Unix socket, spill files) and the shared-memory store
directory — both removed at shutdown, by the node manager or, if it was killed,
by the driver. A driver that is SIGKILLed is noticed by the node manager (its
connection closes, and its parent pid changes), which then cleans up and exits;
a later start removes directories whose owners are all dead.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import cloudpickle
import psutil

from ..._ids import new_id
from ...exceptions import FedexecError
from .memory_monitor import settings as memory_settings

__all__ = ["EmbeddedRuntime", "NodeProcess"]

_SHM_ROOT = "/dev/shm"
_PREFIX = "fedexec-"


def _store_root() -> str:
    if os.path.isdir(_SHM_ROOT) and os.access(_SHM_ROOT, os.W_OK):
        return _SHM_ROOT
    return tempfile.gettempdir()


def _default_store_memory(root: str) -> int:
    avail = psutil.virtual_memory().available
    free = shutil.disk_usage(root).free
    return max(64 << 20, int(min(avail * 0.3, free * 0.9)))


def reap_stale_sessions() -> None:
    """Remove store directories of sessions whose driver and node manager are dead."""
    for root in {_store_root(), tempfile.gettempdir()}:
        with contextlib.suppress(OSError):
            for name in os.listdir(root):
                if not name.startswith(_PREFIX):
                    continue
                path = os.path.join(root, name)
                owners = os.path.join(path, ".owners")
                try:
                    with open(owners) as f:
                        pids = [int(p) for p in f.read().split()]
                except (OSError, ValueError):
                    continue
                if pids and not any(psutil.pid_exists(p) for p in pids):
                    shutil.rmtree(path, ignore_errors=True)


def preload_modules(value: Any) -> list[str]:
    """The ``worker_preload`` backend option, checked: names of modules the node
    imports before it forks its first worker, so that every worker starts with
    them already imported (``["torch"]`` saves each training worker its import).

    Raises:
        ValueError: not a list of names of modules importable here.
    """
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
            isinstance(name, str) and name for name in value):
        raise ValueError(f"backend_options['worker_preload'] must be a list of module "
                         f"names, such as ['torch'], got {value!r}")
    import importlib.util

    for name in value:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ValueError(f"backend_options['worker_preload'] names {name!r}, which is not "
                             f"importable in this Python ({sys.executable}); install it or "
                             f"remove it from the list")
    return list(value)


def detect_gpus() -> list[str]:
    """The GPU ids this machine offers: ``CUDA_VISIBLE_DEVICES`` if set, else what
    ``nvidia-smi -L`` lists (none when it is absent)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """``proc.wait(timeout)``, but woken the moment ``proc`` exits (a pidfd, Linux)
    instead of by ``Popen.wait``'s sleeps, which grow to 50 ms and made every
    shutdown of an embedded runtime ~50 ms slower than the node's own exit."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or already reaped
        proc.wait(timeout)
        return
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll(max(0.0, timeout) * 1000)
    finally:
        os.close(pidfd)
    proc.wait(0)  # reaps it now, or raises TimeoutExpired


class NodeProcess:
    """A node manager process we started, with its session's directories."""

    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, Any], dirs: list[str]):
        self.proc = proc
        self.info = info
        self.dirs = dirs

    @classmethod
    def launch(cls, config: Any, *, embedded: bool, tcp: tuple[str, int] | None = None,
               log_path: str | None = None, timeout: float = 60.0,
               head_address: str | None = None, owner_pid: int | None = None
               ) -> NodeProcess:
        """Start a node manager for ``config`` (a ``RuntimeConfig``); wait until ready.

        ``embedded``: it belongs to this process (it exits when we disconnect or
        die). Otherwise it is a cluster node that runs until stopped: the head, or,
        with ``head_address``, a node that joins that head (ready once joined);
        ``tcp`` is the (host, port) it also listens on, ``log_path`` where its
        output goes, ``owner_pid`` a process whose death stops it (tests).
        """
        memory = memory_settings(config.backend_options, os.environ)  # ValueError: nothing made
        preload = preload_modules(config.backend_options.get("worker_preload"))  # ValueError too
        reap_stale_sessions()
        session = os.urandom(6).hex()
        session_dir = tempfile.mkdtemp(prefix=f"{_PREFIX}{session}-")
        shm_dir = os.path.join(_store_root(), f"{_PREFIX}{session}")
        os.makedirs(shm_dir, mode=0o700, exist_ok=True)
        store_dir = os.path.join(shm_dir, "objects")
        os.makedirs(os.path.join(session_dir, "spill"), mode=0o700, exist_ok=True)
        from .cluster import token_bytes

        token = token_bytes(config.token) if config.token else os.urandom(32)
        node_id = new_id()
        job_id = os.urandom(4).hex()
        opts = dict(config.backend_options)
        gpu_ids = detect_gpus()
        initializer = None
        if config.initializer is not None:
            initializer = cloudpickle.dumps((config.initializer, config.initargs)).hex()
        node_config = {
            "node_id": node_id,
            "job_id": job_id,
            "session_dir": session_dir,
            "store_dir": store_dir,
            "shm_dir": shm_dir,
            "spill_dir": os.path.join(session_dir, "spill"),
            "num_cpus": config.cpu_count(os.cpu_count() or 1),
            "num_gpus": len(gpu_ids) if config.num_gpus is None else config.num_gpus,
            "gpu_ids": gpu_ids,
            "resources": dict(config.resources),
            "memory": int(psutil.virtual_memory().available * 0.7),
            "object_store_memory": config.object_store_memory
            or _default_store_memory(_store_root()),
            "embedded": embedded,
            "parent_pid": os.getpid(),
            "initializer": initializer,
            "log_to_stderr": bool(opts.get("log_to_stderr", False)),
            # Workers import what the driver can: its sys.path and working directory.
            "sys_path": [p for p in sys.path if p],
            "cwd": os.getcwd(),
            "tcp_host": tcp[0] if tcp else None,
            "tcp_port": tcp[1] if tcp else None,
            "token": token.hex(),
            "head_address": head_address,
            "owner_pid": owner_pid,
            "heartbeat_interval": float(opts.get("heartbeat_interval", 0.5)),
            "heartbeat_timeout": float(opts.get("heartbeat_timeout", 5.0)),
            "worker_preload": preload,
            "max_finished_tasks": int(opts.get("max_finished_tasks", 10_000)),
            "state_dir": opts.get("state_dir"),
            **memory,
        }
        ready_r, ready_w = os.pipe()
        node_config["ready_fd"] = ready_w
        log = open(log_path, "ab") if log_path else None
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fedexec.backends.native.node"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                pass_fds=(ready_w,),
                start_new_session=True,  # a Ctrl-C in the terminal is the driver's alone
            )
        finally:
            os.close(ready_w)
            if log is not None:
                log.close()
        node = cls(proc, {
            "node_id": node_id,
            "job_id": job_id,
            "socket_path": os.path.join(session_dir, "node.sock"),
            "token": token,
            "role": "driver",
            "pid": proc.pid,
        }, [shm_dir, session_dir])
        with open(os.path.join(shm_dir, ".owners"), "w") as f:
            f.write(f"{os.getpid() if embedded else proc.pid} {proc.pid}\n")
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(node_config).encode())
            proc.stdin.close()
            node.info["address"] = node._wait_ready(ready_r, timeout)
        except BaseException:
            node.stop()
            raise
        finally:
            os.close(ready_r)
        return node

    def _wait_ready(self, fd: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FedexecError(f"the node manager did not start within {timeout} s")
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if r:
                line = os.read(fd, 256)
                if line.startswith(b"ready"):
                    return line[5:].strip().decode()
                raise FedexecError(
                    f"the node manager exited during start-up (exit code {self.proc.poll()}); "
                    "see its error output above"
                )
            if self.proc.poll() is not None:
                raise FedexecError(
                    f"the node manager exited during start-up (exit code {self.proc.returncode})"
                )

    def attach_info(self) -> dict[str, Any]:
        """What a client needs to connect: socket path, token, node and job ids."""
        return dict(self.info)

    def stop(self, timeout: float = 10.0) -> None:
        """Wait for the node manager to exit (it does once its driver disconnects),
        terminating it if needed, and remove the session's directories."""
        proc = self.proc
        if proc.poll() is None:
            try:
                _wait_exit(proc, timeout)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


class EmbeddedRuntime(NodeProcess):
    """A node manager (and its workers) started by and for one driver."""

    @classmethod
    def start(cls, config: Any, timeout: float = 60.0) -> NodeProcess:
        """Start an embedded node manager for ``config``; wait until ready. With
        the ``dashboard`` option, it also listens on TCP (127.0.0.1, any port) and a
        dashboard serves it (``dashboard_host``, ``dashboard_port``: default
        127.0.0.1:8265); ``info`` then has ``dashboard_url`` (or ``dashboard_error``)."""
        opts = config.backend_options
        if not opts.get("dashboard"):
            return cls.launch(config, embedded=True, timeout=timeout)
        node = cls.launch(config, embedded=True, tcp=("127.0.0.1", 0), timeout=timeout)
        from ...dashboard import launch

        try:
            board = launch(head_address=node.info["address"], token=node.info["token"].hex(),
                           host=str(opts.get("dashboard_host", "127.0.0.1")),
                           port=int(opts.get("dashboard_port", 8265)), head_pid=node.proc.pid)
            node.info.update(dashboard_url=board["url"], dashboard_pid=board["pid"])
        except RuntimeError as exc:  # the runtime works without it: say why there is none
            node.info["dashboard_error"] = str(exc)
        return node

    def stop(self, timeout: float = 10.0) -> None:
        if self.info.get("dashboard_pid"):
            from ...dashboard import stop

            stop(self.info["dashboard_pid"])
        super().stop(timeout)
