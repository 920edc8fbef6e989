"""User metrics, recorded from any task, actor or driver and aggregated at the head.

    from fedexec.metrics import Counter, Gauge, Histogram

    done = Counter("rows_done", "rows processed", tag_keys=("stage",))
    done.inc(128, tags={"stage": "parse"})
    Gauge("queue_len").set(7)
    Histogram("batch_s", boundaries=[0.01, 0.1, 1.0]).observe(0.04)

The head's dashboard exports them on ``/metrics`` (Prometheus text; counters get
the ``_total`` suffix). How they travel: each process adds what it records into a
local table; a background thread sends the table's deltas to the process's node
manager about once a second (one request per flush, however many series), and
the node adds them into its own table. The dashboard asks every node for its
table on each scrape (one GATHER through the head) and merges them: counters and
histograms add up, a gauge shows its newest value. A node that dies takes the
counts it held with it.

On a backend without a node manager (``local``, ``dask``, ``spark``), values stay
in the recording process.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import _runtime
from ._metric_table import MetricTable

__all__ = ["Counter", "Gauge", "Histogram", "Metric", "flush"]

#: Seconds between two flushes of a process's recorded values to its node.
FLUSH_INTERVAL_S = 1.0
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_DEFAULT_BOUNDARIES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Recorder:
    """This process's values since the last flush, and the thread that sends them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.table = MetricTable()
        self.backend: Any = None
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()

    def record(self, row: dict[str, Any]) -> None:
        backend = _runtime.current_backend()
        with self.lock:
            if backend is not None:
                self.backend = backend
            self.table.merge([row])
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="fedexec-metrics",
                                               daemon=True)
                self.thread.start()

    def _loop(self) -> None:
        """Flush every interval while there is something to send and somewhere to
        send it; then end (the next ``record`` starts a new thread)."""
        while True:
            self.wake.wait(FLUSH_INTERVAL_S)
            self.wake.clear()
            sent = self.flush()
            with self.lock:
                if not sent or not len(self.table):
                    self.thread = None
                    return

    def flush(self) -> bool:
        """Send what was recorded to the node; False if it stays here (no node
        manager to send to, or the send failed: it goes with the next flush, which
        the next recorded value schedules)."""
        with self.lock:
            backend, rows = self.backend, self.table.take()
        push = getattr(backend, "push_metrics", None)
        if not rows:
            return True
        if push is not None:
            try:
                push(rows)
                return True
            except Exception:  # the runtime is gone or busy: keep the values
                pass
        with self.lock:
            self.table.merge(rows)
        return False


_recorder = _Recorder()


def _after_fork() -> None:
    global _recorder
    _recorder = _Recorder()


os.register_at_fork(after_in_child=_after_fork)


def flush() -> bool:
    """Send this process's recorded values to its node now (they are sent about
    once a second anyway); False if they stay in this process for now."""
    return _recorder.flush()


class Metric:
    """What the three kinds share: a name, a description, tag keys, default tags."""

    _kind = ""

    def __init__(self, name: str, description: str = "",
                 tag_keys: Sequence[str] | None = None) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"metric name {name!r} is not valid: use letters, digits, '_' "
                             "and ':' (not starting with a digit), as Prometheus does")
        if isinstance(tag_keys, str):
            raise TypeError(f"tag_keys must be a sequence of strings, got the string "
                            f"{tag_keys!r}: write ({tag_keys!r},)")
        self.name = name
        self.description = str(description)
        self.tag_keys = tuple(str(k) for k in (tag_keys or ()))
        for key in self.tag_keys:
            if not _NAME.match(key) or key.startswith("__"):
                raise ValueError(f"tag key {key!r} of metric {name!r} is not valid")
        self._default_tags: dict[str, str] = {}

    def set_default_tags(self, tags: Mapping[str, str]) -> Metric:
        """Tags used for every value recorded without them; returns ``self``."""
        self._default_tags = self._check_tags(dict(tags), partial=True)
        return self

    def _check_tags(self, tags: Mapping[str, Any], partial: bool = False) -> dict[str, str]:
        unknown = set(tags) - set(self.tag_keys)
        if unknown:
            raise ValueError(f"metric {self.name!r} has no tag key(s) {sorted(unknown)}; "
                             f"its tag_keys are {list(self.tag_keys)}")
        if not partial:
            missing = [k for k in self.tag_keys if k not in tags]
            if missing:
                raise ValueError(f"metric {self.name!r} needs a value for tag key(s) "
                                 f"{missing}: pass tags={{...}} or set_default_tags()")
        return {k: str(v) for k, v in tags.items()}

    def _row(self, tags: Mapping[str, Any] | None, **fields: Any) -> dict[str, Any]:
        merged = self._check_tags({**self._default_tags, **dict(tags or {})})
        return {"name": self.name, "kind": self._kind, "description": self.description,
                "tags": merged, "updated": time.time(), **fields}


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} takes a number, got {type(value).__name__}")
    return float(value)


class Counter(Metric):
    """A total that only goes up (exported as ``<name>_total``)."""

    _kind = "counter"

    def inc(self, value: float = 1.0, tags: Mapping[str, str] | None = None) -> None:
        """Add ``value`` (> 0) to the series of ``tags``."""
        amount = _number(value, "Counter.inc")
        if amount <= 0:
            raise ValueError(f"Counter.inc takes a positive value, got {value!r}")
        _recorder.record(self._row(tags, value=amount))


class Gauge(Metric):
    """A value that is set (the newest value recorded anywhere wins)."""

    _kind = "gauge"

    def set(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Set the series of ``tags`` to ``value``."""
        _recorder.record(self._row(tags, value=_number(value, "Gauge.set")))


class Histogram(Metric):
    """A distribution: counts of values per bucket (upper ``boundaries``), sum, count.

    Arguments as the contract orders them (``tag_keys`` before ``boundaries``); Ray's
    positional order, ``Histogram(name, description, [0.1, 1.0], ("route",))``, is
    recognised by its numbers and accepted too."""

    _kind = "histogram"

    def __init__(self, name: str, description: str = "",
                 tag_keys: Sequence[str] | None = None,
                 boundaries: Sequence[float] | None = None) -> None:
        if tag_keys is not None and not isinstance(tag_keys, str) and any(
                isinstance(k, (int, float)) for k in tag_keys):
            # Ray's positional order, Histogram(name, description, boundaries, tag_keys)
            tag_keys, boundaries = boundaries, tag_keys  # type: ignore[assignment]
        super().__init__(name, description, tag_keys)
        bounds = [float(b) for b in (boundaries if boundaries is not None
                                     else _DEFAULT_BOUNDARIES)]
        if not bounds or any(b <= 0 for b in bounds) or bounds != sorted(set(bounds)):
            raise ValueError(f"boundaries of histogram {name!r} must be positive and "
                             f"strictly increasing, got {list(boundaries or [])}")
        self.boundaries = bounds

    def observe(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Count ``value`` in its bucket of the series of ``tags``."""
        x = _number(value, "Histogram.observe")
        buckets = [0] * (len(self.boundaries) + 1)
        index = next((i for i, b in enumerate(self.boundaries) if x <= b),
                     len(self.boundaries))
        buckets[index] = 1
        _recorder.record(self._row(tags, boundaries=self.boundaries, buckets=buckets,
                                   sum=x, count=1))
