"""Dask on fedexec: a Dask scheduler that runs every graph task as a fedexec task.

Usage::

    import dask
    from fedexec.integrations.dask import fedexec_dask_get, fedexec_persist

    x.compute(scheduler=fedexec_dask_get)           # one computation
    with dask.config.set(scheduler=fedexec_dask_get):
        df.groupby("k").v.sum().compute()           # every computation in the block
        x = x.persist()                             # chunks stay in fedexec's store
    (x,) = fedexec_persist(x)                       # the same, explicitly

Data flow of one ``get(dsk, keys)``::

    Dask collection / expression / HighLevelGraph / legacy dict
        │ __dask_graph__(), ensure_dict, convert_legacy_graph
        ▼
    {key: GraphNode}  (dask._task_spec: Task, Alias, DataNode, List/Dict/... containers)
        │ culled to the requested keys, ordered by dask.order (priority) and
        │ submitted in topological order, all at once, from the calling thread:
        │   Alias(k -> t)                   refs[k] = refs[t]           (no task)
        │   DataNode(ObjectRef)             refs[k] = that ref          (no task)
        │   Task(_from_object_ref, ref)     refs[k] = ref  (a persisted chunk, no task)
        │   DataNode(value)                 refs[k] = executor.put(value)
        │   Task / container                refs[k] = executor.submit(
        │                                       _run_node, node, dep_keys, *dep_refs)
        ▼
    fedexec runtime: a task starts once its dependency refs are done; the worker
    receives their *values* (top-level ref arguments), runs ``node(values)``; the
    result stays in the object store (shared memory on ``native``)
        │
        ▼
    executor.get(refs of the requested keys) ──▶ values in the shape of ``keys``
    (lists of keys become tuples, as with every Dask scheduler)

Only the requested results are loaded in the calling process: intermediate values
go from task to task through the object store and are never deserialized by the
driver. (On ``native``, values above the runtime's inline size, 100 KiB, stay in
shared memory; smaller ones travel inline as fedexec's small objects always do.)
Persisted chunks that Dask's optimizer fused into a downstream task are lifted out
again, so they too reach that task as resolved ref arguments.

State of one ``get`` (local to the call, on the calling thread):
    graph       {key: GraphNode}  the culled graph
    refs        {key: ObjectRef}  submitted and still needed: a key's ref is dropped
                once its last dependent is submitted (the pending task holds it), so
                the runtime frees intermediate values as soon as they are consumed
    remaining   {key: int}        dependents not submitted yet
    waiting     {key: int}        dependencies not submitted yet; 0 → in ``ready``
    ready       heap of (dask.order priority, seq, key)
    submitted   WeakSet of task refs; on failure (or Ctrl-C) the ones not started
                are cancelled

Persist: a persisted collection's chunks are graph tasks
``Task(key, _from_object_ref, ref)`` holding the ObjectRef of the computed chunk.
``fedexec_dask_get`` maps such a key straight to its ref (no task, no copy), so a
persisted collection is never recomputed; any other scheduler running in this
process evaluates the task, i.e. fetches the value (``ref.result()``). The
collection's graph holds the refs, so the objects live as long as the collection.
Like ``distributed``'s, persist is asynchronous: it returns once every task is
submitted; a task's error is raised when the persisted collection is computed
(``fedexec_persist(..., wait=True)`` waits and raises at once).

Requires a Dask with the ``dask._task_spec`` graph format (2025.1 and later; tested
with 2026.8). Not supported: Dask's local callbacks (``dask.diagnostics``'
``ProgressBar``, ``Profiler``), which hook into ``dask.local``'s scheduler loop.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import dask
from dask import _task_spec
from dask._task_spec import (
    Alias,
    DataNode,
    GraphNode,
    Task,
    TaskRef,
    convert_legacy_graph,
    cull,
)
from dask.core import flatten
from dask.order import order
from dask.typing import Key as _Key
from dask.utils import ensure_dict

import fedexec
from fedexec import ObjectRef, current_executor

__all__ = ["FedexecDaskScheduler", "fedexec_dask_get", "fedexec_persist", "stored_chunk"]

Key = _Key  # a Dask key: str, int, float or a tuple of keys

# What Dask's optimizer wraps a fused linear chain in (private; absent → no lifting).
_execute_subgraph = getattr(_task_spec, "_execute_subgraph", None)


def _from_object_ref(ref: Any) -> Any:
    """The value behind a persisted chunk: what a scheduler other than fedexec's
    runs for it (fedexec's maps the key to the ref without running anything)."""
    return ref.result() if isinstance(ref, ObjectRef) else ref


def stored_chunk(key: Key, ref: ObjectRef[Any]) -> Task:
    """The graph node of a chunk whose value is already in fedexec's store (as a
    persisted chunk is): :data:`fedexec_dask_get` maps ``key`` straight to ``ref``
    (no task, no copy); any other scheduler fetches the value. For building a
    collection over stored values, e.g. ``dask.delayed.Delayed(key, {key:
    stored_chunk(key, ref)})``."""
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"stored_chunk() takes a fedexec ObjectRef, got {type(ref).__name__}")
    return Task(key, _from_object_ref, ref)


