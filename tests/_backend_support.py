"""Helpers shared by the test directories of the backends (``tests/dask``,
``tests/spark``, ``tests/native``): task bodies, test bodies that hold for every
backend they are run on, and a probe of a runtime's authenticated sockets.

Importable as ``_backend_support`` because ``tests`` is on pytest's
``pythonpath`` (see ``pyproject.toml``); task bodies here are pickled by
reference, so worker processes import this module too.
"""

from __future__ import annotations

import importlib
import os
import pickle
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

import fedexec

T = 60


# --------------------------------------------------------------------------- tasks
def square(x: int) -> int:
    return x * x


def add_one(x: int) -> int:
    return x + 1


def die_on_first_call(directory: str) -> int:
    """Kill this worker process the first time (``directory`` remembers it); 41 after."""
    marker = os.path.join(directory, "died")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return 41


# --------------------------------------------------------------------------- waiting
class Counter:
    """An actor: a count from ``start``; where (node) and in which process it runs."""

    def __init__(self, start: int = 0):
        self.n = start

    def add(self, k: int = 1) -> int:
        self.n += k
        return self.n

    def where(self) -> str:
        return fedexec.get_runtime_context().node_id

    def pid(self) -> int:
        return os.getpid()


class Recorder:
    """A test actor that records the values it is given, in order, and says its node."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def add(self, x: int) -> list[int]:
        self.seen.append(x)
        return list(self.seen)

    def node(self) -> str:
        return fedexec.get_runtime_context().node_id


def poll_until(predicate: Callable[[], bool], timeout: float = 30.0,
               interval: float = 0.02) -> bool:
    """Call ``predicate`` until it is true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def exited(pid: int) -> bool:
    """True when process ``pid`` has exited: gone, or a zombie not yet reaped (its
    parent, or init, collects it later). Never raises for a process that exits
    while it is being looked at."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --------------------------------------------------------------------------- test bodies
def check_missing_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch, backend: str,
                                             dependency: str) -> None:
    """Without ``dependency`` installed, ``Executor(backend=backend)`` raises
    ``BackendUnavailableError`` naming the ``fedexec[backend]`` extra."""
    package = f"fedexec.backends.{backend}"
    for name in [m for m in sys.modules if m.startswith(package)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, dependency, None)
    with pytest.raises(fedexec.BackendUnavailableError,
                       match=rf'pip install "fedexec\[{backend}\]"'):
        fedexec.Executor(backend=backend)
    monkeypatch.undo()
    importlib.import_module(package)


def check_values_stay_readable_after_shutdown(executor: fedexec.Executor) -> None:
    """Put values, and tasks' results not fetched before ``shutdown``, small and
    large (out of the store's shared memory), stay readable, as the stdlib's
    futures' results do."""
    import numpy as np

    put = executor.put({"a": 1})
    big_put = executor.put(np.arange(1_000_000))
    result = executor.submit(square, 12)
    big = executor.submit(np.ones, 1_000_000)
    executor.wait([result, big], num_returns=2, timeout=T)  # finished, not fetched yet
    executor.shutdown()
    assert put.result(timeout=0) == {"a": 1}
    assert result.result(timeout=0) == 144
    assert np.array_equal(big_put.result(timeout=0), np.arange(1_000_000))
    assert np.array_equal(big.result(timeout=0), np.ones(1_000_000))


def check_dependents_of_a_retried_task_get_its_result(executor: fedexec.Executor,
                                                      directory: Path) -> None:
    """A task whose worker died is retried (``max_retries``), and a task waiting
    for it gets the retried result."""
    upstream = executor.options(max_retries=1).submit(die_on_first_call, str(directory))
    downstream = executor.submit(add_one, upstream)
    assert executor.get(downstream, timeout=T) == 42
    assert executor.get(upstream, timeout=T) == 41


# --------------------------------------------------------------------------- sockets
class _Evil:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))  # would create the file if ever unpickled


def check_a_raw_pickle_is_dropped_unread(address: str, directory: Path) -> None:
    """A raw TCP peer of ``address`` (``"host:port"``, a fedexec listener) that sends
    a pickle instead of authenticating is hung up on, and nothing is unpickled."""
    marker = directory / "unpickled"
    host, port = address.rsplit(":", 1)
    payload = pickle.dumps(_Evil(str(marker)))
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        assert sock.recv(64).startswith(b"FDX1")
        sock.sendall(payload.ljust(64, b"\0") + payload * 4)
        sock.settimeout(10)
        try:
            assert sock.recv(64) == b""  # the listener closed the connection
        except ConnectionResetError:
            pass
    assert not marker.exists()
