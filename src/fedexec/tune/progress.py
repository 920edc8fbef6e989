"""Progress reporting: a live table of trials in a terminal, a one-line summary
per interval otherwise, nothing with ``verbose=0``.

Reporters are called from the controller's loop at most once per interval (the
table is built only then), so they cost nothing per result.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .search.variant_generator import flatten_dict

__all__ = ["CLIReporter", "JupyterNotebookReporter", "ProgressReporter", "default_reporter"]

_AUTO = ("training_iteration", "time_total_s")


class ProgressReporter:
    """Base of progress reporters (as Ray's)."""

    def setup(self, start_time: float | None = None, total_samples: int | None = None,
              metric: str | None = None, mode: str | None = None, **kwargs: Any) -> None:
        self._start = start_time or time.time()
        self._total = total_samples
        self._metric = getattr(self, "_metric", None) or metric
        self._mode = getattr(self, "_mode", None) or mode

    def should_report(self, trials: Sequence[Any], done: bool = False) -> bool:
        return True

    def report(self, trials: Sequence[Any], done: bool, *sys_info: str) -> None:
        raise NotImplementedError


def _best(trials: Sequence[Any], metric: str | None, mode: str | None) -> Any:
    if not metric or not mode:
        return None
    scored = [t for t in trials if isinstance(t.last_result.get(metric), (int, float))]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda t: t.last_result[metric])


def summary_line(trials: Sequence[Any], start: float, metric: str | None,
                 mode: str | None, total: int | None = None) -> str:
    """``"tune: 4 RUNNING, 10 TERMINATED | best score=0.1 (trial_x) | 12.3 s"``."""
    counts = Counter(t.status for t in trials)
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    of = f" of {total}" if total and total > 0 else ""
    line = f"tune: {len(trials)}{of} trials ({states})"
    best = _best(trials, metric, mode)
    if best is not None:
        line += f" | best {metric}={best.last_result[metric]:.5g} ({best.trial_name})"
    return line + f" | {time.time() - start:.1f} s"


