"""Shared by the ``fedexec.data`` conformance tests: the fixture that makes the
module's executor the one datasets run on, and task-side helpers (importable by
workers, so pickled by reference)."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from pathlib import Path

import pytest

import fedexec.data as fd


def data_executor_fixture():
    """An autouse fixture: ``DataContext.executor`` is the test module's ``ex``
    (and the context's other settings are restored after each test)."""

    @pytest.fixture(autouse=True)
    def data_executor(ex):
        saved = fd.DataContext.get_current()
        ctx = saved.snapshot()
        ctx.executor = ex
        fd.DataContext._set_current(ctx)
        yield ex
        fd.DataContext._set_current(saved)

    return data_executor


def mark(directory: str, prefix: str) -> None:
    """Leave a uniquely named file ``prefix-*`` in ``directory`` (from any process)."""
    Path(directory, f"{prefix}-{uuid.uuid4().hex}").touch()


def count_marks(directory: str, prefix: str) -> int:
    return sum(name.startswith(f"{prefix}-") for name in os.listdir(directory))


class MarkingSource(fd.Datasource):
    """``n`` rows ``{"id": i}`` read by ``tasks`` read tasks, each leaving a
    ``read-*`` file in ``directory`` when it runs (and sleeping ``delay`` s), and
    yielding its rows in ``chunks`` tables (a ``chunk-*`` file each)."""

    def __init__(self, n: int, tasks: int, directory: str, delay: float = 0.0,
                 chunks: int = 1):
        self.n, self.tasks, self.directory, self.delay = n, tasks, directory, delay
        self.chunks = chunks

    def get_read_tasks(self, parallelism):
        import pyarrow as pa

        size = self.n // self.tasks
        return [fd.ReadTask(_MarkingRead(i * size, (i + 1) * size, self.directory, self.delay,
                                         self.chunks),
                            fd.BlockMetadata(num_rows=size, size_bytes=8 * size,
                                             schema=pa.schema([("id", pa.int64())])))
                for i in range(self.tasks)]


class _MarkingRead:
    """Yields its rows in ``chunks`` tables, leaving a ``chunk-*`` file for each."""

    def __init__(self, lo: int, hi: int, directory: str, delay: float, chunks: int = 1):
        self.lo, self.hi, self.directory, self.delay = lo, hi, directory, delay
        self.chunks = chunks

    def __call__(self):
        import numpy as np
        import pyarrow as pa

        mark(self.directory, "read")
        if self.delay:
            time.sleep(self.delay)
        bounds = np.linspace(self.lo, self.hi, self.chunks + 1).astype(int)
        for lo, hi in itertools.pairwise(bounds):
            mark(self.directory, "chunk")
            yield pa.table({"id": np.arange(lo, hi)})
