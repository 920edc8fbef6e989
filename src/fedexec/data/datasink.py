"""Writing: the ``Datasink`` extension point.

A write is a map operator whose task hands its blocks to ``Datasink.write`` and
returns what that returns (small: paths, row counts) as a one-row block; the
driver gathers those results and calls ``on_write_complete`` once every task
succeeded (``on_write_failed`` otherwise). ``Dataset.write_datasink(sink)``
runs it; the file writers (``write_parquet`` ...) are sinks on top of this.

Writing a sink::

    class CSVSink(Datasink):
        def __init__(self, path): self.path = path
        def write(self, blocks, ctx):
            table = pa.concat_tables(list(blocks))
            out = f"{self.path}/{ctx.run_id}_{ctx.task_index:06d}.csv"
            pyarrow.csv.write_csv(table, out)
            return {"path": out, "rows": table.num_rows}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .block import Block
from .transforms import TaskContext

__all__ = ["Datasink", "run_write"]


class Datasink:
    """Where a dataset is written; subclass and write :meth:`write`."""

    def get_name(self) -> str:
        """The write operator's name: ``Write<Name>`` (the class name without "Datasink")."""
        name = type(self).__name__
        return name[: -len("Datasink")] if name.endswith("Datasink") and \
            name != "Datasink" else name

    def on_write_start(self) -> None:
        """Called in the driver before any write task starts (make the directory)."""

    def write(self, blocks: Iterable[Block], ctx: TaskContext) -> Any:
        """Write ``blocks`` (inside a task); return a small picklable result.
        ``ctx.task_index`` and ``ctx.run_id`` make unique file names. One copy of
        the sink may serve several tasks of a worker, even at once: keep no
        per-task state on ``self``."""
        raise NotImplementedError(f"{type(self).__name__} must implement write()")

    def on_write_complete(self, results: list[Any]) -> None:
        """Called in the driver with every task's result, in order, after all succeeded."""

    def on_write_failed(self, error: BaseException) -> None:
        """Called in the driver when the write failed (before the error is raised)."""


def run_write(sink: Datasink, results: Callable[[], list[Any]]) -> None:
    """The driver's part of a write: ``on_write_start``, then ``results()`` (runs
    the write tasks, returns their results in order), then ``on_write_complete``
    with them, or ``on_write_failed`` with the error before it is raised."""
    sink.on_write_start()
    try:
        written = results()
    except BaseException as e:
        sink.on_write_failed(e)
        raise
    sink.on_write_complete(written)
