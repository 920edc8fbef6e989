"""What the libraries run, for the dashboard: serve applications, tune experiments,
train runs (any library may add a kind of its own).

    from fedexec.util import registry

    entry = registry.register("tune", "exp_1", {"trials": 4}, executor=ex)
    entry.update({"trials": 4, "running": 2, "best": 0.93})   # cheap: call it often
    entry.finish("FINISHED", {"trials": 4, "running": 0, "best": 0.97})  # or entry.remove()
    registry.list_entries("tune", executor=ex)
    # -> [{"kind": "tune", "name": "exp_1", "state": "FINISHED", "info": {...},
    #      "started": <unix s>, "updated": <unix s>, "finished": <unix s> | None}]

An entry is one thing a library runs, named uniquely within its kind (registering
a name again replaces that entry). Its info is kept as JSON-like data (numbers,
numpy's too, strings, lists, dicts; anything else becomes its string).

Where entries live: on a backend whose actors run in processes of their own and
can be named (``native``, ``dask``), in one detached actor, ``fedexec_registry``
in namespace ``_fedexec``, made by the first registration on the head node (so
a process on any node that asks for it by name gets the head's one), which the
head's dashboard reads (``/serve``, ``/tune``, ``/train``); elsewhere
(``local``, ``spark``, or no executor yet) in this process.

Cheap and bounded: ``update`` only keeps the newest info; one background thread
per process sends each changed entry at most every :data:`UPDATE_INTERVAL_S`
seconds and every unfinished entry every ``refresh_s`` seconds (default
:data:`REFRESH_S`; so a restarted registry actor fills up again). ``finish`` and ``remove`` send at once.
The registry keeps at most :data:`MAX_PER_KIND` entries per kind; past that, the
oldest finished entry goes (else the oldest), counted in ``dropped``. An
unfinished entry not refreshed for ``3 * refresh_s`` seconds is listed with state
``LOST``: the process running it ended without finishing it.

Registering never fails the caller's work: a registry that cannot be reached is
skipped (its entries are not shown). Bad arguments raise ``ValueError``.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import fedexec

__all__ = ["MAX_PER_KIND", "NAME", "NAMESPACE", "REFRESH_S", "UPDATE_INTERVAL_S", "Entry",
           "EntrySet", "list_entries", "register"]

NAME, NAMESPACE = "fedexec_registry", "_fedexec"
#: Entries kept per kind.
MAX_PER_KIND = 1000
#: Seconds between two sends of one entry's updates.
UPDATE_INTERVAL_S = 0.5
#: Seconds between two refreshes of an unfinished entry (its heartbeat).
REFRESH_S = 10.0
_MAX_NAME, _MAX_TEXT = 200, 2000


class Registry:
    """The entries themselves (held by the registry actor, or by a process)."""

    def __init__(self, max_per_kind: int = MAX_PER_KIND) -> None:
        self.max_per_kind = max_per_kind
        self.kinds: dict[str, OrderedDict[str, dict[str, Any]]] = {}
        self.seen: dict[tuple[str, str], float] = {}
        self.dropped: dict[str, int] = {}

    def put(self, entry: dict[str, Any]) -> None:
        """Add or replace ``entry`` (its ``kind`` and ``name`` say which)."""
        kind, name = entry["kind"], entry["name"]
        table = self.kinds.setdefault(kind, OrderedDict())
        table[name] = entry  # a known name keeps its place
        self.seen[(kind, name)] = time.monotonic()
        while len(table) > self.max_per_kind:
            victim = next((n for n, e in table.items() if e.get("finished")), None)
            if victim is None:
                victim = next(iter(table))
            del table[victim]
            self.seen.pop((kind, victim), None)
            self.dropped[kind] = self.dropped.get(kind, 0) + 1

    def remove(self, kind: str, name: str) -> None:
        self.kinds.get(kind, OrderedDict()).pop(name, None)
        self.seen.pop((kind, name), None)

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Entries of ``kind`` (None: every kind), in the order they were first
        sent; an unfinished one not refreshed for ``3 * refresh_s`` reads ``LOST``."""
        now = time.monotonic()
        out = []
        for k in ([kind] if kind is not None else sorted(self.kinds)):
            for name, entry in self.kinds.get(k, {}).items():
                row = dict(entry)
                stale = now - self.seen.get((k, name), now) > 3 * float(row.get("refresh_s",
                                                                                REFRESH_S))
                if not row.get("finished") and stale:
                    row["state"] = "LOST"
                out.append(row)
        return out

    def stats(self) -> dict[str, Any]:
        return {"entries": {k: len(t) for k, t in self.kinds.items()},
                "dropped": dict(self.dropped), "max_per_kind": self.max_per_kind}


