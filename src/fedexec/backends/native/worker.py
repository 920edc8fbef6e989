"""A worker process of the native runtime: runs tasks, or hosts one actor.

Forked by the node manager; connects back over the node's Unix socket with the
cluster token and says HELLO. Its links (that connection, and its leased tasks'
or direct calls' callers') are read by the client's ``Poller`` thread while a task
runs, and by the main thread itself while it is idle (``_read_links``: a task
then starts with no thread hand-off); EXECUTE and ACTOR_INIT messages are queued
to this loop; the main thread runs them in arrival order and answers TASK_DONE.
An actor's calls (ACTOR_EXEC) go from the reading thread straight to its
:class:`ActorHost`, which runs them on its own threads (or event loop; a
one-thread sync actor's idle thread reads the links the same way). Inside a
task, ``fedexec.*`` calls go through the same client. An actor's worker also
listens for callers on its node (``direct.CallListener``): their
DIRECT_CALLs go to the same host, and each such call's end goes to the node manager
(DIRECT_DONE) and then back to its caller (DIRECT_REPLY). Every worker listens
there (unless ``FEDEXEC_TASK_LEASES=0``): a driver it is leased to sends LEASE_EXEC,
queued as EXECUTE messages are; the answer goes back to that driver (LEASE_DONE),
after a LEASE_PUT to the node manager for results it must hold (see leases.py).
A leased task that runs a while is said to the node manager (LEASE_RUNNING, from
the client's flusher thread: ``report_running``), so its memory monitor and its
lists see it.

Task messages::

    EXECUTE    [op, task_id, return_ids, payload, dep entries, name, gpu ids]
               payload = [fn, args mode, args data, args buffers, num_returns,
                          retry_exceptions, max_retries, runtime_env]
    ACTOR_INIT [op, actor_id, spec, [cls, args mode, data, buffers], dep entries, gpu ids]
    ACTOR_EXEC [op, task_id, return_ids, [method, mode, data, buffers, num_returns],
                dep entries, name]

A task blocked in ``get`` hands the tasks queued behind it back to the node
manager (so a parent can never wait on a child stuck behind it) and lends its
CPU until it resumes. Cancelling a running task sends SIGINT to the main thread,
raised as ``KeyboardInterrupt`` only while that task runs.

Why this module is over 600 lines: the loop, its three kinds of answers (the
hub's, leased, direct), the idle reading of its links and the actor's set-up all
share the loop's state (queue, current task, its condition). The next seam is the
idle reading (``_read_links``) as a component handed the queue and the links.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

import cloudpickle

from ... import serialization
from ..._runtime import TaskContext, resolving, running_task
from ...exceptions import BrokenExecutorError, RuntimeEnvSetupError, TaskCancelledError
from ...options import TaskOptions
from .. import _execution as execution
from .._actor_host import ActorHost
from .._net import node_ip
from . import _values as values
from .chained import MadeHere, failed_dep
from .channel import Channel
from .client import NativeBackend
from .direct import CallListener
from .leases import leases_enabled
from .poller import Detached, WakeableEpoll
from .protocol import ErrorKind, Kind, Op, goes_straight

__all__ = ["main_from_fork"]

_REPORT_AFTER_S = 0.02  # a leased task running this long is said to the node manager
_ENDED_EVERY_S = 0.05  # leased tasks that ended are said to the node manager this often
_ACTOR_TICK_S = 0.05  # an idle actor reading its links looks at its host this often


class WorkerLoop:
    """The main-thread loop of one worker (see the module docstring)."""

    def __init__(self, backend: NativeBackend, config: dict[str, Any]):
        self.backend = backend
        self.config = config
        self.cv = threading.Condition()
        self.queue: collections.deque[list[Any]] = collections.deque()
        self.current: str | None = None
        self.interrupt: str | None = None
        self.cancelling: str | None = None  # the task a SIGINT was raised into
        self.fn_cache: dict[bytes, Any] = {}
        self.initialized = config.get("initializer") is None
        self.init_error: BrokenExecutorError | None = None
        self.actor_id: str | None = None
        self.actor_spec: dict[str, Any] = {}
        self.actor_job_id: str | None = None
        self.actor_gpus: tuple[str, ...] = ()
        self.actor_namespace: str | None = None
        self.host: ActorHost[list[Any]] | None = None  # made when ACTOR_INIT arrives
        self.main_ident = threading.get_ident()
        self.block_depth = 0
        #: Direct calls (see direct.py) not answered yet: task id -> the caller's link.
        self.direct: dict[str, Channel] = {}
        self.listener: CallListener | None = None
        #: Leased tasks (see leases.py) not answered yet: task id -> (the caller's
        #: link, the caller's connection id at the node manager).
        self.leased: dict[str, tuple[Channel, int]] = {}
        #: Their newest results, for the leased tasks sent behind them (chained.py).
        self.made = MadeHere()
        #: The links of callers we ran leased tasks (or direct actor calls) for: read
        #: by the main thread while it is idle (``_read_links``; ``reading``: it
        #: does now).
        self.links: set[Channel] = set()
        self.reading = False
        #: Idle, the main thread reads its links (False: it waits on ``cv``; set
        #: again by a new leased task's link).
        self.lend = True
        self._idle: WakeableEpoll | None = None  # (made on first use)
        #: The message of the task running now and since when (monotonic).
        self.running: list[Any] | None = None
        self.since = 0.0
        #: The leased task the node manager was told we run (LEASE_RUNNING).
        self.reported: str | None = None
        #: Leased tasks that ended, not said yet (LEASE_ENDED): [id, name, failed, job,
        #: seconds it ran].
        self.ended: list[list[Any]] = []
        self.ended_at = 0.0  # when we last said some

    # --------------------------------------------------------- reader thread
    def on_message(self, msg: list[Any]) -> None:
        op = msg[0]
        if op == Op.ACTOR_INIT:
            spec = msg[2]
            self.host = ActorHost(self, concurrency=spec["max_concurrency"],
                                  is_async=spec["is_async"], name=spec["class_name"],
                                  idle=self._read_for_actor)
        elif op == Op.ACTOR_EXEC and self.host is not None:
            self.host.submit(msg[1], msg)  # refused once closed: the process is ending
            self._wake_reader()
            return
        if op in (Op.EXECUTE, Op.ACTOR_INIT):
            with self.cv:
                if op == Op.EXECUTE and self.block_depth:
                    # Blocked in a get: a task queued here could be the one awaited.
                    self.backend._send([Op.HANDBACK, [msg[1]]])
                    return
                self._push(msg)
        elif op == Op.CANCEL_TASK:
            self._cancel(msg[1])
        elif op == Op.REVOKE:
            self._revoke(msg[1])
        elif op == Op.EXIT:
            self.exit()

    def _push(self, msg: list[Any]) -> None:
        """Queue ``msg`` to run (cv held) and wake the main thread, whether it waits
        on ``cv`` or reads its links (``_read_links``)."""
        self.queue.append(msg)
        self.cv.notify()
        self._wake_reader()

    def exit(self) -> NoReturn:
        """End this worker process now (asked to, or its node manager is gone)."""
        if self.listener is not None:
            self.listener.close()
        os._exit(0)

    def _revoke(self, task_id: str) -> bool:
        """Drop a queued task (cancelled before starting); False if it is not queued."""
        if self.host is not None:
            call = self.host.cancel(task_id)
            if call is not None:
                self._send_failed(call, ErrorKind.CANCELLED, f"{call[-1]} was cancelled")
            return call is not None
        with self.cv:
            for msg in self.queue:
                if msg[1] == task_id:
                    self.queue.remove(msg)
                    what = f"task {msg[5]!r}" if msg[0] == Op.EXECUTE else "an actor's creation"
                    self._send_failed(msg, ErrorKind.CANCELLED, f"{what} was cancelled")
                    return True
        return False

    def _cancel(self, task_id: str) -> None:
        if self._revoke(task_id):
            return
        if self.host is not None:
            self.host.interrupt(task_id)  # an async actor's running call
            return
        with self.cv:
            if self.current == task_id:
                self.interrupt = task_id
                signal.pthread_kill(self.main_ident, signal.SIGINT)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupt is None or self.interrupt != self.current:
            return
        if _importing(frame):
            # Never interrupt an import halfway: modules it already imported would keep
            # a half-initialised parent (``partially initialized module``) and break
            # this worker's later tasks. Ask again once the import had time to finish.
            threading.Timer(_REINTERRUPT_S, self._reinterrupt, (self.interrupt,)).start()
            return
        self.cancelling, self.interrupt = self.interrupt, None
        raise KeyboardInterrupt

    def _reinterrupt(self, task_id: str) -> None:
        with self.cv:
            if self.interrupt == task_id and self.current == task_id:
                signal.pthread_kill(self.main_ident, signal.SIGINT)

    # ------------------------------------------------------------ main loop
    def run(self) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)
        while True:
            with self.cv:
                while not self.queue and not self.lend:
                    self.cv.wait()
                if not self.queue:  # idle: read our links here
                    msg = None
                else:
                    msg = self.queue.popleft()
                    self.current = msg[1]
                    self.running, self.since = msg, time.monotonic()
            if msg is None:
                self._read_links()
                continue
            try:
                op = msg[0]
                if op == Op.EXECUTE:
                    self._execute(msg)
                else:
                    self._init_actor(msg)
            except KeyboardInterrupt:
                # a late interrupt: its task has been answered, unless it landed
                # before the task's ``try`` (``current`` still names it)
                if msg[0] == Op.EXECUTE and self.current == msg[1]:
                    with self.cv:
                        self.current = None
                    self._send_failed(msg, ErrorKind.CANCELLED, f"task {msg[5]!r} was cancelled")
            finally:
                with self.cv:
                    self.current = None
                    self.interrupt = None

    def _read_links(self, ready: Callable[[], bool] | None = None,
                    tick: float = -1.0) -> bool:
        """Idle: read our links (the node manager's, and our leased tasks' or direct
        calls' callers') on this thread until work is queued (``ready``; default: a
        task in ``queue``). It then starts with no hand-off from the poller's
        thread, which costs a wake-up on its way in. The links go back to the
        poller before it runs: a cancel, the tasks pipelined behind it, and the
        answers to what it asks the node manager come on them. False if there was
        nothing to read (then wait on ``cv``). ``tick``: look at ``ready`` this
        often whatever comes (-1: only when woken)."""
        queue = self.queue
        waiting: Callable[[], object] = ready if ready is not None else queue.__len__
        poller = self.backend._links.poller
        if self._idle is None:
            self._idle = WakeableEpoll()
        idle, epoll = self._idle, self._idle.epoll
        taken: dict[int, tuple[Detached, Channel]] = {}
        nm = self.backend._channel
        with self.cv:
            self.reading = True
            links = [nm, *self.links]
        for link in links:
            lent = None if link.closed else poller.detach(link.sock)
            if lent is None:  # over, or not polled: the poller's (if anyone's)
                if link is not nm:
                    with self.cv:
                        self.links.discard(link)
                continue
            epoll.register(lent.fd, select.EPOLLIN)
            taken[lent.fd] = (lent, link)
        if not taken:  # (the poller is closing): wait on ``cv`` until a new link
            with self.cv:
                self.reading = self.lend = False
            return False
        try:
            while taken and not waiting():
                for fd in idle.poll(tick):
                    found = taken.get(fd)
                    if found is not None and not found[0].read():  # (closed: it left
                        del taken[fd]                              # our epoll with it)
                        with self.cv:
                            self.links.discard(found[1])
        finally:
            with self.cv:
                self.reading = False
            for fd, (lent, _) in taken.items():
                with contextlib.suppress(OSError, ValueError):
                    epoll.unregister(fd)
                poller.attach(lent)
        return True

    def _wake_reader(self) -> None:
        """Work was queued by another thread: wake the main thread if it reads."""
        idle = self._idle
        if self.reading and idle is not None and threading.get_ident() != self.main_ident:
            idle.wake()

    @contextlib.contextmanager
    def blocked(self) -> Iterator[None]:
        """Around a wait inside a task: hand queued tasks back and lend the CPU."""
        if threading.get_ident() != self.main_ident or self.host is not None:
            yield
            return
        with self.cv:
            self.block_depth += 1
            first = self.block_depth == 1
            if first:
                handed = [m for m in self.queue if m[0] == Op.EXECUTE]
                for m in handed:
                    self.queue.remove(m)
                back: dict[Channel, list[str]] = {}
                hub: list[str] = []
                for m in handed:
                    lease = self.leased.pop(m[1], None)
                    if lease is None:
                        hub.append(m[1])
                    else:  # a caller's: it sends them elsewhere
                        back.setdefault(lease[0], []).append(m[1])
                for link, ids in back.items():
                    link.send([Op.LEASE_HANDBACK, ids])
                self.backend._send([Op.BLOCKED, hub])
        try:
            yield
        finally:
            with self.cv:
                self.block_depth -= 1
                if self.block_depth == 0:
                    self.backend._send([Op.UNBLOCKED])

    # ------------------------------------------------------------- answers
    def _send_done(self, task_id: str, results: list[list[Any]]) -> None:
        if self.leased:
            lease = self.leased.pop(task_id, None)
            if lease is not None:
                self._lease_done(task_id, results, *lease)
                return
        link = self.direct.pop(task_id, None)
        msg = [Op.TASK_DONE if link is None else Op.DIRECT_DONE, task_id, results]
        host = self.host
        later = (host.queued() or host.running()) if host is not None \
            else self.queue and threading.get_ident() == self.main_ident
        backend = self.backend
        if later:
            # More tasks are queued here: batch this result with the next ones (the
            # client's flusher writes it within a millisecond if the next one is slow).
            backend._send_soon(msg)
        else:
            backend._send(msg)
        if link is not None:  # the node manager has it first (its frame is queued first)
            reply = [Op.DIRECT_REPLY, task_id, [r for r in results if goes_straight(r)]]
            if not later:
                link.send(reply)
            elif backend._outboxes.send_later(link, reply):
                backend._wake_flusher.set()

    def report_running(self, now: float) -> None:
        """Tell the node manager the leased task we run once it ran a while
        (_REPORT_AFTER_S; the client's flusher, every turn): its memory monitor
        and its lists see it (see lease_desk.py). Short ones cost it nothing but
        a row in the batch of those that ended (LEASE_ENDED: its event log and
        counters), said every _ENDED_EVERY_S at most (one message per task would
        wake the node manager once per round trip)."""
        if self.ended and (now - self.ended_at >= _ENDED_EVERY_S or len(self.ended) >= 512):
            self.ended_at = now
            with self.cv:
                ended, self.ended = self.ended, []
            self.backend._channel.send_later([Op.LEASE_ENDED, ended])
            self.backend._wake_flusher.set()
        with self.cv:
            task_id, msg = self.current, self.running
            lease = self.leased.get(task_id) if task_id is not None else None
            if lease is None or msg is None or msg[1] != task_id or \
                    task_id == self.reported or now - self.since < _REPORT_AFTER_S:
                return
            self.reported = task_id
            # (queued under the lock: a LEASE_RUNNING None for it comes after it)
            self.backend._channel.send_later([Op.LEASE_RUNNING, task_id, msg[5],
                                              msg[3][6] != 0, lease[1]])
        self.backend._wake_flusher.set()

    def _lease_done(self, task_id: str, results: list[list[Any]], link: Channel,
                    caller: int) -> None:
        """A leased task ended: results the node manager must know first (in the
        store, or holding refs) go there for the caller (LEASE_PUT), then every
        result goes to the caller (LEASE_DONE)."""
        backend = self.backend
        with self.cv:  # (a revoke ends one on the poller's thread)
            self.made.add(results)
            if self.reported == task_id:  # it was said to run: it ends
                self.reported = None
                if backend._channel.send_later([Op.LEASE_RUNNING, None, "", False, caller]):
                    backend._wake_flusher.set()
            run = self.running
            if run is not None and run[1] == task_id:  # (said with the next report)
                env = run[3][7] or {}
                self.ended.append([task_id, run[5], any(
                    r[1] in (Kind.ERROR, Kind.FAILED) for r in results),
                    str(env.get("job_id") or ""), time.monotonic() - self.since])
        first = [r for r in results if not goes_straight(r)]
        if first:
            backend._send([Op.LEASE_PUT, caller, first])
        reply = [Op.LEASE_DONE, task_id, results]
        if self.queue and threading.get_ident() == self.main_ident:
            if backend._outboxes.send_later(link, reply):  # batched with the next ones
                backend._wake_flusher.set()
        else:
            link.send(reply)

    def on_lease(self, msg: list[Any], link: Channel) -> None:
        """A leased task's message from its caller (on the poller thread)."""
        op = msg[0]
        if op == Op.LEASE_EXEC:
            _, task_id, return_ids, payload, name, caller, deps = msg
            if self.host is not None:
                raise ValueError("an actor's worker takes no leased tasks")
            with self.cv:
                if self.block_depth:  # blocked in a get: it could wait for this one
                    link.send([Op.LEASE_HANDBACK, [task_id]])
                    return
                self.leased[task_id] = (link, caller)
                self.links.add(link)
                self.lend = True
                self._push([Op.EXECUTE, task_id, return_ids, payload, deps, name, []])
        elif op == Op.LEASE_CANCEL:
            _, task_id, force = msg
            if force:
                with self.cv:
                    if self.current == task_id:  # as the hub does: the worker dies
                        os.kill(os.getpid(), signal.SIGKILL)
            self._cancel(task_id)
        elif op == Op.LEASE_REVOKE:
            link.send([Op.LEASE_REVOKED, msg[1], self._revoke(msg[1])])
        elif op == Op.LEASE_YIELD:  # recalled: what has not started goes back
            with self.cv:
                handed = [m for m in self.queue if m[0] == Op.EXECUTE
                          and self.leased.get(m[1], (None,))[0] is link]
                for m in handed:
                    self.queue.remove(m)
                    del self.leased[m[1]]
            if handed:
                link.send([Op.LEASE_HANDBACK, [m[1] for m in handed]])

    def _direct_call(self, task_id: str, msg: list[Any], link: Channel) -> None:
        """A caller sent a call straight here (see direct.py)."""
        self.direct[task_id] = link
        if self.host is None or not self.host.submit(task_id, msg):
            self.direct.pop(task_id, None)  # the process is ending: the NM answers it
            return
        if link not in self.links:
            with self.cv:
                self.links.add(link)
        self._wake_reader()

    def _read_for_actor(self, ready: Callable[[], bool]) -> bool:
        """The actor's only thread is idle (ActorHost ``idle``): read our links on
        it until a call is queued (False: it cannot, wait as usual)."""
        if threading.get_ident() != self.main_ident:
            return False
        return self._read_links(ready, _ACTOR_TICK_S)

    def _chained(self, task_id: str, return_ids: list[str], deps: list[Any]
                 ) -> list[list[Any]] | None:
        """A leased task's dep entries (see chained.py); None if it was answered
        here instead: a dep failed (so does the task, unrun), or one is no longer
        kept (the task goes back to its caller, for the hub)."""
        entries = self.made.resolve(deps)
        if entries is None:
            with self.cv:
                link = self.leased.pop(task_id)[0]
            link.send([Op.LEASE_HANDBACK, [task_id]])
            return None
        bad = failed_dep(entries)
        if bad is not None:
            self._send_done(task_id, [[rid, *bad[1:]] for rid in return_ids])
            return None
        return entries

    def _send_failed(self, msg: list[Any], kind: ErrorKind, message: str) -> None:
        self._send_done(msg[1], [[rid, Kind.FAILED, kind, message] for rid in msg[2]])

    def _error_results(self, return_ids: list[str], error: BaseException) -> list[list[Any]]:
        blob = values.pickle_error(error)
        return [[rid, Kind.ERROR, blob] for rid in return_ids]

    def _value_results(self, return_ids: list[str], result: Any, num_returns: int,
                       name: str) -> list[list[Any]]:
        parts = execution.split_returns(result, num_returns, name)
        return [values.encode(self.backend, rid, v, f"return value of {name!r}")[0]
                for rid, v in zip(return_ids, parts)]

    # --------------------------------------------------------------- tasks
    def _load_call(self, packed: list[Any], deps: list[list[Any]]
                   ) -> tuple[list[Any], dict[str, Any]]:
        dep_values = [values.decode(self.backend, e) for e in deps]
        mode, data, buffers = packed
        if mode == 1:
            args, kwargs = dep_values.pop()
        else:
            with resolving(self.backend):
                args, kwargs = serialization.loads(data, buffers)
        if dep_values:
            args = [dep_values[a.index] if isinstance(a, values.DepSlot) else a for a in args]
            kwargs = {k: dep_values[v.index] if isinstance(v, values.DepSlot) else v
                      for k, v in kwargs.items()}
        return list(args), kwargs

    def _function(self, blob: bytes) -> Any:
        fn = self.fn_cache.get(blob)
        if fn is None:
            with resolving(self.backend):
                fn = serialization.loads(blob)
            if len(self.fn_cache) > 512:
                self.fn_cache.clear()
            self.fn_cache[blob] = fn
        return fn

    def _ensure_initialized(self) -> None:
        if self.initialized:
            return
        self.initialized = True
        try:
            fn, args = cloudpickle.loads(bytes.fromhex(self.config["initializer"]))
            fn(*args)
        except BaseException as exc:
            self.init_error = BrokenExecutorError(
                f"a worker's initializer raised {type(exc).__name__}: {exc}; the executor is "
                "broken and runs no more tasks")
            raise self.init_error from exc

    def _execute(self, msg: list[Any]) -> None:
        _, task_id, return_ids, payload, deps, name, gpus = msg
        if deps and task_id in self.leased:
            deps = self._chained(task_id, return_ids, deps)
            if deps is None:
                return
        keep: Any = None  # the return value, alive until TASK_DONE is queued (see below)
        results: list[list[Any]] | None = None
        try:
            (fn_blob, mode, data, buffers, num_returns, retry, max_retries, env) = payload
            if not isinstance(retry, bool):
                retry = tuple(serialization.loads(retry))
            options = TaskOptions(retry_exceptions=retry)
            ctx = self.backend.task_context(task_id, None, task_id, (env or {}).get("job_id"),
                                            gpus, (env or {}).get("namespace"))
            try:
                with running_task(ctx), _runtime_env(env), _visible_gpus(gpus):
                    results, keep = self._attempts(task_id, return_ids, name, fn_blob,
                                                   [mode, data, buffers], deps, num_returns,
                                                   options, max_retries)
            except RuntimeEnvSetupError as exc:
                results = self._error_results(return_ids, exc)
            with self.cv:
                self.current = None  # a cancel arriving now is too late
        except KeyboardInterrupt:
            # A cancel's SIGINT that landed outside the task's own ``try`` (as it
            # began, or once it had ended): the task is answered all the same, or its
            # caller (the node manager, or a leased task's driver) would wait forever.
            with self.cv:
                self.current = None
            if results is None:
                results = self._error_results(
                    return_ids, TaskCancelledError(f"task {name!r} was cancelled"))
        # Refs inside the return value must not be released (DECREF) before the
        # result that contains them has been sent, so ``keep`` dies only now.
        self._send_done(task_id, results)
        del keep

    def _attempts(self, task_id: str, return_ids: list[str], name: str, fn_blob: bytes,
                  packed: list[Any], deps: list[list[Any]], num_returns: int,
                  options: TaskOptions, retries_left: int) -> tuple[list[list[Any]], Any]:
        """Run a task, again while ``retry_exceptions`` allows: (result entries, value)."""
        while True:
            try:
                if self.init_error is not None:
                    raise self.init_error
                self._ensure_initialized()
                fn = self._function(fn_blob)
                args, kwargs = self._load_call(packed, deps)
                result = fn(*args, **kwargs)
                del args, kwargs
                return self._value_results(return_ids, result, num_returns, name), result
            except KeyboardInterrupt as exc:
                if self.cancelling == task_id:
                    error: BaseException = TaskCancelledError(f"task {name!r} was cancelled")
                else:
                    error = execution.wrap_exception(exc, name)
                return self._error_results(return_ids, error), None
            except BrokenExecutorError as exc:
                return self._error_results(return_ids, exc), None
            except BaseException as exc:
                if execution.should_retry(exc, options, retries_left):
                    retries_left -= 1
                    continue
                return self._error_results(return_ids, execution.wrap_exception(exc, name)), None

    # -------------------------------------------------------------- actors
    def _init_actor(self, msg: list[Any]) -> None:
        _, actor_id, spec, payload, deps, gpus = msg
        cls_blob, mode, data, buffers = payload
        if gpus:  # the actor's process keeps its GPUs for life
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        _extend_path((spec.get("runtime_env") or {}).get("sys_path"))  # for its lifetime
        self.actor_job_id = (spec.get("runtime_env") or {}).get("job_id")
        self.actor_gpus, self.actor_namespace = tuple(gpus or ()), spec.get("namespace")
        self.actor_id, self.actor_spec = actor_id, spec

        def construct() -> Any:
            with running_task(self._actor_context(None, actor_id)), \
                    _runtime_env(spec.get("runtime_env")):
                cls = self._function(cls_blob)
                args, kwargs = self._load_call([mode, data, buffers], deps)
                instance = cls(*args, **kwargs)
            self.backend._send([Op.ACTOR_READY, actor_id, self._listen()])
            return instance

        assert self.host is not None
        # The main thread is the host's first thread from now on (start returns
        # only if __init__ raised): the process lives for this actor.
        error = self.host.start(construct, here=True).exception()
        if error is not None:
            self.host.close()
            err = execution.wrap_exception(error, f"{spec['class_name']}.__init__")
            self.backend._send([Op.ACTOR_FAILED, actor_id, f"its __init__ raised:\n{err}"])

    def _listen(self) -> str | None:
        """Start taking direct calls and leased tasks: the socket's path (None:
        callers use the hub)."""
        if self.listener is not None:
            return self.listener.path
        session_dir = self.backend._session_dir
        if session_dir is None:
            return None
        try:
            self.listener = CallListener(self.backend._links.poller, session_dir,
                                         self.backend.worker_id,
                                         self.backend._token, self._direct_call,
                                         self.on_lease)
        except OSError:  # (a path too long for a Unix socket, say)
            return None
        return self.listener.path

    def _actor_context(self, task_id: str | None, actor_id: str | None) -> TaskContext:
        """The context of this worker's actor (its __init__, or a call ``task_id``)."""
        return self.backend.task_context(task_id, actor_id, None, self.actor_job_id,
                                         self.actor_gpus, self.actor_namespace)

    # The runner of the actor host's calls: ACTOR_EXEC messages
    # [op, task_id, return_ids, [method, mode, data, buffers, num_returns], deps, name].
    def context(self, msg: list[Any]) -> contextlib.AbstractContextManager[Any]:
        return running_task(self._actor_context(msg[1], self.actor_id))

    def waits_for(self, msg: list[Any]) -> Sequence[Any]:
        return ()  # the node manager sends a call once its arguments are ready

    def arguments(self, msg: list[Any]) -> tuple[str, Sequence[Any], Mapping[str, Any]]:
        method, mode, data, buffers, _ = msg[3]
        args, kwargs = self._load_call([mode, data, buffers], msg[4])
        return method, args, kwargs

    def finish(self, msg: list[Any], result: Any, error: BaseException | None) -> None:
        task_id, return_ids, name = msg[1], msg[2], msg[-1]
        if error is None:
            try:
                results = self._value_results(return_ids, result, msg[3][4], name)
            except BaseException as exc:
                error = exc
        if isinstance(error, TaskCancelledError) and error.__traceback__ is None:
            results = self._error_results(return_ids, error)  # the host cancelled it
        elif error is not None:
            results = self._error_results(return_ids, execution.wrap_exception(error, name))
        self._send_done(task_id, results)


def _extend_path(paths: list[str] | None) -> None:
    """Append the driver's import path entries this process lacks."""
    for path in paths or ():
        if path not in sys.path:
            sys.path.append(path)


@contextlib.contextmanager
def _visible_gpus(gpus: list[str]) -> Iterator[None]:
    """``CUDA_VISIBLE_DEVICES`` = the task's GPUs while it runs (takes effect for
    CUDA contexts created in the task, as with Ray's reused workers)."""
    if not gpus:
        yield
        return
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


_REINTERRUPT_S = 0.02


def _importing(frame: Any) -> bool:
    """Whether ``frame`` (the code a signal interrupted) runs inside an import."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def _runtime_env(env: dict[str, Any] | None) -> Iterator[None]:
    """Apply a task's ``runtime_env`` (env_vars, working_dir, py_modules) around it."""
    if not env:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in (env.get("env_vars") or {})}
    saved_cwd = os.getcwd()
    saved_path = list(sys.path)
    try:
        _extend_path(env.get("sys_path"))
        os.environ.update(env.get("env_vars") or {})
        wd = env.get("working_dir")
        if wd:
            try:
                os.chdir(wd)
            except OSError as exc:
                from ...exceptions import RuntimeEnvSetupError

                raise RuntimeEnvSetupError(
                    f"runtime_env working_dir {wd!r} cannot be used: {exc}") from exc
            sys.path.insert(0, os.path.abspath(wd))
        for mod in env.get("py_modules") or []:
            path = getattr(mod, "__file__", None) or str(mod)
            sys.path.insert(0, os.path.dirname(os.path.abspath(path))
                            if os.path.isfile(path) else os.path.abspath(path))
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        with contextlib.suppress(OSError):
            os.chdir(saved_cwd)
        sys.path[:] = saved_path


def main_from_fork(socket_path: str, token: bytes, worker_id: str, node_id: str,
                   config: dict[str, Any]) -> None:
    """Run as a worker (called in the child right after the node manager forks)."""
    from ... import _runtime
    from ...config import RuntimeConfig

    with contextlib.suppress(Exception):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    _runtime.forget_default_executor()  # the parent's, if it had one, is not ours
    attach = {"node_id": node_id, "job_id": config["job_id"], "socket_path": socket_path,
              "token": token, "role": "worker", "worker_id": worker_id,
              "node_ip": node_ip(config.get("tcp_host"))}
    backend = NativeBackend(RuntimeConfig(), _attach=attach)
    loop = WorkerLoop(backend, config)
    backend.on_message = loop.on_message
    backend.worker_loop = loop
    backend.hello(loop._listen() if leases_enabled() else None)
    loop.run()