def _run_node(node: GraphNode, keys: tuple[Key, ...], *values: Any) -> Any:
    """The fedexec task of one graph node: ``values`` are the resolved values of
    the dependencies ``keys`` (fedexec resolved their refs before the call)."""
    return node(dict(zip(keys, values)))


def _persisted_ref(node: GraphNode) -> ObjectRef[Any] | None:
    """The ref held by a persisted chunk or a DataNode of a ref, else None."""
    if isinstance(node, DataNode):
        return node.value if isinstance(node.value, ObjectRef) else None
    if (type(node) is Task and node.func is _from_object_ref and len(node.args) == 1
            and not node.kwargs and isinstance(node.args[0], ObjectRef)):
        return node.args[0]
    return None


def _task_graph(dsk: Any) -> dict[Key, GraphNode]:
    """``dsk`` (an expression or collection, a HighLevelGraph, a legacy dict or a
    dict of GraphNodes) as a plain ``{key: GraphNode}`` dict, persisted chunks
    lifted out of fused tasks (see :func:`_lift_persisted`)."""
    if not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    graph = convert_legacy_graph(ensure_dict(dsk))
    lifted: dict[Key, GraphNode] = {}
    for key, node in graph.items():
        if _execute_subgraph is not None and type(node) is Task \
                and node.func is _execute_subgraph:
            graph[key] = _lift_persisted(node, lifted)
    for key, node in lifted.items():
        graph.setdefault(key, node)
    return graph


def _lift_persisted(node: Task, lifted: dict[Key, GraphNode]) -> Task:
    """Undo the fusion of persisted chunks into ``node`` (a task Dask's optimizer
    fused from a linear chain): each becomes a dependency again, so its stored value
    reaches the worker as a resolved argument instead of a ``ref.result()`` call
    inside the fused task. Adds the lifted nodes to ``lifted``."""
    assert _execute_subgraph is not None  # only fused tasks, which call it, come here
    inner, outkey, inkeys = node.args[:3]
    if not isinstance(inner, dict):
        return node
    moved = [k for k, n in inner.items() if k != outkey and _persisted_ref(n) is not None]
    if not moved:
        return node
    for k in moved:
        lifted[k] = inner[k]
    rest = {k: n for k, n in inner.items() if k not in moved}
    keys = (*inkeys, *moved)
    return Task(node.key, _execute_subgraph, rest, outkey, keys, *(TaskRef(k) for k in keys),
                _data_producer=node.data_producer)


def _nested(keys: Any, values: Mapping[Key, Any]) -> Any:
    """``values`` arranged as ``keys``: a list of keys becomes a tuple (Dask's rule)."""
    if isinstance(keys, list):
        return tuple(_nested(k, values) for k in keys)
    return values[keys]


def _check_executor(executor: Any) -> None:
    if executor is not None and not all(
            callable(getattr(executor, m, None)) for m in ("submit", "put", "get", "options")):
        raise TypeError(f"executor must be a fedexec.Executor, got {executor!r}")


def _task_name(key: Key) -> str:
    return f"dask:{key}" if isinstance(key, str) else f"dask:{key!r}"


