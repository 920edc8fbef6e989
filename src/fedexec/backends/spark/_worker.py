"""What runs inside a Spark Python worker: a lease.

A lease is the one task of a one-partition Spark job. It connects back to the
driver that launched it and runs fedexec tasks one after another, as the
driver assigns them, until the driver has had no work for it for a while; then
the Spark task ends. So one Spark job (~0.1 s of scheduling) carries as many
fedexec tasks as keep coming (~1 ms each)::

    main thread (the Spark task)                 reader thread
    ────────────────────────────                 ─────────────
    connect, Hello ─▶ Welcome                    recv() loop:
    initializer (once per process and executor)    Assign/Stop ─▶ inbox
    Idle ─▶                                        Reply/Ready ─▶ LeaseRuntime
    loop: inbox.get() ── Assign ─▶ run the task    Interrupt   ─▶ SIGINT to main
            ─▶ Done ─▶ (next Assign or Stop)        Exit        ─▶ os._exit(1)

While a task runs, ``fedexec.*`` inside it talks to the driver through
:class:`~._runtime.LeaseRuntime`. Cancelling interrupts the task with
``KeyboardInterrupt`` through SIGINT, which also ends a wait on a lock or a
sleep, so a task blocked in ``fedexec.get`` is interrupted too.

State of this process (module global): ``_INITIALIZED``, the executors whose
``initializer`` has run here (Spark reuses Python workers across jobs).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Client
from typing import Any

import cloudpickle

from ... import serialization
from ..._runtime import TaskContext, resolving, running_task
from ...exceptions import RuntimeEnvSetupError, SerializationError, TaskCancelledError
from ...refs import ObjectRef
from .. import _execution as execution
from . import _protocol as msg
from ._runtime import LeaseRuntime
from ._values import dump_error, dump_value

__all__ = ["Lease", "lease_partition"]

_INITIALIZED: set[str] = set()


def lease_partition(spec: msg.LeaseSpec, broadcasts: dict[int, Any],
                    rows: Iterator[Any]) -> Iterator[Any]:
    """The ``mapPartitions`` function of a lease job (runs on a Spark executor)."""
    for _ in rows:  # read the input to its end, so Spark may reuse this worker
        pass
    Lease(spec, broadcasts).serve()
    return iter(())


class _Running:
    """The task a lease runs now (fields under ``Lease._state_lock``)."""

    __slots__ = ("cancel_requested", "interruptible", "lend_depth", "task_id")

    def __init__(self, task_id: str):
        self.task_id = task_id
        self.cancel_requested = False
        self.interruptible = False
        self.lend_depth = 0


class Lease:
    """One lease: a connection to the driver and the loop running its tasks."""

    def __init__(self, spec: msg.LeaseSpec, broadcasts: dict[int, Any]):
        self.spec = spec
        self.broadcasts = broadcasts
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.runtime: LeaseRuntime | None = None
        self._conn: Any = None
        self._send_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._state_lock = threading.Lock()
        self._running: _Running | None = None
        self._main_ident = threading.get_ident()
        self._use_signal = threading.current_thread() is threading.main_thread()
        self._shield = 0  # > 0: a cancel's interrupt waits (see shielded())
        self._deferred = False

    # ------------------------------------------------------------------ messages
    def send(self, message: Any) -> bool:
        """Send ``message`` to the driver; False if the connection is gone. A cancel
        arriving meanwhile waits until the message is out whole."""
        with self.shielded(), self._send_lock:
            try:
                self._conn.send(message)
            except (OSError, EOFError, ValueError):
                return False
        return True

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """In the task's thread: hold back a cancel's ``KeyboardInterrupt`` until the
        block is over (it must not cut a message or a lock's bookkeeping short)."""
        if threading.get_ident() != self._main_ident:
            yield
            return
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1
            if self._shield == 0 and self._deferred:
                self._deferred = False
                run = self._running
                if run is not None and run.interruptible and run.cancel_requested:
                    raise KeyboardInterrupt

    def _read(self) -> None:
        runtime = self.runtime
        assert runtime is not None
        try:
            while True:
                m = self._conn.recv()
                if isinstance(m, (msg.Assign, msg.Stop)):
                    self._inbox.put(m)
                elif isinstance(m, msg.Reply):
                    runtime.on_reply(m)
                elif isinstance(m, msg.Ready):
                    runtime.on_ready(m)
                elif isinstance(m, msg.Interrupt):
                    self._interrupt(m.task_id)
                elif isinstance(m, msg.Exit):
                    os._exit(1)  # force-cancelled: the driver knows; Spark sees a dead worker
        except Exception:  # EOF or a closed connection: the lease is over
            pass
        finally:
            self._inbox.put(msg.Stop())
            runtime.on_closed()

    # ------------------------------------------------------------------ the loop
    def serve(self) -> None:
        """Connect, then run assigned tasks until told to stop."""
        try:
            self._conn = Client(self.spec.address, authkey=self.spec.authkey)
        except Exception as exc:  # fail the Spark task: the driver reports why
            raise RuntimeError(
                f"this Spark executor cannot reach the fedexec driver at "
                f"{self.spec.address[0]}:{self.spec.address[1]} ({exc}); executors must be "
                "able to connect to spark.driver.host") from exc
        try:
            self._conn.send(msg.Hello(self.spec.lease_id, self.pid, self.host,
                                      _addresses(self.host)))
            welcome = self._conn.recv()
        except Exception:
            self._conn.close()
            return
        if not isinstance(welcome, msg.Welcome):
            self._conn.close()
            return
        _extend_sys_path(welcome.sys_path)
        if not self._initialize(welcome):
            self._conn.close()
            return
        self.runtime = LeaseRuntime(self, welcome)
        reader = threading.Thread(target=self._read, daemon=True,
                                  name="fedexec-spark-lease-reader")
        reader.start()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if self._use_signal else None
        try:
            if self.send(msg.Idle()):
                while True:
                    item = self._inbox.get()
                    if not isinstance(item, msg.Assign):
                        break
                    done = self._run(item.task)
                    if not self.send(done):
                        break
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            _hang_up(self._conn)
            reader.join(10)

    def _initialize(self, welcome: msg.Welcome) -> bool:
        """Run the executor's initializer once in this process; False if it raised."""
        if welcome.initializer is None or welcome.uid in _INITIALIZED:
            return True
        try:
            fn, args = cloudpickle.loads(welcome.initializer)
            fn(*args)
        except BaseException as exc:
            self.send(msg.Broken(f"{type(exc).__name__}: {exc}"))
            return False
        _INITIALIZED.add(welcome.uid)
        return True

    # ------------------------------------------------------------------ one task
    def current_task_id(self) -> str | None:
        """The id of the task running now, if any."""
        run = self._running
        return run.task_id if run is not None else None

    def _run(self, spec: msg.TaskSpec) -> msg.Done:
        runtime = self.runtime
        assert runtime is not None
        run = _Running(spec.task_id)
        with self._state_lock:
            self._running = run
        ctx = TaskContext(runtime, runtime.runtime_for(spec.task_id), run)
        try:
            with running_task(ctx):
                try:
                    with _runtime_env(spec.runtime_env):
                        return self._attempts(spec, run, runtime)
                except RuntimeEnvSetupError as exc:
                    return msg.Done(spec.task_id, None, error=dump_error(exc))
        finally:
            with self._state_lock:
                self._running = None

    def _attempts(self, spec: msg.TaskSpec, run: _Running, runtime: LeaseRuntime) -> msg.Done:
        options = execution.load_retry(spec.retry)
        retries_left = spec.retries
        name = spec.name
        while True:
            try:
                with resolving(runtime):
                    fn = serialization.loads(spec.fn)
                    deps = runtime.preload(spec.deps, self.broadcasts)
                    args, kwargs = serialization.loads(spec.call)
                args, kwargs = execution.resolve_args(args, kwargs)
                value = self._call(run, fn, args, kwargs)
                del args, kwargs, deps
                if run.cancel_requested:
                    raise TaskCancelledError(f"task {name!r} was cancelled")
                values: list[bytes] = []
                contained: list[str] = []
                for v in execution.split_returns(value, spec.num_returns, name):
                    data, inside = dump_value(v, f"return value of {name!r}")
                    values.append(data)
                    contained.extend(r.id for r in inside if isinstance(r, ObjectRef))
                return msg.Done(spec.task_id, values, contained)
            except KeyboardInterrupt as exc:
                if run.cancel_requested:
                    error: BaseException = TaskCancelledError(f"task {name!r} was cancelled")
                else:
                    error = execution.wrap_exception(exc, name, skip=2)
            except (SerializationError, TaskCancelledError) as exc:
                error = exc
            except BaseException as exc:
                if execution.should_retry(exc, options, retries_left):
                    retries_left -= 1
                    continue
                error = execution.wrap_exception(exc, name, skip=2)
            return msg.Done(spec.task_id, None, error=dump_error(error))

    def _call(self, run: _Running, fn: Any, args: Any, kwargs: Any) -> Any:
        # A late SIGINT finds nothing to interrupt; a late async exception is dropped.
        with execution.Interruptible(run, self._state_lock,
                                     None if self._use_signal else self._main_ident):
            return fn(*args, **kwargs)

    # ------------------------------------------------------------------ cancel and lend
    def _interrupt(self, task_id: str) -> None:
        with self._state_lock:
            run = self._running
            if run is None or run.task_id != task_id:
                return
            run.cancel_requested = True
            if not run.interruptible:
                return
            if self._use_signal:
                signal.pthread_kill(self._main_ident, signal.SIGINT)
            else:
                execution.interrupt_thread(self._main_ident, KeyboardInterrupt)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        run = self._running
        if run is not None and run.interruptible and run.cancel_requested:
            if self._shield:
                self._deferred = True  # raised when the shielded block ends
                return
            raise KeyboardInterrupt

    def lend_begin(self) -> str:
        """The running task starts waiting in ``get`` (main thread only): tell the
        driver, which lends its resources meanwhile. Returns the task id, or ""."""
        if threading.get_ident() != self._main_ident:
            return ""
        run = self._running
        if run is None:
            return ""
        run.lend_depth += 1
        if run.lend_depth == 1:
            self.send(msg.Block(run.task_id))
        return run.task_id

    def lend_end(self, task_id: str) -> None:
        """The wait started by :meth:`lend_begin` is over."""
        run = self._running
        if run is None or run.task_id != task_id:
            return
        run.lend_depth -= 1
        if run.lend_depth == 0:
            self.send(msg.Unblock(task_id))


def _hang_up(conn: Any) -> None:
    """Close ``conn`` so that a thread blocked reading it wakes up (close() alone
    does not wake it)."""
    with contextlib.suppress(OSError):
        sock = socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    with contextlib.suppress(OSError):
        conn.close()


def _addresses(host: str) -> list[str]:
    """This machine's names and IP addresses (the driver matches them against the
    hosts Spark reports for its executors)."""
    out = {host, socket.getfqdn()}
    with contextlib.suppress(Exception):
        import psutil

        for addrs in psutil.net_if_addrs().values():
            out.update(a.address for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))
    return sorted(out)


