"""Progress bars: one per operator of a running dataset, on a terminal only.

Shown on stderr when it is a terminal and ``DataContext.enable_progress_bars``
is on; otherwise nothing is created at all. Each bar shows the operator's name,
output blocks (of the expected number when known), rows and throughput. The
executor's loop calls :meth:`ProgressBars.update` (throttled here) and
:meth:`close` at the end; rich draws only when asked (no refresh thread).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from .operators import PhysicalOperator

__all__ = ["ProgressBars"]

_INTERVAL_S = 0.25


class ProgressBars:
    """The bars of one run (a no-op when disabled or not on a terminal).

    Args:
        ops: the run's operators, in order.
        enabled: the context's ``enable_progress_bars``.
        console: a ``rich.console.Console`` to draw on (default: stderr, only if
            it is a terminal).
    """

    def __init__(self, ops: Sequence[PhysicalOperator], enabled: bool, console: Any = None):
        self._ops = list(ops)
        self._progress: Any = None
        self._ids: list[Any] = []
        self._last = 0.0
        if not enabled or (console is None and not _stderr_is_terminal()):
            return
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        except ImportError:  # rich missing: no bars, never an error
            return
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rows]} rows, {task.fields[rate]} rows/s"),
            console=console or Console(stderr=True), auto_refresh=False, transient=False)
        for op in self._ops:
            self._ids.append(self._progress.add_task(op.name, total=_expected(op), rows=0,
                                                     rate="0"))
        self._progress.start()

    @property
    def active(self) -> bool:
        """Whether bars are being drawn."""
        return self._progress is not None

    def update(self, force: bool = False) -> None:
        """Redraw (at most every 0.25 s unless ``force``)."""
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last < _INTERVAL_S:
            return
        self._last = now
        for op, task_id in zip(self._ops, self._ids):
            st = op.stats
            span = st.wall_s or 1e-9
            self._progress.update(task_id, completed=st.blocks, total=_expected(op) or None,
                                  rows=st.rows, rate=f"{st.rows / span:,.0f}" if st.rows else "0")
        self._progress.refresh()

    def close(self) -> None:
        """Draw the final state and stop."""
        if self._progress is None:
            return
        self.update(force=True)
        self._progress.stop()
        self._progress = None


def _expected(op: PhysicalOperator) -> int | None:
    """Blocks the operator should produce, when known (its read tasks)."""
    expected = getattr(op, "expected_blocks", None)
    return expected() if callable(expected) else None


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
