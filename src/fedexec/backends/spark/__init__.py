"""The ``spark`` backend: fedexec tasks on Spark executors.

``Executor(backend="spark")`` uses the process's SparkContext, or starts one
(``local[N]``; ``address="spark://host:7077"`` or ``"local[4]"`` names the
master; ``spark=<SparkSession>`` uses the user's). One context serves every
executor of the process: starting one takes seconds, and fedexec stops the one
it started only at interpreter exit or on :func:`stop_session`.

Tasks run in *leases*: a lease is a one-partition Spark job whose task connects
back to the driver and runs fedexec tasks one after another until it has been
idle for ``linger`` seconds, so one Spark job (~0.1 s to start) carries many
tasks (~1 ms each)::

    driver                                          Spark executor (Python worker)
    ──────                                          ──────────────────────────────
    submit ─▶ scheduler (num_cpus, resources)
               │ dispatched, no idle lease
               ▼
    dispatcher ── sc.setJobGroup(lease) ──▶ Spark job ─▶ lease_partition():
      (broadcasts for large arguments)                    connect, Hello, initializer
    channel thread ◀───────────── Hello/Idle/Done ─────── run task after task
                  ── Assign(task: fn, args, arg values ──▶  fedexec.* inside a task:
                      or broadcast ids) ──────────────────  Submit/Put/get over the
    ObjectRef ◀── Stored (pickled bytes, on the driver)     same connection

Backend options: ``spark=``/``session=`` (a SparkSession or SparkContext to use),
``spark_conf={...}`` (settings of a session fedexec starts), ``linger=1.0``
(seconds an idle lease waits for work before its Spark job ends),
``broadcast_threshold=1 MiB`` (arguments at least this large travel as Spark
broadcasts). ``SparkBackend.stats()`` counts Spark jobs and tasks.

How the contract maps onto Spark:

* values live on the driver, pickled; a ref passed directly as an argument is
  sent with the task, large values (``broadcast_threshold``, 1 MiB) as Spark
  broadcast variables made once per value; nested refs stay refs and are read
  from the driver when a task gets them;
* ``num_cpus``/``num_gpus``/``resources`` bound how many tasks run at once (fedexec
  counts them; Spark's own task slots are only the ceiling); a task waiting in
  ``get`` lends its resources to the tasks it waits for;
* ``cancel``: a queued task never runs; a running one gets ``KeyboardInterrupt``
  (SIGINT in its Python worker, so waits are interrupted too); ``force=True``
  cancels the lease's Spark job group (``interruptOnCancel``) and its worker exits;
* ``max_retries``: a task whose Python worker died runs again in another lease;
  ``retry_exceptions`` re-runs it in the same lease;
* ``initializer`` runs once per Python worker process and executor before its
  first task; ``runtime_env`` is applied in the worker for the task's duration
  (paths must exist on the executors).

Not available: actors (plain Spark runs short tasks; run the native runtime on a
Spark cluster with ``fedexec.integrations.spark.start_cluster(spark)`` for them),
placement groups, pinning a task to one node of a cluster, GPU assignment
(``num_gpus`` is only counted), zero-copy reads, spilling and lineage
reconstruction (values live on the driver).

On a cluster, the executors need fedexec installed for the Python they run
(``PYSPARK_PYTHON``) and must reach the driver (``spark.driver.host``).

``import pyspark`` stays at the top: without it the registry reports
``BackendUnavailableError`` naming ``pip install "fedexec[spark]"``.
"""

from __future__ import annotations

import pyspark  # noqa: F401  (a missing dependency must fail this import)

from ._backend import SparkBackend
from ._session import stop_session

__all__ = ["SparkBackend", "stop_session"]
