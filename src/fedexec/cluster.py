"""Start native node managers from Python: a head, and nodes that join it.

What ``fedexec start`` does from the command line, as handles a program owns
(``fedexec.testing.Cluster`` and ``fedexec.integrations.spark`` are built on it)::

    head = fedexec.cluster.start_head(num_cpus=0, owner_pid=os.getpid())
    node = fedexec.cluster.start_node(head.address, token=head.token, num_cpus=2)
    with fedexec.Executor(address=head.address) as ex:    # the token is found for you
        ...
    node.stop(); head.stop()

Each node manager is a separate process with its own object store and workers,
listening on TCP (``127.0.0.1`` unless ``host`` says otherwise) and authenticated
with the cluster token. While a head started here runs, ``Executor(address=
head.address)`` on this machine finds its token without being given it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping
from typing import Any

from .backends.native import NativeBackend
from .backends.native import cluster as _native_cluster
from .backends.native.runtime import NodeProcess
from .config import RuntimeConfig

__all__ = ["NodeHandle", "start_head", "start_node"]


class NodeHandle:
    """A node manager process started by this process.

    Attributes:
        node_id: the node's id, as ``Executor.nodes()`` lists it.
        address: its ``host:port`` (for a head: what ``Executor(address=...)`` takes).
        pid: the node manager's process id.
        token: the cluster token (hex).
        resources: what the node offers (``CPU``, ``GPU``, custom).
    """

    def __init__(self, process: NodeProcess, token: str, resources: dict[str, float],
                 head: bool):
        self._process = process
        self.node_id: str = process.info["node_id"]
        self.address: str = process.info["address"]
        self.pid: int = process.proc.pid
        self.token = token
        self.resources = resources
        self.is_head = head

    def alive(self) -> bool:
        """True while the node manager process runs."""
        return self._process.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for the process to exit; its exit code, or
        None if it still runs."""
        with contextlib.suppress(Exception):
            return self._process.proc.wait(timeout)
        return None

    def kill(self) -> None:
        """SIGKILL the node manager (its workers exit when it goes), as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait(10)
        self._forget()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the node gracefully (SIGTERM, then SIGKILL after ``timeout``) and
        remove its directories."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        self._process.stop(timeout=timeout)
        self._forget()

    def _forget(self) -> None:
        if self.is_head:
            _native_cluster.forget_head_token(self.address)

    def __repr__(self) -> str:
        role = "head" if self.is_head else "node"
        return f"NodeHandle({role} {self.node_id}, {self.address}, pid={self.pid})"


def _launch(*, head_address: str | None, token: str, host: str, port: int,
            num_cpus: float | None, num_gpus: float | None,
            resources: Mapping[str, float] | None, object_store_memory: int | None,
            owner_pid: int | None, log_path: str | None, timeout: float,
            initializer: Any, initargs: tuple[Any, ...],
            backend_options: dict[str, Any]) -> NodeHandle:
    NativeBackend.check_options(backend_options)
    config = RuntimeConfig.make(num_cpus=num_cpus, num_gpus=num_gpus,
                                resources=dict(resources or {}),
                                object_store_memory=object_store_memory, token=token,
                                initializer=initializer, initargs=initargs,
                                backend_options=backend_options)
    process = NodeProcess.launch(config, embedded=False, tcp=(host, port),
                                 head_address=head_address, owner_pid=owner_pid,
                                 log_path=log_path, timeout=timeout)
    offered = {"CPU": float(config.cpu_count(os.cpu_count() or 1)), **config.resources}
    if num_gpus:
        offered["GPU"] = float(num_gpus)
    handle = NodeHandle(process, token, offered, head=head_address is None)
    if handle.is_head:
        _native_cluster.remember_head_token(handle.address, token, handle.pid)
    return handle


def start_head(*, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
               num_cpus: float | None = None, num_gpus: float | None = None,
               resources: Mapping[str, float] | None = None,
               object_store_memory: int | None = None, owner_pid: int | None = None,
               log_path: str | None = None, timeout: float = 60.0,
               initializer: Any = None, initargs: tuple[Any, ...] = (),
               **backend_options: Any) -> NodeHandle:
    """Start a head node manager; return once it accepts connections.

    Args:
        host, port: where it listens (port 0: any free port).
        token: the cluster token (hex); a fresh random one when None.
        num_cpus, num_gpus, resources, object_store_memory: what it offers
            (``num_cpus`` defaults to this machine's CPUs; 0 keeps tasks off the head).
        owner_pid: a process whose death stops the node (e.g. ``os.getpid()``).
        log_path: a file for the node manager's output (default: inherited).
        timeout: seconds to wait for it to start.
        initializer, initargs: run in each of its worker processes first.
        **backend_options: native runtime options (``heartbeat_interval``, ...).

    Raises:
        FedexecError: it did not start (the message says why).
        ValueError: an invalid argument.
    """
    return _launch(head_address=None, token=token or os.urandom(32).hex(), host=host,
                   port=port, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                   object_store_memory=object_store_memory, owner_pid=owner_pid,
                   log_path=log_path, timeout=timeout, initializer=initializer,
                   initargs=initargs, backend_options=backend_options)


def start_node(head_address: str, *, token: str, host: str = "127.0.0.1", port: int = 0,
               num_cpus: float | None = 1, num_gpus: float | None = None,
               resources: Mapping[str, float] | None = None,
               object_store_memory: int | None = None, owner_pid: int | None = None,
               log_path: str | None = None, timeout: float = 60.0,
               initializer: Any = None, initargs: tuple[Any, ...] = (),
               **backend_options: Any) -> NodeHandle:
    """Start a node manager that joins the head at ``head_address`` (``host:port``);
    return once it has joined. Arguments as :func:`start_head`; ``token`` is the
    head's.

    Raises:
        FedexecError: it did not start or could not join (wrong token, no head).
    """
    return _launch(head_address=head_address, token=token, host=host, port=port,
                   num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                   object_store_memory=object_store_memory, owner_pid=owner_pid,
                   log_path=log_path, timeout=timeout, initializer=initializer,
                   initargs=initargs, backend_options=backend_options)