# ---------------------------------------------------------------- where entries go
_NEEDS = {"named_actors", "worker_processes"}
_local = Registry()


def _shared(ex: fedexec.Executor) -> bool:
    """True when ``ex``'s entries live in the registry actor (see the module doc)."""
    return _NEEDS <= set(fedexec.backends.capabilities(ex.backend))


def _executor(executor: fedexec.Executor | None) -> fedexec.Executor | None:
    """``executor``, else the one running this code, else the default one if it
    exists (registering never starts a runtime)."""
    if executor is not None:
        return None if executor.is_shutdown else executor
    from fedexec.util import inside_task

    if inside_task() or fedexec.is_initialized():
        return fedexec.current_executor()
    return None


def _on_head(ex: fedexec.Executor) -> dict[str, Any]:
    """Options placing the registry actor on the head node, if there is one."""
    head = next((n for n in ex.nodes() if n.get("is_head")), None)
    if head is None:
        return {}
    return {"scheduling_strategy": fedexec.NodeAffinity(head["node_id"], soft=True)}


class _Target:
    """Where one executor's entries go: the registry actor (made on first use), or
    this process's :class:`Registry`."""

    def __init__(self, ex: fedexec.Executor | None) -> None:
        self.ex = ex if ex is not None and _shared(ex) else None
        self.handle: Any = None
        self.last: Any = None  # the latest call's ref: a failed one means a dead actor

    def _actor(self) -> Any:
        assert self.ex is not None
        if self.last is not None and self.last.done() and self.last.exception() is not None:
            self.handle = None
        if self.handle is None:
            self.handle = self.ex.options(
                name=NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                num_cpus=0, max_restarts=-1, **_on_head(self.ex)).actor(Registry)
        return self.handle

    def put(self, entry: dict[str, Any]) -> None:
        if self.ex is None:
            _local.put(entry)
        else:
            self.last = self._actor().put.remote(entry)

    def remove(self, kind: str, name: str) -> None:
        if self.ex is None:
            _local.remove(kind, name)
        else:
            self.last = self._actor().remove.remote(kind, name)


_targets: weakref.WeakKeyDictionary[fedexec.Executor, _Target] = weakref.WeakKeyDictionary()
_no_executor = _Target(None)
_targets_lock = threading.Lock()


def _target(ex: fedexec.Executor | None) -> _Target:
    if ex is None:
        return _no_executor
    with _targets_lock:
        target = _targets.get(ex)
        if target is None:
            target = _targets[ex] = _Target(ex)
        return target