def _extend_sys_path(paths: list[str]) -> None:
    """Make the driver's import path importable here too (where it exists), so
    functions pickled by reference from modules the driver imports load here."""
    for path in paths:
        if path and path not in sys.path and os.path.exists(path):
            sys.path.append(path)


@contextlib.contextmanager
def _runtime_env(env: dict[str, Any] | None) -> Iterator[None]:
    """Apply a task's ``runtime_env`` in this process while it runs, then undo it."""
    if not env:
        yield
        return
    saved_env: dict[str, str | None] = {}
    saved_cwd: str | None = None
    added: list[str] = []
    try:
        for key, value in (env.get("env_vars") or {}).items():
            saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        paths = [str(p) for p in env.get("py_modules") or ()]
        working_dir = env.get("working_dir")
        if working_dir is not None:
            working_dir = str(working_dir)
            if not os.path.isdir(working_dir):
                raise RuntimeEnvSetupError(
                    f"runtime_env working_dir {working_dir!r} does not exist on this Spark "
                    "executor; use a path every executor can read (a shared file system)")
            saved_cwd = os.getcwd()
            os.chdir(working_dir)
            paths.insert(0, working_dir)
        for path in paths:
            if not os.path.exists(path):
                raise RuntimeEnvSetupError(
                    f"runtime_env py_modules entry {path!r} does not exist on this Spark "
                    "executor")
            sys.path.insert(0, path)
            added.append(path)
        yield
    finally:
        for path in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(path)
        if saved_cwd is not None:
            os.chdir(saved_cwd)
        for key, old in saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
