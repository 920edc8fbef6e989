"""The spark backend's dispatcher thread: what happens between messages.

Woken when tasks wait for a lease (or every few seconds while something is
due), it

* makes the Spark broadcasts that waiting tasks' large arguments need (once
  per value; destroyed when the value is gone);
* launches leases (Spark jobs) for the tasks that no idle or starting lease will
  take, at most as many as Spark has task slots;
* stops leases idle for longer than ``linger`` seconds;
* warns once when leases wait long for a Spark slot while tasks blocked in
  ``get`` hold theirs (nesting deeper than the slots cannot proceed).

Spark calls happen outside the backend's lock.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from typing import Any

from . import _protocol as msg
from ._leases import LeaseRecord
from ._state import DriverState
from ._values import Stored

__all__ = ["Dispatching"]

logger = logging.getLogger(__name__)

#: A lease not started after this long while tasks block in get(): warn.
STARVED_AFTER_S = 30.0


class Dispatching(DriverState):
    """Mixin of :class:`~._backend.SparkBackend`: the dispatcher thread. It works
    on the backend's state (``_lock``, ``_unassigned``, ``_leases``, ...) as
    declared in ``_state`` and described in ``_backend``'s docstring."""

    def _want(self) -> None:
        """Wake the dispatcher (under the lock)."""
        self._wanted = True
        self._wake.notify()

    def _dispatch_loop(self) -> None:
        while True:
            with self._lock:
                while not self._wanted and not self._stopping:
                    timeout = self._next_expiry()
                    if timeout is not None and timeout <= 0:
                        break
                    if not self._wake.wait(timeout) and timeout is not None:
                        break  # timed out: something may be due
                if self._stopping:
                    return
                self._wanted = False
            try:
                self._dispatch_once()
            except Exception:
                logger.exception("fedexec spark: the dispatcher failed; retrying")
                time.sleep(0.1)

    def _next_expiry(self) -> float | None:
        """Seconds until the dispatcher has something to do by itself: stop an idle
        lease, look for broadcasts whose values are gone (every second), or for
        leases starved of Spark task slots."""
        out = 1.0 if len(self._broadcasts) or self._dropped else None
        if not self._starved_warned and any(lease.state == "starting"
                                            for lease in self._leases.values()):
            out = 5.0 if out is None else out  # see _check_starved
        if self._idle_leases:
            oldest = min(lease.idle_since for lease in self._idle_leases)
            left = oldest + self.linger - time.monotonic()
            out = left if out is None else min(out, left)
        return out

    def _dispatch_once(self) -> None:
        # 1. broadcasts for large arguments (Spark calls: outside the lock)
        with self._lock:
            needed = {id(s): s for t in self._unassigned for s in t.big if s.broadcast is None}
        for stored in needed.values():
            try:
                self._broadcast(stored)
            except Exception as exc:  # send the value with each task instead
                logger.warning("fedexec spark: could not broadcast a %d-byte value (%s); it "
                               "travels with each task", len(stored.data), exc)
                with self._lock:
                    for t in self._unassigned:
                        t.big = [s for s in t.big if s is not stored]
                    self._want()
        while self._dropped:
            with contextlib.suppress(Exception):
                self._dropped.popleft().destroy()
        # 2. stop leases idle for too long; plan new ones
        now = time.monotonic()
        with self._lock:
            expired = [lease for lease in self._idle_leases
                       if now - lease.idle_since >= self.linger]
            sends = self._assign_idle()
            expired += self._blocking_leases(expired)
            for lease in expired:
                self._idle_leases.remove(lease)
                lease.state = "ended"
                self._leases.pop(lease.id, None)
            launches = self._plan_launches()
            self._check_starved(now)
        for lease in expired:
            lease.peer.send(msg.Stop())
            lease.peer.close()
        self._send_assignments(sends)
        for lease, broadcasts in launches:
            spec = msg.LeaseSpec(self._address, self._authkey, lease.id,
                                 tuple(sorted(broadcasts)))
            self._launcher.launch(lease, spec, broadcasts)

    def _check_starved(self, now: float) -> None:
        """Warn (once) when leases wait long for a Spark task slot while tasks
        blocked in ``get`` hold theirs: nesting deeper than the free slots cannot
        proceed (under the lock)."""
        if self._starved_warned:
            return
        waiting = [lease for lease in self._leases.values()
                   if lease.state == "starting" and now - lease.launched_at > STARVED_AFTER_S]
        blocked = sum(1 for t in self._tasks.values() if t.state == "running" and t.lend_depth)
        if waiting and blocked:
            self._starved_warned = True
            logger.warning(
                "fedexec spark: %d lease(s) have waited over %.0f s for a Spark task slot while "
                "%d task(s) blocked in get() hold theirs; tasks nested deeper than the free "
                "slots (%d) cannot run. Give Spark more slots (address='local[N]', more "
                "executor cores) or nest less.", len(waiting), STARVED_AFTER_S, blocked,
                self.slots)

    def _blocking_leases(self, ending: list[LeaseRecord]) -> list[LeaseRecord]:
        """Idle leases to stop before their ``linger`` is up: when tasks wait that no
        idle lease can take (they need broadcasts made after it started) and every
        Spark slot is taken, an idle lease only holds the slot a new lease needs
        (under the lock)."""
        waiting = [t for t in self._unassigned if all(s.broadcast is not None for s in t.big)]
        if not waiting or len(self._leases) - len(ending) < self.slots:
            return []
        useless = [lease for lease in self._idle_leases if lease not in ending
                   and not any(self._fits(t, lease) for t in waiting)]
        return useless[:len(waiting)]

    def _plan_launches(self) -> list[tuple[LeaseRecord, dict[int, Any]]]:
        """New leases for the unassigned tasks that none starting will take (under
        the lock)."""
        if self._stopping:
            return []
        ready = [t for t in self._unassigned if all(s.broadcast is not None for s in t.big)]
        starting = sum(1 for lease in self._leases.values()
                       if lease.state in ("starting", "connected"))
        room = max(0, self.slots - len(self._leases)) or (1 if starting == 0 else 0)
        n = min(len(ready) - starting, room)
        if n <= 0:
            return []
        broadcasts = {s.broadcast_id: s.broadcast for t in ready for s in t.big
                      if s.broadcast_id is not None}
        out = []
        for _ in range(n):
            lease = self._launcher.new_lease(frozenset(broadcasts))
            self._leases[lease.id] = lease
            out.append((lease, broadcasts))
        return out

    def _broadcast(self, stored: Stored) -> None:
        """Put ``stored``'s bytes in a Spark broadcast (destroyed with the value)."""
        bcast = self.sc.broadcast(stored.data)
        stored.broadcast_id = int(bcast._jbroadcast.id())
        stored.broadcast = bcast
        self._broadcasts.add(stored)
        weakref.finalize(stored, self._dropped.append, bcast)
        with self._lock:
            self._want()
