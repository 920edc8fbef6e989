"""The ``dask`` backend: fedexec tasks, objects and actors on ``distributed``.

``Executor(backend="dask")`` starts a ``distributed.LocalCluster`` it owns (closed
at shutdown); ``address="tcp://host:port"`` joins a running scheduler; the
backend option ``client=`` uses an existing ``distributed.Client`` as it is.

Data flow::

    driver                           Dask scheduler            Dask worker process
    ───────────────────────────      ──────────────            ─────────────────────────────
    submit(fn, ref, x) ── client.submit(run_task, spec, ref's future,      run_task(spec, value)
        │  spec = pickled fn + args   key="fn-<id>", resources={"CPU": 1}) ─▶ │ task context set:
        │  (ref -> DepSlot: Dask                                            │ fedexec.* uses the
        │   passes its value)         ◀─ log_event "start" ───────────────  │ worker's client
        ▼                                                                   ▼
    ObjectRef ◀── Future.add_done_callback ◀── key in memory ◀──────── Blob (pickled result)
       result(): fetched from the worker on first use (a value only passed on to
       other tasks never comes to the driver)
    put(v) ──── client.scatter({"put-<id>": Blob}) ────────────────────▶ worker memory
    actor ───── client.submit(run_actor) ══ one long task per actor ══▶ instance + calls
                                                                         (run_call, pinned)

Mapping of the contract onto Dask:

* a ref is a Dask key; a ``DaskRef`` pickles with its key and, unpickled inside
  the cluster, becomes a ``distributed.Future`` of that process's client, so Dask's
  reference counting keeps the object alive while any ref to it exists; refs
  inside a task's result are kept alive by the worker while the result is;
* a ref passed directly as an argument is a Dask dependency (resolved by Dask,
  worker to worker); a nested one stays a ref;
* ``num_cpus``/``num_gpus``/``resources`` are Dask worker resources (``CPU``,
  ``GPU``, custom); a task waiting in ``fedexec.get`` lends them (and its thread
  slot, by seceding) to the tasks it waits for;
* ``max_retries``: a task whose worker died (``KilledWorker``) is retried by the
  submitting runtime with ``Client.retry`` (same key, so refs stay valid);
  ``retry_exceptions`` re-runs the function in the same task;
* ``cancel``: a task not started is cancelled in Dask (it never runs); a running
  one gets ``KeyboardInterrupt`` in its thread (``force=True``: and its worker
  process is restarted if it has not stopped a second later);
* actors: see ``_actors`` (caller side) and ``_host`` (worker side).

``import distributed`` stays at the top: without it the registry reports
``BackendUnavailableError`` naming ``pip install "fedexec[dask]"``.
"""

from __future__ import annotations

import distributed  # noqa: F401  (a missing dependency must fail this import)

from ._backend import DaskBackend

__all__ = ["DaskBackend"]