class FedexecDaskScheduler:
    """A Dask scheduler that runs each graph task as a task on a fedexec executor.

    An instance is a Dask ``get`` function (``scheduler=`` of ``compute``,
    ``persist`` and ``dask.config.set``) and also implements Dask's ``persist``
    protocol, so ``collection.persist()`` keeps the chunks in fedexec's object store.
    :data:`fedexec_dask_get` is the instance using the current executor.

    Args:
        executor: the :class:`fedexec.Executor` (or an ``executor.options(...)`` view)
            to run on; default: the current one when a computation starts (the
            default executor, created on first use, or, inside a task, the runtime
            running it).
        **task_options: fedexec task options for every graph task (``num_cpus``,
            ``max_retries``, ``resources``, ...). Each task is also named
            ``dask:<key>``.

    Raises:
        TypeError: ``executor`` is not an executor.
        ValueError: an unknown or invalid task option.
    """

    def __init__(self, executor: fedexec.Executor | None = None, **task_options: Any) -> None:
        _check_executor(executor)
        if "num_returns" in task_options or "name" in task_options:
            raise ValueError("num_returns and name are set by the Dask scheduler itself")
        fedexec.remote(**task_options)(_from_object_ref)  # bad options fail now, not at compute
        self.executor = executor
        self.task_options = dict(task_options)

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.task_options.items())
        return f"FedexecDaskScheduler(executor={self.executor!r}{opts})"

    # -- Dask's get protocol ------------------------------------------------------
    def __call__(self, dsk: Any, keys: Any, *, executor: fedexec.Executor | None = None,
                 return_refs: bool = False, **kwargs: Any) -> Any:
        """Compute ``keys`` of the graph ``dsk``; Dask's ``get`` signature.

        Args:
            dsk: a Dask graph: what ``dask.compute`` passes (an expression), a
                ``HighLevelGraph``, a dict of legacy tuple tasks or of
                ``dask._task_spec`` nodes.
            keys: a key, or a list (nested lists allowed) of keys.
            executor: overrides the scheduler's executor for this call.
            return_refs: return the ObjectRefs of the results instead of the values
                (as soon as every task is submitted; nothing is fetched).
            **kwargs: other scheduler keywords Dask passes (``num_workers``,
                ``pool``, ``cache``...) are accepted and ignored: the fedexec
                executor decides the parallelism.

        Returns:
            The values (or refs) in the shape of ``keys``; a list of keys gives a tuple.

        Raises:
            KeyError: a requested key (or a dependency) is not in the graph.
            Exception: the first error raised by a task, as fedexec's ``TaskError``,
                which is also an instance of the task's exception class (``except
                ValueError:`` catches a task's ``ValueError``) and holds the remote
                traceback; a task depending on a failed one fails with the same error.
        """
        run = self._run(dsk, keys, executor)
        return run.refs_in_shape() if return_refs else run.values_in_shape()

    get = __call__

    def _run(self, dsk: Any, keys: Any, executor: Any) -> _Run:
        _check_executor(executor)
        ex = executor or self.executor or current_executor()
        return _Run(_task_graph(dsk), keys, ex, self.task_options)

    def persist(self, collections: Iterable[Any], optimize_graph: bool = True,
                **kwargs: Any) -> list[Any]:
        """Dask's persist protocol (``dask.persist`` calls it for a scheduler that has
        it): the collections, computed into fedexec's store; see :func:`fedexec_persist`."""
        collections = list(collections)
        if not collections:
            return []
        persisting = functools.partial(_persisting_get, self, kwargs.pop("executor", None),
                                       None)
        return list(dask.persist(*collections, traverse=False, optimize_graph=optimize_graph,
                                 scheduler=persisting, **kwargs))


def _persisting_get(scheduler: FedexecDaskScheduler, executor: Any,
                    sink: list[ObjectRef[Any]] | None, dsk: Any, keys: Any,
                    **kwargs: Any) -> Any:
    """A ``get`` whose results are persisted-chunk tasks holding the result refs
    (also appended to ``sink`` when given).

    A ``functools.partial`` of it is given to ``dask.persist`` (a bound method would
    send ``dask.persist`` back to the scheduler's own ``persist``).
    """
    run = scheduler._run(dsk, keys, executor)
    if sink is not None:
        sink.extend(run.refs[k] for k in run.flat)
    return _nested(keys, {k: stored_chunk(k, run.refs[k]) for k in run.flat})


fedexec_dask_get: FedexecDaskScheduler = FedexecDaskScheduler()
"""The Dask scheduler on the current fedexec executor:
``dask.compute(x, scheduler=fedexec_dask_get)`` or
``dask.config.set(scheduler=fedexec_dask_get)``; ``fedexec_dask_get(dsk, keys,
executor=ex)`` computes a raw graph. See :class:`FedexecDaskScheduler`."""


