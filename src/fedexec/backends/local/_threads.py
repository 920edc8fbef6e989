"""A growing pool of daemon threads: each job gets a thread at once.

Unlike ``ThreadPoolExecutor`` no job ever waits for a thread: tasks blocked in
``get`` lend their CPU to others, so more tasks than CPUs may run at a time and a
bounded pool could deadlock. Idle threads are reused and exit after a while.

Invariant (under ``_lock``): ``_idle`` == threads waiting for a job minus jobs
already queued for them, so every queued job has a thread of its own.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

_IDLE_EXIT_S = 30.0


class ThreadPool:
    """Runs ``job()`` callables on daemon threads named ``{prefix}-N``."""

    def __init__(self, prefix: str):
        self._prefix = prefix
        self._jobs: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: set[threading.Thread] = set()
        self._counter = itertools.count(1)
        self._closed = False

    def run(self, job: Callable[[], Any]) -> None:
        """Run ``job`` on an idle thread, or a new one."""
        with self._lock:
            if self._closed:
                raise RuntimeError("thread pool is closed")
            self._jobs.put(job)
            if self._idle > 0:
                self._idle -= 1
                return
            t = threading.Thread(
                target=self._loop, name=f"{self._prefix}-{next(self._counter)}", daemon=True
            )
            self._threads.add(t)
            t.start()

    def _loop(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=_IDLE_EXIT_S)
                except queue.Empty:
                    with self._lock:
                        if self._jobs.empty() and self._idle > 0:
                            self._idle -= 1
                            return
                    continue
                if job is None:
                    return
                job()
                del job
                with self._lock:
                    if self._closed:
                        return
                    self._idle += 1
        finally:
            with self._lock:
                self._threads.discard(me)

    def close(self, wait: bool, timeout: float | None = None) -> None:
        """Stop idle threads now and busy ones after their job."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            for _ in threads:
                self._jobs.put(None)
        if wait:
            me = threading.current_thread()
            for t in threads:
                if t is not me:
                    t.join(timeout)
