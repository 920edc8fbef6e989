"""The ``dask`` backend: fedexec tasks, objects and actors on ``distributed``.

``Executor(backend="dask")`` starts a ``distributed.LocalCluster`` it owns (closed
at shutdown; its layout is described in ``_cluster``); ``address="tcp://host:port"``
joins a running scheduler; the backend option ``client=`` uses an existing
``distributed.Client`` as it is (not closed at shutdown).

Data flow::

    caller (driver or task)          Dask scheduler            Dask worker process
    ───────────────────────          ──────────────            ──────────────────────────
    submit(fn, ref, x) ─ outbox: run_task(spec, <ref's future>),    run_task(spec, value)
       spec: fn and args pickled     key="fn-<id>", resources=...;    │ task context set:
       by fedexec; the ref is a      a burst of submits leaves as one  │ fedexec.* inside use
       DepSlot, Dask passes its      client.map (``_outbox``) ──────▶ │ this worker's client
       value (worker to worker)      ◀── log_event "start" ─────────── ▼
    ObjectRef ◀─ outbox callback ◀──────── key in memory ◀──── Blob (the pickled result)
       result(): the Blob is fetched on first use (a value only passed on to other
       tasks never reaches the caller) and unpickled on every call (large arrays
       come out as read-only views of the Blob's buffers: Dask moves those as frames)
    put(v) ───── client.scatter({"put-<id>": Blob}) ─────────────────▶ worker memory
    actor ────── outbox: run_actor ═══════════ one long task per actor ═▶ instance
    actor call ─ direct channel to the actor's worker (not via the scheduler) ─▶ the
                 actor's threads; the result comes back on it (``_actors``, ``_channel``,
                 ``_host``)

How the contract maps onto Dask:

* a ref is a Dask key; a ``DaskRef`` pickles with its key and, unpickled inside the
  cluster, becomes a ``distributed.Future`` of that process's client: Dask's
  reference counting keeps the object alive while a ref to it exists anywhere;
  refs inside a task's result are kept alive by the worker while the result is;
* a ref passed directly as an argument is a Dask dependency; a nested one stays a
  ref (``fedexec.get`` on it inside the task fetches through the worker's client);
* ``num_cpus``/``num_gpus``/``memory``/``resources`` are Dask worker resources
  (``CPU``, ``GPU``, ``memory``, custom) when the workers declare them (an
  executor-started cluster does); a task waiting in ``fedexec.get`` lends its
  resources and, by seceding, its thread slot to the tasks it waits for;
* ``max_retries``: a task whose worker died (``KilledWorker``) is run again by the
  runtime that submitted it with ``Client.retry`` (same key: refs stay valid);
  ``retry_exceptions`` runs the function again inside the same Dask task (Dask's
  own ``retries`` cannot tell the two apart, so it is not used);
* ``cancel``: a queued task is cancelled so that it never runs (``_cancel``); a
  running one gets ``KeyboardInterrupt`` in its thread; ``force=True`` also
  restarts its worker process if it has not stopped a second later;
* a finished result lost with its worker is recomputed by Dask from its lineage
  while a ref to it exists; a lost ``put`` value is stored again by the process
  that put it; objects beyond a worker's memory limit are spilled to disk by Dask;
* ``shutdown(wait=True)`` waits while Dask runs the tasks in flight, never for a
  completion Dask says is due but that did not arrive (``_drain``), and for
  actor calls at most ``_actors.DRAIN_LIMIT_S`` (then they fail); then the
  values of finished refs still referenced are fetched, so ``result()`` keeps
  working, as with the stdlib pools.

Not available: placement groups, ``runtime_env`` (tasks share worker processes),
shared-memory reads across processes (a worker reading an object another worker
holds gets a copy over TCP; tasks in one worker process share its buffers), GPU
device assignment (``GPU`` is only a counted resource).

``import distributed`` stays at the top: without it the registry reports
``BackendUnavailableError`` naming ``pip install "fedexec[dask]"``.
"""

from __future__ import annotations

import distributed  # noqa: F401  (a missing dependency must fail this import)

from ._backend import DaskBackend

__all__ = ["DaskBackend"]