def fedexec_persist(*args: Any, executor: fedexec.Executor | None = None, wait: bool = False,
                    traverse: bool = True, optimize_graph: bool = True,
                    **task_options: Any) -> tuple[Any, ...]:
    """Persist Dask collections into fedexec's object store, as ``dask.persist``.

    Returns new collections, in a tuple as ``dask.persist`` does, whose chunks are
    tasks holding the ObjectRefs of the computed chunks. Computing them (or
    collections built on them) with :data:`fedexec_dask_get` reuses the stored
    chunks without recomputing them and without copying them to this process; any
    other scheduler in this process fetches them. The chunks live as long as the
    returned collections. Under ``dask.config.set(scheduler=fedexec_dask_get)``,
    ``collection.persist()`` and ``dask.persist(...)`` do the same.

    Args:
        *args: Dask collections (and, with ``traverse``, Python containers of them).
        executor: the executor to compute on (default: the current one). Compute
            the persisted collections on the same executor: the refs belong to it.
        wait: block until every chunk is computed and raise the first task error;
            by default it returns once every task is submitted (as with
            ``distributed``), and a task's error is raised when the persisted
            collection is computed.
        traverse, optimize_graph: as ``dask.persist``.
        **task_options: fedexec task options for every task (see
            :class:`FedexecDaskScheduler`).

    Returns:
        The persisted collections, in a tuple.
    """
    scheduler = FedexecDaskScheduler(executor, **task_options)
    refs: list[ObjectRef[Any]] = []
    persisting = functools.partial(_persisting_get, scheduler, None, refs)
    out = dask.persist(*args, traverse=traverse, optimize_graph=optimize_graph,
                       scheduler=persisting)
    if wait:
        for ref in refs:
            error = ref.exception()  # waits, without loading the value here
            if error is not None:
                raise error
    return tuple(out)


class _Run:
    """One ``get``: submits the culled graph in priority order (see the module doc)."""

    def __init__(self, dsk: dict[Key, GraphNode], keys: Any, executor: Any,
                 task_options: dict[str, Any]):
        self.keys = keys
        self.flat: list[Key] = list(flatten(keys)) if isinstance(keys, list) else [keys]
        for k in self.flat:
            if k not in dsk:
                raise KeyError(k)
        self.executor = executor
        self.options = task_options
        self.refs: dict[Key, ObjectRef[Any]] = {}
        self.submitted: weakref.WeakSet[ObjectRef[Any]] = weakref.WeakSet()
        try:
            self._submit_all(cull(dsk, list(set(self.flat))))
        except BaseException:
            self._cancel()
            raise

    def _submit_all(self, graph: dict[Key, GraphNode]) -> None:
        deps = {k: node.dependencies for k, node in graph.items()}
        dependents: dict[Key, list[Key]] = {k: [] for k in graph}
        for k, ds in deps.items():
            for d in ds:
                if d not in graph:
                    raise KeyError(f"{d!r}, a dependency of {k!r}, is not in the graph")
                dependents[d].append(k)
        priority = order(graph) if len(graph) > 1 else dict.fromkeys(graph, 0)
        outputs = set(self.flat)
        remaining = {k: len(v) for k, v in dependents.items()}
        waiting = {k: len(v) for k, v in deps.items()}
        seq = itertools.count()
        ready = [(priority[k], next(seq), k) for k, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        done = 0
        refs = self.refs
        while ready:
            key = heapq.heappop(ready)[2]
            refs[key] = self._launch(key, graph[key])
            done += 1
            for d in deps[key]:
                remaining[d] -= 1
                if remaining[d] == 0 and d not in outputs:
                    del refs[d]
            for k in dependents[key]:
                waiting[k] -= 1
                if waiting[k] == 0:
                    heapq.heappush(ready, (priority[k], next(seq), k))
        if done != len(graph):
            cycle = sorted((str(k) for k, n in waiting.items() if n), key=str)[:5]
            raise ValueError(f"the Dask graph has a cycle among {cycle}")

    def _launch(self, key: Key, node: GraphNode) -> ObjectRef[Any]:
        if isinstance(node, Alias):
            return self.refs[node.target]
        ref = _persisted_ref(node)
        if ref is not None:
            return ref
        if isinstance(node, DataNode):
            return self.executor.put(node.value)
        dep_keys = tuple(node.dependencies)
        ref = self.executor.options(name=_task_name(key), **self.options).submit(
            _run_node, node, dep_keys, *(self.refs[k] for k in dep_keys))
        self.submitted.add(ref)
        return ref

    def _cancel(self) -> None:
        """Cancel the submitted tasks that have not started (best effort)."""
        for ref in list(self.submitted):
            if not ref.done():
                ref.cancel()

    def refs_in_shape(self) -> Any:
        return _nested(self.keys, self.refs)

    def values_in_shape(self) -> Any:
        unique = list({id(r): r for r in (self.refs[k] for k in self.flat)}.values())
        try:
            values = self.executor.get(unique)
        except BaseException:
            self._cancel()
            raise
        by_id = {id(r): v for r, v in zip(unique, values)}
        return _nested(self.keys, {k: by_id[id(self.refs[k])] for k in self.flat})