# ---------------------------------------------------------------- entries
class Entry:
    """One registered thing; see the module docstring. Thread-safe."""

    def __init__(self, target: _Target, kind: str, name: str, info: dict[str, Any],
                 state: str, refresh_s: float = REFRESH_S) -> None:
        self._target = target
        self.kind, self.name = kind, name
        self._data: dict[str, Any] = {
            "kind": kind, "name": name, "state": state, "info": info,
            "started": time.time(), "updated": time.time(), "finished": None,
            "refresh_s": refresh_s, "pid": os.getpid()}
        self.refresh_s = refresh_s
        self._dirty = True
        self._sent_at = 0.0
        self.done = False

    @property
    def info(self) -> dict[str, Any]:
        """A copy of the info last given."""
        with _sender.lock:
            return dict(self._data["info"])

    @property
    def state(self) -> str:
        return str(self._data["state"])

    def update(self, info: Mapping[str, Any] | None = None, *, state: str | None = None) -> None:
        """Replace the entry's info (and state); sent within ``UPDATE_INTERVAL_S``."""
        with _sender.lock:
            if self.done:
                return
            if info is not None:
                self._data["info"] = _check_info(info)
            if state is not None:
                self._data["state"] = _check_state(state)
            self._data["updated"] = time.time()
            self._dirty = True
        _sender.wake()

    def due(self) -> bool:
        """True when an update would be sent soon (none is waiting and the last
        went out ``UPDATE_INTERVAL_S`` ago): compute costly info only then."""
        return (not self._dirty and not self.done
                and time.monotonic() - self._sent_at >= UPDATE_INTERVAL_S)

    def finish(self, state: str = "FINISHED", info: Mapping[str, Any] | None = None) -> None:
        """Mark it ended (``FINISHED``, ``ERRORED``, ``STOPPED`` ...): sent now, kept
        in the registry until newer entries push it out. Later calls do nothing."""
        with _sender.lock:
            if self.done:
                return
            if info is not None:
                self._data["info"] = _check_info(info)
            self._data["state"] = _check_state(state)
            self._data["updated"] = self._data["finished"] = time.time()
            self.done = True
            _sender.live.pop(self, None)
            _sender.send(self, self._target.put, dict(self._data))
        _sender.wake()  # its thread ends once nothing is unfinished

    def remove(self) -> None:
        """Take it out of the registry now. Later calls do nothing."""
        with _sender.lock:
            if self.done:
                return
            self.done = True
            _sender.live.pop(self, None)
            _sender.send(self, self._target.remove, self.kind, self.name)
        _sender.wake()

    def __enter__(self) -> Entry:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish("ERRORED" if exc_type is not None else "FINISHED")


