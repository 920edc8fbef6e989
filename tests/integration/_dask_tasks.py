"""Functions the Dask-on-fedexec tests run in tasks: a light module (no dask imports),
so that worker processes import it quickly."""

from __future__ import annotations

import os
import threading

import fedexec


class CustomError(Exception):
    pass


def where(x):
    """``(x, pid, whether this runs inside a fedexec task)``."""
    return x, os.getpid(), fedexec.get_runtime_context().task_id is not None


def fail(x, exc_type=CustomError):
    raise exc_type(f"failed on {x!r}")


def fail_on(x, bad):
    if x == bad:
        raise CustomError(f"failed on {x!r}")
    return x


def counted(path, x):
    """``x * 10``, appending one line to ``path`` per execution (any process)."""
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x * 10


def counted_block(block, path):
    """``block + 1``, appending one line to ``path`` per execution."""
    with open(path, "a") as f:
        f.write("block\n")
    return block + 1


def executions(path) -> int:
    try:
        with open(path) as f:
            return len(f.readlines())
    except FileNotFoundError:
        return 0


def _load_tracked(payload, log):
    """Rebuilds a :class:`Tracked`; logs the loading process and thread."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {threading.get_ident()}\n")
    return Tracked(payload, log)


class Tracked:
    """A value that logs ``pid thread-id`` every time it is unpickled."""

    def __init__(self, payload, log):
        self.payload = payload
        self.log = log

    def __reduce__(self):
        return _load_tracked, (self.payload, self.log)


def make_tracked(i, log):
    return Tracked(list(range(i, i + 100)), log)


def merge_tracked(a, b):
    return Tracked(a.payload + b.payload, a.log)


def total(t):
    return sum(t.payload)
