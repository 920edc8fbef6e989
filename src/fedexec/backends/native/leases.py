"""Caller leases, the caller's side: a driver's tasks go straight to a worker the
node manager lent it, and their results come straight back; the node manager is
off the task's path (its side: ``lease_desk.py``; the decision: the core's
``LeaseRequested``).

Data flow (driver C, node manager NM, worker W leased to C for one resource shape)::

    C ── REQUEST LEASE(shape) ──▶ NM ── REPLY [W, W's socket, C's id] ──▶ C
    C ── LEASE_EXEC, many (batched, up to _INFLIGHT a lease) ──────▶ W
    W ── LEASE_PUT (only results in the store or holding refs) ──▶ NM
    W ── LEASE_DONE, many (batched) ────────────────────────────────▶ C
    C ── LEASE_RETURN ──▶ NM   idle for _GRACE_S, recalled (LEASE_RECALL: work
                               waits there), or closing; "broken" when the link
                               closed (the NM kills the worker, never reuses it)

Eligible tasks (``TaskLeases.submit`` decides): no ref arguments (but see "Chains"),
the DEFAULT strategy, no placement group, no runtime_env of their own, no GPUs,
from a driver whose store is this node's, on a node no other node can join (the
embedded runtime's: it does not listen on TCP). Cluster nodes lend none: a node
joining (an autoscaler's) must be able to take the tasks waiting behind a lease,
and a CI run with leases there once ran all of a test's tasks on the first node
(``test_autoscaler_local.py``; not understood yet, see issue 17's note). Others
go through the hub as before;
so do a shape's tasks while the NM denies it a lease (for _DENIED_S), and the
tasks queued here when its leases are recalled or lost.

Ownership. A leased task's results are held only here (``_local``: PENDING, or the
result entry once it came), unless the NM must know them first (the worker's
LEASE_PUT: held by this connection there). When such a ref is about to leave this
process (``escaping``, from ``ObjectRef.__reduce__``: pickled into another task's or
call's arguments, a put value, a result), it is registered on the NM channel first,
so before the message carrying it: a ready one is PUT, a pending one PROMISEd and
PUT when its result comes. A ref dropped here with the NM not knowing it costs no
DECREF. A result holding refs its task made (a put, a child task) is taken from the
NM (PROMISE, SUBSCRIBE), not from the link: the worker's messages that made them are
ahead of its LEASE_PUT there, and our first use of them asks the NM.

Failures. The worker dying (its link closes): the task it ran is resubmitted via
the hub while ``max_retries`` allows, else fails as the hub's would
(``WorkerCrashedError``); the tasks behind it are resubmitted untouched. A worker
blocked in ``get`` lends its CPU (BLOCKED to the NM, as for any task) and hands
the tasks queued behind it back here (LEASE_HANDBACK): they go to the hub; so
does a recalled lease's worker, asked (LEASE_YIELD). The NM recalls every lease
when work waits there (and, were a cluster node to lend leases, once the node is
no longer alone: the tasks waiting behind ours may then go to other nodes).
Cancelling: one queued here is withdrawn; one sent is revoked or interrupted on
the worker (LEASE_REVOKE / LEASE_CANCEL; force kills it, as the hub does).

Denials. The NM says why (the core's ``LeaseDenied.full``): the demand does not
fit now ("full"): with a long queue here, the tasks are pipelined onto our leases
(as the hub would: it could not start them sooner); else (it fits but no worker
is idle, or work waits there) what no lease of ours takes now goes to the hub,
which starts a worker for it: never queued behind a task of ours it may have to
meet (two 0.5-CPU tasks that meet on a 1-CPU node).

What the node sees. A leased worker says which task it runs once that ran
20 ms (LEASE_RUNNING, see worker.py): the memory monitor may kill it (the caller
asks why its link closed, LEASE_LOST, and the task fails with
``OutOfMemoryError`` once no retry is left), and it is listed (``list tasks``,
ASSIGNED) and counted (STATS ``leased``) as running. Shorter ones are not seen.

Backlog. The tasks waiting for our leases (queued here, or sent behind the one a
leased worker runs) are demand the node must see, as its own queue is: the
flusher tells the NM per shape when that changes (LEASE_BACKLOG, every
_BACKLOG_S at most); the NM counts them as queued (STATS, the autoscaler).

Their ends are counted and logged as the hub's are: the worker tells its NM which
ended, in batches (LEASE_ENDED): the head's event log (``list tasks``,
``task_counts``), ``fedexec_tasks_run`` and the run-time histogram
(``fedexec_task_duration_seconds``; not the scheduling-latency one).

Chains. A task whose ref arguments are all results of our leased tasks (none
nested in a container) is leased too: one not come yet is named by its id, and the
task goes to the lease whose worker makes it, right behind (so all such arguments
must come from one lease of the task's shape, not recalled, and the task making
them must be the last one sent there, unless at most _CHAIN_BEHIND are: it never
waits behind many tasks it does not need; and many tasks taking one result do not
all pile up on one worker); one that came (a small value, an error)
rides in the LEASE_EXEC. The worker keeps its newest results
(chained.py), so a chain runs link after link there with no process hop; the
item holds the argument refs until it is answered (the NM holds none of them).
A link whose argument's task is still queued here (no lease yet: a chain
submitted before one was granted) waits behind that task (``_Item.followers``,
not in the shape's queue) and goes wherever it goes, after it: to its lease, or to
the hub; cancelled, so are those behind it. Handed back, recalled or lost, a link
goes through the hub as any task, after its arguments are made known to the NM
(PROMISE, or PUT: ``_escape``). Not chained: a task taking a result the NM knows
(a put, a hub task's). A nested submit from a worker always goes through the hub.

Threads. The submitting thread, the NM channel's reader (answers, recalls), the
``Poller`` thread (the links; or a thread waiting for one result, read_here.py)
and the flusher (idle sweep) share one lock; nothing is written to a socket while
it is held (``Channel.enqueue``, then a flush: by the submitting thread itself for
a task going to an idle worker, else by the flusher).

Why this module is over 600 lines: one lock orders every step of a leased task
(queued, sent, answered, its results' ownership, recalled, cancelled), and those
paths cross (a LEASE_DONE settles a result that ``escaping`` may be promising on
another thread). The next seam is the results' ownership (``_local``,
``escaping``, ``released``, ``_settle``) as a class the lock is handed to.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..._ids import task_of
from .channel import Channel
from .direct import dial
from .poller import io_thread
from .protocol import Call, ErrorKind, Kind, Op, goes_straight

if TYPE_CHECKING:
    import socket

    from ...options import TaskOptions
    from .client import NativeBackend

__all__ = ["TaskLeases", "leases_enabled"]

_GRACE_S = 0.1  # an idle lease is kept this long (back-to-back round trips keep it)
_DENIED_S = 0.05  # after a denial or a recall, a shape's tasks use the hub this long
_INFLIGHT = 64  # tasks sent to one leased worker and not answered
_MAX_LEASES = 64  # leases per shape (the NM grants only idle workers anyway)
_REVOKE_WAIT_S = 30.0
#: A task taking a result not come yet goes behind the task making it if that is
#: the last one sent to its worker, or if at most this many are; or, that task still
#: queued here, if fewer than this many wait behind it already (else the hub runs it).
_CHAIN_BEHIND = 2
_ASK_TIMEOUT_S = 10.0  # a lease asked for and not linked by then: as if denied
_BACKLOG_S = 0.1  # the NM hears of our backlog this often at most (when it changed)
_PENDING = object()  # a result not come yet, the NM not knowing it
_PROMISED = object()  # ... the NM knowing it (PROMISE sent): PUT it when it comes
#: Its worker put it (LEASE_PUT): the NM knows it once that message is in, which a
#: message of ours naming it may overtake (another connection): PROMISE it first.
_PUT_THERE = object()


def leases_enabled() -> bool:
    """The switch, on by default: ``FEDEXEC_TASK_LEASES=0`` turns caller leases off
    (in a driver: its tasks all go through the node manager; in a node, read when
    it starts: its workers take no caller's tasks)."""
    return os.environ.get("FEDEXEC_TASK_LEASES", "1") not in ("", "0")


class _Item:
    __slots__ = ("anchor", "demand", "dep_refs", "deps", "followers", "forced", "lease",
                 "max_retries", "name", "payload", "return_ids", "shape", "task_id", "wire")

    def __init__(self, task_id: str, return_ids: list[str], name: str,
                 demand: dict[str, float], max_retries: int, payload: list[Any]):
        self.task_id = task_id
        self.return_ids = return_ids
        self.name = name
        self.demand = demand
        self.max_retries = max_retries
        self.payload = payload
        self.forced = False
        self.lease: _Lease | None = None
        self.shape: _Shape | None = None
        #: A chain's link (see "Chains"): its ref arguments' ids, the refs (held
        #: until it is answered: the NM does not hold them), and what LEASE_EXEC
        #: carries for each (the entry, or the id of a result its worker makes).
        #: (Empty tuples, not lists, until set: one is made per submit.)
        self.deps: Sequence[str] = ()
        self.dep_refs: tuple[Any, ...] = ()
        self.wire: Sequence[Any] = ()
        #: Queued here behind ``anchor`` (the task making its arguments, queued here
        #: too), not in a shape's queue: ``followers`` go wherever it goes, after it.
        self.anchor: _Item | None = None
        self.followers: tuple[_Item, ...] = ()

    def with_followers(self) -> list[_Item]:
        """This item, then its followers (and theirs), each after its anchor."""
        out: list[_Item] = []
        stack = [self]
        while stack:
            item = stack.pop()
            out.append(item)
            stack.extend(reversed(item.followers))
            item.followers = ()
            item.anchor = None
        return out

    def exec_msg(self, caller: int) -> list[Any]:
        return [Op.LEASE_EXEC, self.task_id, self.return_ids, self.payload, self.name, caller,
                self.wire]

    def submit_msg(self) -> list[Any]:
        return [Op.SUBMIT, self.task_id, self.return_ids, self.name, self.demand,
                self.max_retries, self.deps, [], self.payload, None]


class _Lease:
    __slots__ = ("caller", "channel", "idle_since", "recalled", "returned", "sent", "shape",
                 "worker_id")

    def __init__(self, worker_id: str, caller: int, shape: _Shape):
        self.worker_id = worker_id
        self.caller = caller
        self.shape = shape
        self.channel: Channel | None = None
        self.sent: dict[str, _Item] = {}  # in the order sent (the first one runs)
        self.recalled = False
        self.returned = False  # LEASE_RETURN sent (the NM may lend it to us again)
        self.idle_since = time.monotonic()

    def takes(self) -> bool:
        """It may take tasks: linked, not recalled."""
        return not self.recalled and self.channel is not None


class _Shape:
    __slots__ = ("asked_at", "asking", "demand", "denied_until", "full", "leases", "queue")

    def __init__(self, demand: dict[str, float]):
        self.demand = demand
        self.queue: collections.deque[_Item] = collections.deque()
        self.leases: list[_Lease] = []
        self.asking = False
        self.asked_at = 0.0  # (monotonic) when ``asking`` was set
        self.denied_until = 0.0
        self.full = False  # the last denial said the demand does not fit on the node

    def denied(self) -> bool:
        """Denied (or recalled) lately: a task that finds no lease free goes to
        the hub, unless the node is full (then it may queue onto our leases)."""
        return time.monotonic() < self.denied_until and not self.asking

    def live(self) -> int:
        """Our leases that may take tasks."""
        return sum(1 for x in self.leases if x.takes())

    def room(self) -> bool:
        """A lease of ours takes a task now."""
        return any(not x.sent and x.takes() for x in self.leases)


class _After:
    """What to do once the lock is released: sends, completions, hub submits."""

    __slots__ = ("channels", "done", "idle", "nm", "returns", "started")

    def __init__(self) -> None:
        self.started: list[str] = []  # result ids of tasks now first on their worker
        self.idle = False  # a task went to an idle worker: write now, not batched
        self.nm = False  # messages for the NM were queued (``TaskLeases._to_nm``)
        self.channels: set[Channel] = set()
        self.done: list[list[Any]] = []  # result entries to complete refs with
        self.returns: list[_Lease] = []


class TaskLeases:
    """A driver's leases (see the module docstring)."""

    def __init__(self, backend: NativeBackend):
        self._backend = backend
        # (reentrant: ``released`` runs from a ref's ``__del__``, which a collection
        # may start on a thread that holds it)
        self._lock = threading.RLock()
        self._shapes: dict[tuple[tuple[str, float], ...], _Shape] = {}
        self._items: dict[str, _Item] = {}  # task id -> not answered yet
        #: result id -> _PENDING | _PROMISED | _PUT_THERE | entry
        self._local: dict[str, Any] = {}
        self._revokes: dict[str, cf.Future[bool]] = {}
        self._closed = False
        self._backlog: list[list[Any]] = []  # what the NM last heard (LEASE_BACKLOG)
        self._backlog_at = 0.0
        #: Tasks sent to leased workers so far (for tests and stats).
        self.sent = 0

    # ------------------------------------------------------------ submit
    def submit(self, task_id: str, return_ids: list[str], name: str, demand: dict[str, float],
               options: TaskOptions, payload: list[Any], plain: bool, deps: Sequence[str] = (),
               dep_refs: tuple[Any, ...] = ()) -> bool:
        """Take a task (True), or leave it to the hub (False): only eligible ones
        (see the module docstring; ``plain``: no ref nested in the arguments, the
        DEFAULT strategy, no placement group; ``deps``: the ids of its ref
        arguments, ``dep_refs`` those refs)."""
        if not plain or options.runtime_env is not None or \
                any(k.startswith("GPU") for k in demand):
            return False
        if deps and not all(rid in self._local for rid in deps):
            return False  # the NM knows one (or will): it resolves them
        key = tuple(sorted(demand.items()))
        after = _After()
        with self._lock:
            if self._closed:
                return False
            shape = self._shapes.get(key)
            if shape is None:
                shape = self._shapes[key] = _Shape(demand)
            item = _Item(task_id, return_ids, name, demand, options.max_retries, payload)
            behind: _Lease | _Item | None = None
            if deps:
                wire, behind = self._chain(deps)
                if wire is None or (behind is not None and behind.shape is not shape) or \
                        (isinstance(behind, _Lease) and not behind.takes()):
                    return False
                item.deps, item.dep_refs, item.wire = list(deps), tuple(dep_refs), wire
            if behind is None and shape.denied() and \
                    (not shape.leases or (not shape.full and not shape.room())):
                return False
            item.shape = shape
            self._items[task_id] = item
            for rid in return_ids:
                self._local[rid] = _PENDING
            if isinstance(behind, _Lease):
                self._send(item, behind, after)
            elif behind is not None:  # queued here: it goes where that goes, after it
                item.anchor = behind
                behind.followers = (*behind.followers, item)
            else:
                shape.queue.append(item)
                self._fill(shape, after)
            ask = self._want_more(shape)
        self._finish(after)
        if ask:
            self._ask(shape)
        return True

    def _fill(self, shape: _Shape, after: _After) -> None:
        """Send queued tasks to the shape's leases with room (lock held): one each
        while more leases may come (a task may wait for the one behind it: it must
        not queue behind it), up to _INFLIGHT each once the node says it is full."""
        queue = shape.queue
        if not queue:
            return
        depth = _INFLIGHT if len(shape.leases) >= _MAX_LEASES or \
            (shape.full and time.monotonic() < shape.denied_until) else 1
        for lease in shape.leases:
            if not queue:
                return
            if not lease.takes():
                continue
            while queue and len(lease.sent) < depth:
                self._send(queue.popleft(), lease, after)

    def _chain(self, deps: Sequence[str]) -> tuple[list[Any] | None, _Lease | _Item | None]:
        """A task taking our leased results (lock held; see "Chains"): what its
        LEASE_EXEC carries for them (None: it goes to the hub: two workers make
        them, or the NM knows one), and what it goes behind: the lease whose
        worker makes those not come yet, or the task making them, still queued
        here (None: all came)."""
        wire: list[Any] = []
        behind: _Lease | _Item | None = None
        for rid in deps:
            state = self._local.get(rid)
            if state is _PENDING:
                maker = self._items.get(task_of(rid))
                if maker is None:
                    return None, None
                there = maker.lease
                if there is None:
                    if (behind is not None and behind is not maker) or \
                            len(maker.followers) >= _CHAIN_BEHIND:
                        return None, None  # (many waiting for one: the hub spreads them)
                    behind = maker
                elif behind is not None and there is not behind:
                    return None, None
                elif len(there.sent) > _CHAIN_BEHIND and \
                        next(reversed(there.sent)) != maker.task_id:
                    return None, None  # it would wait behind others' tasks: the hub
                else:
                    behind = there
                wire.append(rid)
            elif isinstance(state, list):
                wire.append(state)
            else:
                return None, None
        return wire, behind

    def _send(self, item: _Item, lease: _Lease, after: _After) -> None:
        """Send ``item`` (and its followers) to ``lease``'s worker now (lock held)."""
        channel = lease.channel
        assert channel is not None
        for one in item.with_followers() if item.followers else (item,):
            one.lease = lease
            self.sent += 1
            if not lease.sent:
                after.started.extend(one.return_ids)
                after.idle = True
            lease.sent[one.task_id] = one
            channel.enqueue(one.exec_msg(lease.caller))
        after.channels.add(channel)

    def _want_more(self, shape: _Shape) -> bool:
        if shape.asking or self._closed or time.monotonic() < shape.denied_until:
            return False
        if shape.leases and (not shape.queue or len(shape.leases) >= _MAX_LEASES):
            return False
        shape.asking, shape.asked_at = True, time.monotonic()
        return True

    def _ask(self, shape: _Shape) -> None:
        self._backend._request_later(Call.LEASE, [shape.demand],
                                     lambda ok, value: self._answered(shape, ok, value))

    def _answered(self, shape: _Shape, ok: bool, value: Any) -> None:
        """The NM's answer (on its reader thread): dial the worker, or use the hub
        (or, the node being full, queue onto our leases)."""
        if ok and isinstance(value, list):
            worker_id, path, caller = value
            lease = _Lease(worker_id, caller, shape)

            def ready(sock: socket.socket | None) -> Channel | None:
                return self._linked(lease, sock)

            if dial(self._backend._links.poller, self._backend._token, path, ready):
                return
            self._linked(lease, None)
            return
        self._denied(shape, full=ok and value == "full")

    def _denied(self, shape: _Shape, full: bool = False) -> None:
        """No lease now. The node full (``full``) and a long queue here: pipeline
        onto the leases we have (the hub could not start these sooner). Else (no idle worker, or work
        waits there) what no lease of ours takes now goes to the hub, which starts
        a worker for it: queued behind a task of ours, it might wait for a task it
        has to meet."""
        after = _After()
        with self._lock:
            shape.asking = False
            shape.denied_until = time.monotonic() + _DENIED_S
            # (as the hub pipelines: only a long queue, a short one may start sooner
            # there, when another task's CPU frees)
            live = shape.live()
            shape.full = full and live > 0 and len(shape.queue) >= 2 * live
            self._fill(shape, after)
            if not shape.full:
                self._to_hub(list(shape.queue), after)
                shape.queue.clear()
        self._finish(after)

    def _linked(self, lease: _Lease, sock: socket.socket | None) -> Channel | None:
        """The worker took our handshake (``sock``), or not (None)."""
        if sock is None:
            self._backend._send_soon([Op.LEASE_RETURN, lease.worker_id, True])
            self._denied(lease.shape)
            return None
        channel = Channel(sock, lambda frame: self._on_frame(lease, frame),
                          lambda: self._on_close(lease), f"a lease on {lease.worker_id[-6:]}",
                          polled=True)
        after = _After()
        ask = False
        with self._lock:
            shape = lease.shape
            shape.asking = False
            if self._closed:
                lease.returned = True
                after.returns.append(lease)
            else:
                lease.channel = channel
                shape.leases.append(lease)
                self._fill(shape, after)
                ask = self._want_more(shape)
        if after.returns:
            lease.channel = channel
        self._finish(after)
        if not after.returns and ask:
            self._ask(shape)
        return channel

    # ----------------------------------------------------------- answers
    def _on_frame(self, lease: _Lease, frame: list[Any]) -> None:
        after = _After()
        revoked: list[tuple[str, bool]] = []
        with self._lock:
            hub: list[_Item] = []
            for msg in frame:
                op = msg[0]
                if op == Op.LEASE_DONE:
                    item = lease.sent.pop(msg[1], None)
                    if item is not None:
                        self._items.pop(item.task_id, None)
                        self._settle(msg[2], after)
                elif op == Op.LEASE_HANDBACK:
                    for task_id in msg[1]:
                        item = lease.sent.pop(task_id, None)
                        if item is not None:
                            hub.append(item)
                elif op == Op.LEASE_REVOKED:
                    revoked.append((msg[1], bool(msg[2])))
            self._to_hub(hub, after)
            self._after_answers(lease, after)
            ask = bool(lease.shape.queue) and self._want_more(lease.shape)
        self._finish(after)
        if ask:
            self._ask(lease.shape)
        for task_id, dropped in revoked:
            fut = self._revokes.pop(task_id, None)
            if fut is not None:
                fut.set_result(dropped)

    def _after_answers(self, lease: _Lease, after: _After) -> None:
        """Refill a lease, or return it once recalled and answered (lock held). The
        task first on its worker now counts as running (as the hub's do)."""
        if lease.sent:
            after.started.extend(next(iter(lease.sent.values())).return_ids)
        if lease.recalled:
            if not lease.sent:
                self._retire(lease, after)
            return
        self._fill(lease.shape, after)
        if not lease.sent:
            lease.idle_since = time.monotonic()

    def _settle(self, results: list[list[Any]], after: _After) -> None:
        """Results of a task of ours came (lock held): complete the refs; keep what
        the NM does not know, PUT what was promised."""
        local = self._local
        for r in results:
            rid = r[0]
            state = local.get(rid)  # (replaced in place: ``escaping`` looks unlocked)
            if not goes_straight(r):  # LEASE_PUT: the NM has it (or will)
                if state is None:  # dropped here meanwhile
                    self._backend._refcount_ops.append((Op.DECREF, rid))
                elif r[4]:
                    # It holds refs the worker made (a child task, a put), which the
                    # NM may not have read yet (another connection), and a ref we
                    # unpickle asks it for them: the value comes from the NM, once
                    # the LEASE_PUT behind them is in (the PROMISE makes it wait).
                    if state is _PENDING:
                        self._to_nm([Op.PROMISE, [rid]], after)
                    local.pop(rid, None)
                    self._to_nm([Op.SUBSCRIBE, [rid]], after)
                    continue
                elif state is _PENDING:
                    local[rid] = _PUT_THERE
                else:  # _PROMISED: that LEASE_PUT completes it
                    local.pop(rid, None)
            elif state is _PROMISED:
                self._to_nm([Op.PUT, *r], after)
                del local[rid]
            elif state is _PENDING:
                local[rid] = r
            after.done.append(r)

    def _to_nm(self, msg: list[Any], after: _After) -> None:
        """Queue ``msg`` for the NM (lock held: before any message another thread
        sends once it sees what we changed; written by ``_finish`` or the flusher)."""
        self._backend._channel.enqueue(msg)
        after.nm = True

    def _on_close(self, lease: _Lease) -> None:
        """The link ended: the worker died (or we closed it). What it had not
        answered: retried or failed (the one it ran), or resubmitted via the hub."""
        after = _After()
        with self._lock:
            shape = lease.shape
            if lease in shape.leases:
                shape.leases.remove(lease)
            items = list(lease.sent.values())
            lease.sent.clear()
            unanswered = [item.task_id for item in items]
            hub: list[_Item] = []
            ask: _Item | None = None
            for i, item in enumerate(items):
                if item.forced:
                    self._items.pop(item.task_id, None)
                    self._failed(item, ErrorKind.CANCELLED, f"task {item.name!r} was "
                                 "cancelled (its worker was killed)", after)
                    continue
                if i == 0 and item.max_retries == 0:
                    ask = item  # it fails: as what, the NM says (it may have killed it)
                    continue
                if i == 0 and item.max_retries > 0:
                    item.max_retries -= 1
                hub.append(item)
            if not self._closed:
                self._to_hub(hub, after)
                if not shape.leases:
                    self._to_hub(list(shape.queue), after)
                    shape.queue.clear()
            if not lease.returned:  # broken: the NM must not lend it or use it again
                lease.returned = True
                self._to_nm([Op.LEASE_RETURN, lease.worker_id, True], after)
        self._finish(after)
        if ask is not None:
            self._ask_why(lease, ask)
        for task_id in unanswered:
            fut = self._revokes.pop(task_id, None)
            if fut is not None:
                fut.set_result(False)

    def _ask_why(self, lease: _Lease, item: _Item) -> None:
        """``item`` ran on ``lease``'s worker, which died, and has no retry left: it
        fails with OutOfMemoryError if the node's memory monitor killed the worker
        (LEASE_LOST says), else with WorkerCrashedError."""
        def answered(ok: bool, value: Any) -> None:
            if ok and value:  # (its message names the task: the worker said it ran it)
                kind, why = ErrorKind(value[0]), str(value[1])
            else:
                kind, why = ErrorKind.WORKER_CRASHED, (
                    f"the worker running task {item.name!r} died and max_retries is "
                    "exhausted")
            after = _After()
            with self._lock:
                if self._items.pop(item.task_id, None) is None:
                    return  # (answered meanwhile: the backend closed)
                self._failed(item, kind, why, after)
            self._finish(after)

        if self._backend._channel.closed:
            answered(False, None)
        else:
            self._backend._request_later(Call.LEASE_LOST, [lease.worker_id], answered)

    def _failed(self, item: _Item, kind: ErrorKind, why: str, after: _After) -> None:
        self._settle([[rid, Kind.FAILED, kind, why] for rid in item.return_ids], after)

    def _to_hub(self, items: list[_Item], after: _After) -> None:
        """Send tasks through the hub (lock held): the NM knows their results now,
        held by us (SUBMIT, queued before they leave ``_local``, so before any message
        naming them). A ref of ours dropped already (no DECREF went): DECREF it after
        the SUBMIT; one dropped later sends its own DECREF, after the SUBMIT too."""
        local, refs = self._local, self._backend._refs
        if any(item.followers for item in items):
            items = [one for item in items for one in item.with_followers()]
        for item in items:
            self._items.pop(item.task_id, None)
            item.lease = None
            for rid in item.deps:  # a chain's link: the NM must know its arguments
                self._escape(rid, after)
            self._to_nm(item.submit_msg(), after)
            gone = []
            for rid in item.return_ids:
                local.pop(rid, None)
                if refs.get(rid) is None:
                    gone.append(rid)
            if gone:
                self._to_nm([Op.DECREF, gone], after)

    def _retire(self, lease: _Lease, after: _After) -> None:
        lease.returned = True
        shape = lease.shape
        if lease in shape.leases:
            shape.leases.remove(lease)
        after.returns.append(lease)

    def _finish(self, after: _After) -> None:
        """Do what ``after`` holds (lock released): the NM's messages first."""
        backend = self._backend
        if after.nm:
            backend._wake_flusher.set()
        for lease in after.returns:
            backend._send_soon([Op.LEASE_RETURN, lease.worker_id])
            if lease.channel is not None:
                lease.channel.close()
        if after.channels:
            outboxes = backend._outboxes
            for channel in after.channels:
                outboxes.mark(channel)
            if after.idle and not io_thread():
                backend.flush()  # (the NM's first) an idle worker gains nothing by waiting
            else:
                backend._flush_now = backend._flush_now or after.idle
                if not backend._wake_flusher.is_set():  # (cheaper than a set: a submit loop)
                    backend._wake_flusher.set()
        if after.started:
            refs = backend._refs
            for rid in after.started:
                ref = refs.get(rid)
                if ref is not None and ref._state == "PENDING":
                    with contextlib.suppress(Exception):
                        ref.set_running_or_notify_cancel()
        if after.done:
            on_object = backend._on_object
            for r in after.done:
                on_object([Op.OBJECT, *r])

    # ------------------------------------------------------ from the NM
    def recalled(self, worker_id: str) -> None:
        """LEASE_RECALL: send nothing more there, ask it to hand back what it has not
        started (LEASE_YIELD), return it once answered; what is queued for its shape
        goes to the hub if no other lease takes it."""
        after = _After()
        with self._lock:
            for shape in self._shapes.values():
                for lease in shape.leases:
                    if lease.worker_id == worker_id:
                        lease.recalled = True
                        shape.denied_until = time.monotonic() + _DENIED_S
                        shape.full = False
                        if not lease.sent:
                            self._retire(lease, after)
                        elif len(lease.sent) > 1 and lease.channel is not None:
                            lease.channel.enqueue([Op.LEASE_YIELD])  # the rest: to the hub
                            after.channels.add(lease.channel)
                        if not any(not x.recalled for x in shape.leases):
                            self._to_hub(list(shape.queue), after)
                            shape.queue.clear()
                        break
        self._finish(after)

    def sweep(self, now: float) -> None:
        """Return the leases idle for ``_GRACE_S``; tell the NM our backlog once it
        changed, every _BACKLOG_S at most (the flusher, every turn)."""
        after = _After()
        backlog: list[list[Any]] = []
        with self._lock:
            for shape in self._shapes.values():
                waiting = len(shape.queue) + sum(max(0, len(x.sent) - 1) for x in shape.leases)
                if waiting:
                    backlog.append([shape.demand, waiting])
                if shape.asking and now - shape.asked_at > _ASK_TIMEOUT_S:
                    # no answer, or a worker that never finished the handshake: as if
                    # denied (a lease linked later is used, or returned when idle)
                    shape.asking = False
                    shape.denied_until = now + _DENIED_S
                if shape.queue:
                    if not shape.asking and not shape.live():
                        # stranded: no lease of ours may take them and none is asked
                        # for (their leases were recalled after a "full" kept them
                        # here): the hub runs them
                        self._to_hub(list(shape.queue), after)
                        shape.queue.clear()
                    continue
                for lease in list(shape.leases):
                    if not lease.sent and now - lease.idle_since > _GRACE_S:
                        self._retire(lease, after)
        if after.returns or after.nm:
            self._finish(after)
        if backlog != self._backlog and now - self._backlog_at >= _BACKLOG_S:
            self._backlog, self._backlog_at = backlog, now
            self._backend._send_soon([Op.LEASE_BACKLOG, backlog])

    # --------------------------------------------------------- ownership
    def escaping(self, rid: str) -> None:
        """A ref of ours is being pickled: make sure the NM knows its object first."""
        if rid not in self._local:  # (an id leaves it once its message is queued)
            return
        after = _After()
        with self._lock:
            self._escape(rid, after)
        self._finish(after)

    def _escape(self, rid: str, after: _After) -> None:
        """``escaping``, the lock held."""
        state = self._local.get(rid)
        if state is None or state is _PROMISED:
            return
        if state is _PENDING:
            self._to_nm([Op.PROMISE, [rid]], after)
            self._local[rid] = _PROMISED
        elif state is _PUT_THERE:  # its LEASE_PUT may not be in yet: the NM waits
            self._to_nm([Op.PROMISE, [rid]], after)  # for it, whichever comes first
            del self._local[rid]
        else:
            self._to_nm([Op.PUT, *state], after)
            del self._local[rid]

    def released(self, rid: str) -> bool:
        """Our ref for ``rid`` is gone: True if the NM never knew it (no DECREF)."""
        # (From ``__del__``. A promised one stays: its result is PUT when it comes,
        # and the NM drops it once our DECREF and that PUT are both in.)
        local = self._local
        if rid not in local:
            return False
        with self._lock:
            state = local.get(rid)
            if state is None or state is _PROMISED:
                return False
            del local[rid]
            # _PUT_THERE: the NM knows it (or will: a DECREF that overtakes the
            # LEASE_PUT is remembered there, see lease_desk.py)
            return state is not _PUT_THERE

    # -------------------------------------------------------- cancelling
    def cancel(self, task_id: str, force: bool) -> bool:
        """``executor.cancel``: True if the task is ours (handled here)."""
        after = _After()
        with self._lock:
            item = self._items.get(task_id)
            if item is None:
                return False
            lease = item.lease
            if lease is None:
                self._withdraw(item, after)
            elif lease.channel is not None:
                item.forced = item.forced or force
                lease.channel.enqueue([Op.LEASE_CANCEL, task_id, force])
                after.channels.add(lease.channel)
        self._finish(after)
        self._backend._outboxes.flush()
        return True

    def _withdraw(self, item: _Item, after: _After) -> None:
        """Take a task queued here back, cancelled (lock held); so are its followers
        (as the hub cancels a task whose argument was cancelled)."""
        assert item.shape is not None
        if item.anchor is not None:
            item.anchor.followers = tuple(x for x in item.anchor.followers if x is not item)
            item.anchor = None
        else:
            with contextlib.suppress(ValueError):
                item.shape.queue.remove(item)
        for one in item.with_followers():
            self._items.pop(one.task_id, None)
            self._settle([[rid, Kind.FAILED, ErrorKind.CANCELLED,
                           f"task {one.name!r} was cancelled"] for rid in one.return_ids], after)

    def cancel_pending(self, task_ids: list[str]) -> bool:
        """``Future.cancel`` (one task) or ``cancel_futures`` (all of ours, when
        ``task_ids`` is empty): withdraw those queued here, revoke those sent and
        not started (waits for the workers' answers). True if any was ours."""
        if not task_ids:  # leases asked for take their first tasks (a worker "took" them)
            deadline = time.monotonic() + 1.0
            while any(s.asking for s in list(self._shapes.values())) \
                    and time.monotonic() < deadline:
                time.sleep(0.001)
        after = _After()
        waits: list[cf.Future[bool]] = []
        with self._lock:
            items = [self._items[t] for t in task_ids if t in self._items] if task_ids \
                else list(self._items.values())
            for item in items:
                lease = item.lease
                if self._items.get(item.task_id) is not item:
                    continue  # withdrawn with the task it followed
                if lease is None:
                    self._withdraw(item, after)
                elif lease.channel is not None and not lease.channel.closed:
                    fut: cf.Future[bool] = cf.Future()
                    self._revokes[item.task_id] = fut
                    waits.append(fut)
                    lease.channel.enqueue([Op.LEASE_REVOKE, item.task_id])
                    after.channels.add(lease.channel)
        self._finish(after)
        if waits:
            self._backend._outboxes.flush()
            cf.wait(waits, _REVOKE_WAIT_S)
        return bool(items)

    def link_of(self, rid: str) -> Channel | None:
        """The link of the lease whose worker has the task of result ``rid`` (None:
        not ours, queued here, or answered): a thread waiting for it may read it
        (read_here.py)."""
        item = self._items.get(task_of(rid))
        lease = item.lease if item is not None else None
        return lease.channel if lease is not None else None

    def describe(self, task_ids: list[str]) -> dict[str, list[Any]]:
        """Where each of ``task_ids`` still held here is: task id -> [the leased
        worker's id (None: queued here), tasks ahead of it there, name] (for a
        long-blocked get's DESCRIBE; the NM names the worker's pid)."""
        out: dict[str, list[Any]] = {}
        with self._lock:
            for task_id in task_ids:
                item = self._items.get(task_id)
                if item is None:
                    continue
                lease = item.lease
                if lease is None:
                    queue = item.shape.queue if item.shape is not None else ()
                    ahead = next((i for i, x in enumerate(queue) if x is item), 0)
                    out[task_id] = [None, ahead, item.name]
                else:
                    ahead = next((i for i, tid in enumerate(lease.sent) if tid == task_id), 0)
                    out[task_id] = [lease.worker_id, ahead, item.name]
        return out

    # ------------------------------------------------------------- close
    def close(self) -> None:
        """The backend closes: every lease goes back (what runs there is answered
        as the backend closes: its refs fail if never answered)."""
        after = _After()
        with self._lock:
            self._closed = True
            for shape in self._shapes.values():
                for lease in list(shape.leases):
                    self._retire(lease, after)
        if not self._backend._channel.closed:
            self._finish(after)
        else:
            for lease in after.returns:
                if lease.channel is not None:
                    lease.channel.close()

    def holds(self) -> bool:
        """Tasks of ours not answered yet."""
        return bool(self._items)