class _Sender:
    """Sends changed entries (and heartbeats) from one background thread that ends
    when no entry is unfinished. Every send happens under ``lock``, so an entry's
    messages reach the registry in the order they were made."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.live: dict[Entry, None] = {}  # in the order they were registered
        self.thread: threading.Thread | None = None
        self.event = threading.Event()

    def add(self, entry: Entry) -> None:
        with self.lock:
            self.live[entry] = None
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, daemon=True,
                                               name="fedexec-registry")
                self.thread.start()
        self.event.set()

    def wake(self) -> None:
        self.event.set()

    def send(self, entry: Entry, call: Any, *args: Any) -> None:
        """``call(*args)``; a registry that cannot be reached drops the entry."""
        try:
            call(*args)
        except Exception:
            entry.done = True
            self.live.pop(entry, None)
        entry._sent_at = time.monotonic()

    def _loop(self) -> None:
        while True:
            with self.lock:  # until the next heartbeat is due
                now = time.monotonic()
                due = min((e._sent_at + e.refresh_s - now for e in self.live),
                          default=REFRESH_S)
            self.event.wait(max(due, 0.01))
            self.event.clear()
            with self.lock:
                now = time.monotonic()
                for entry in list(self.live):
                    wait = now - entry._sent_at
                    if (entry._dirty and wait >= UPDATE_INTERVAL_S) or wait >= entry.refresh_s:
                        entry._dirty = False
                        self.send(entry, entry._target.put, dict(entry._data))
                if not self.live:
                    self.thread = None
                    return
                dirty = any(e._dirty for e in self.live)
            if dirty:  # the rest of the interval, then send them
                time.sleep(UPDATE_INTERVAL_S)
                self.event.set()


_sender = _Sender()


def _after_fork() -> None:
    global _sender, _targets, _no_executor
    _sender = _Sender()
    _targets = weakref.WeakKeyDictionary()
    _no_executor = _Target(None)


os.register_at_fork(after_in_child=_after_fork)


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-like data: numbers (numpy's too), strings, lists, dicts;
    anything else as a short string."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value[:_MAX_TEXT] if isinstance(value, str) else value
    if depth < 4 and isinstance(value, Mapping):
        return {str(k)[:_MAX_NAME]: _plain(v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value[:100]]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a numpy scalar
        return _plain(value.item(), depth)
    return str(value)[:_MAX_TEXT]


def _check_info(info: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(info, Mapping):
        raise ValueError(f"info must be a dict, got {type(info).__name__}")
    return dict(_plain(info))


def _check_state(state: str) -> str:
    if not isinstance(state, str) or not state:
        raise ValueError(f"state must be a non-empty string such as 'RUNNING', got {state!r}")
    return state.upper()


def _check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME:
        raise ValueError(f"{what} must be a non-empty string of at most {_MAX_NAME} "
                         f"characters, got {value!r}")
    return value


def register(kind: str, name: str, info: Mapping[str, Any] | None = None, *,
             state: str = "RUNNING", executor: fedexec.Executor | None = None,
             refresh_s: float = REFRESH_S) -> Entry:
    """Register ``name`` of ``kind`` (e.g. ``"tune"``) with ``info`` and ``state``;
    returns its :class:`Entry` to update, finish or remove. ``executor``: the
    runtime whose registry keeps it (default: the one running this code, or the
    default one; with neither, this process). ``refresh_s``: how often this
    process refreshes it while unfinished (``LOST`` after three missed)."""
    if not isinstance(refresh_s, (int, float)) or not 0 < refresh_s <= 3600:
        raise ValueError(f"refresh_s must be a number of seconds in (0, 3600], got "
                         f"{refresh_s!r}")
    entry = Entry(_target(_executor(executor)), _check_name("kind", kind),
                  _check_name("name", name), _check_info(info or {}), _check_state(state),
                  float(refresh_s))
    _sender.add(entry)
    return entry


class EntrySet:
    """The entries of one kind that one owner keeps current, e.g. a serve
    controller's applications: :meth:`sync` registers new names, updates the
    changed ones and removes those no longer given; :meth:`clear` removes all.
    Thread-safe."""

    def __init__(self, kind: str, executor: fedexec.Executor | None = None) -> None:
        self.kind, self.executor = _check_name("kind", kind), executor
        self.entries: dict[str, tuple[Entry, tuple[str, dict[str, Any]]]] = {}
        self.lock = threading.Lock()

    def sync(self, current: Mapping[str, tuple[str, Mapping[str, Any]]]) -> None:
        """``current``: ``{name: (state, info)}``, every entry there is now."""
        with self.lock:
            self._sync(current)

    def _sync(self, current: Mapping[str, tuple[str, Mapping[str, Any]]]) -> None:
        for name in [n for n in self.entries if n not in current]:
            self.entries.pop(name)[0].remove()
        for name, (state, info) in current.items():
            value = (state, dict(info))
            have = self.entries.get(name)
            if have is None or have[0].done:
                entry = register(self.kind, name, info, state=state, executor=self.executor)
                self.entries[name] = (entry, value)
            elif have[1] != value:
                have[0].update(info, state=state)
                self.entries[name] = (have[0], value)

    def clear(self) -> None:
        with self.lock:
            for entry, _ in self.entries.values():
                entry.remove()
            self.entries.clear()


def list_entries(kind: str | None = None, *,
                 executor: fedexec.Executor | None = None,
                 timeout: float = 10.0) -> list[dict[str, Any]]:
    """The registered entries of ``kind`` (None: all) that ``executor``'s registry
    holds (default as in :func:`register`); [] when it has none yet.

    Raises:
        fedexec.GetTimeoutError: the registry actor did not answer in ``timeout`` s.
    """
    ex = _executor(executor)
    if ex is None or not _shared(ex):
        return _local.entries(kind)
    try:
        handle = ex.get_actor(NAME, namespace=NAMESPACE)
    except ValueError:
        return []
    return list(ex.get(handle.entries.remote(kind), timeout=timeout))