class CLIReporter(ProgressReporter):
    """A text table of trials every ``max_report_frequency`` seconds.

    Args:
        metric_columns: metrics to show (list, or dict ``{metric: header}``);
            default: the experiment's metric and the automatic progress fields.
        parameter_columns: config keys to show (default: those that vary).
        max_progress_rows: at most this many trial rows.
        max_report_frequency: seconds between reports.
        metric, mode: for the "best trial" line and ``sort_by_metric``.
        sort_by_metric: order rows by the metric, best first.
    """

    def __init__(self, metric_columns: Sequence[str] | dict[str, str] | None = None,
                 parameter_columns: Sequence[str] | dict[str, str] | None = None,
                 total_samples: int | None = None, max_progress_rows: int = 20,
                 max_error_rows: int = 20, max_column_length: int = 20,
                 max_report_frequency: float = 5, infer_limit: int = 3,
                 print_intermediate_tables: bool | None = None, metric: str | None = None,
                 mode: str | None = None, sort_by_metric: bool = False) -> None:
        self._metric_columns = metric_columns
        self._parameter_columns = parameter_columns
        self._max_rows = max_progress_rows
        self._max_col = max_column_length
        self._frequency = max_report_frequency
        self._metric, self._mode = metric, mode
        self._sort = sort_by_metric
        self._last = 0.0
        self._start = time.time()
        self._total = total_samples

    def add_metric_column(self, metric: str, representation: str | None = None) -> None:
        if isinstance(self._metric_columns, dict):
            self._metric_columns[metric] = representation or metric
        else:
            self._metric_columns = [*(self._metric_columns or []), metric]

    def should_report(self, trials: Sequence[Any], done: bool = False) -> bool:
        now = time.time()
        if done or now - self._last >= self._frequency:
            self._last = now
            return True
        return False

    def table(self, trials: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
        """The header and rows of the progress table."""
        metrics = self._metric_columns
        if metrics is None:
            metrics = [m for m in ([self._metric] if self._metric else []) + list(_AUTO)]
        names = dict(metrics) if isinstance(metrics, dict) else {m: m for m in metrics}
        params = self._parameter_columns
        if params is None:
            params = _varying([flatten_dict(t.config) for t in trials])
        pnames = dict(params) if isinstance(params, dict) else {p: p for p in params}
        rows_src = list(trials)
        if self._sort and self._metric:
            sign = -1 if self._mode == "max" else 1
            rows_src.sort(key=lambda t: (self._metric not in t.last_result,
                                         sign * float(t.last_result.get(self._metric, 0))))
        header = ["trial", "status", *pnames.values(), *names.values()]
        rows = []
        for trial in rows_src[: self._max_rows]:
            flat = flatten_dict(trial.config)
            cells = [str(trial), trial.status]  # the name is never shortened
            cells += [_fmt(flat.get(p), self._max_col) for p in pnames]
            cells += [_fmt(trial.last_result.get(m), self._max_col) for m in names]
            rows.append(cells)
        return header, rows

    def report(self, trials: Sequence[Any], done: bool, *sys_info: str) -> None:
        print(self._text(trials, done, *sys_info), flush=True)

    def _text(self, trials: Sequence[Any], done: bool, *sys_info: str) -> str:
        header, rows = self.table(trials)
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
        line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
        body = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
        more = len(trials) - len(rows)
        tail = [f"... {more} more trials"] if more > 0 else []
        title = summary_line(trials, self._start, self._metric, self._mode, self._total)
        return "\n".join([f"== {title} ==", *sys_info, line, *body, *tail])


class JupyterNotebookReporter(CLIReporter):
    """As :class:`CLIReporter` (a notebook shows the same text table)."""


class _LiveTable(CLIReporter):
    """The table redrawn in place (``rich``'s Live display, when installed)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_report_frequency=1.0, **kwargs)
        self._live: Any = None

    def report(self, trials: Sequence[Any], done: bool, *sys_info: str) -> None:
        try:
            from rich.live import Live
            from rich.table import Table
        except ImportError:
            super().report(trials, done, *sys_info)
            return
        header, rows = self.table(trials)
        table = Table(title=summary_line(trials, self._start, self._metric, self._mode,
                                         self._total))
        for h in header:
            table.add_column(h)
        for row in rows:
            table.add_row(*row)
        if len(trials) > len(rows):
            table.caption = f"... {len(trials) - len(rows)} more trials"
        if self._live is None:
            self._live = Live(table, auto_refresh=False, transient=False)
            self._live.start()
        self._live.update(table, refresh=True)
        if done:
            self._live.stop()
            self._live = None


class _LineReporter(ProgressReporter):
    """One summary line per interval (output that is not a terminal)."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last = time.time()
        self._start = time.time()
        self._total: int | None = None

    def should_report(self, trials: Sequence[Any], done: bool = False) -> bool:
        now = time.time()
        if done or now - self._last >= self._interval:
            self._last = now
            return True
        return False

    def report(self, trials: Sequence[Any], done: bool, *sys_info: str) -> None:
        print(summary_line(trials, self._start, self._metric, self._mode, self._total),
              flush=True)


def default_reporter(verbose: int) -> ProgressReporter | None:
    """The reporter for ``verbose`` and the kind of output: a live table in a
    terminal, summary lines otherwise, none at ``verbose=0``."""
    if verbose <= 0:
        return None
    if sys.stdout.isatty():
        return _LiveTable()
    return _LineReporter()


def _varying(configs: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, set[str]] = {}
    for flat in configs:
        for k, v in flat.items():
            keys.setdefault(k, set()).add(repr(v))
    return [k for k, vals in keys.items() if len(vals) > 1 or len(configs) == 1][:8]


def _fmt(value: Any, width: int) -> str:
    if value is None:
        return ""
    text = f"{value:.5g}" if isinstance(value, float) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."
