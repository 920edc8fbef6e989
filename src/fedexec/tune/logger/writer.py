"""The writer thread: every file the experiment writes, off the controller's path.

The controller hands over jobs (a trial started, a result, a trial ended, a
checkpoint to delete, the experiment state to save) and goes on; one daemon
thread runs them in order and flushes the open files whenever it runs out of
work. ``drain()`` waits until everything handed over so far is on disk.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from .logger import LoggerCallback

__all__ = ["Writer"]


class Writer:
    """Runs ``loggers`` and file jobs on one background thread."""

    def __init__(self, loggers: Iterable[LoggerCallback]) -> None:
        self.loggers = list(loggers)
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue())
        self._failed: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="tune-writer", daemon=True)
        self._thread.start()

    # -- jobs ------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._jobs.put((fn, args))

    def trial_start(self, trial: Any) -> None:
        self.submit(self._trial_start, trial)

    def trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        self.submit(self._each, "log_trial_result", iteration, trial, result)

    def trial_end(self, trial: Any, failed: bool = False) -> None:
        self.submit(self._each, "log_trial_end", trial, failed)

    def delete(self, path: str) -> None:
        self.submit(shutil.rmtree, path, True)

    def write_file(self, path: str, data: bytes | str) -> None:
        """Write ``data`` to ``path`` atomically (a temporary file, then rename)."""
        self.submit(write_atomic, path, data)

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every job handed over so far has run."""
        done = threading.Event()
        self._jobs.put((done.set, ()))
        done.wait(timeout)

    def close(self) -> None:
        self.drain()
        self._jobs.put(None)
        self._thread.join(30)

    # -- the thread ---------------------------------------------------------------
    def _trial_start(self, trial: Any) -> None:
        os.makedirs(trial.local_path, exist_ok=True)
        self._each("log_trial_start", trial)

    def _each(self, method: str, *args: Any) -> None:
        for logger in self.loggers:
            try:
                getattr(logger, method)(*args)
            except Exception as exc:
                name = type(logger).__name__
                if name not in self._failed:
                    self._failed.add(name)
                    warnings.warn(f"tune logger {name} failed in {method} ({exc!r}); its "
                                  "files may be incomplete", stacklevel=1)

    def _loop(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=0.5)
            except queue.Empty:
                job = ()  # type: ignore[assignment]
            if job is None:
                self._each("flush")
                return
            if job:
                fn, args = job
                try:
                    fn(*args)
                except Exception as exc:
                    warnings.warn(f"tune could not write its files: {exc!r}", stacklevel=1)
            if self._jobs.empty():
                self._each("flush")


def write_atomic(path: str, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` so a reader never sees half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode) as f:
        f.write(data)
    os.replace(tmp, path)
