"""The one SparkSession of this process: found, given, or started once and shared.

Spark allows one ``SparkContext`` per process, and starting one (a JVM) takes
seconds, so every spark executor of the process uses the same one:

* ``spark=`` (or ``session=``) backend option: the user's ``SparkSession`` or
  ``SparkContext``, used as it is and never stopped by fedexec;
* otherwise the context already running in this process, if any (``address``,
  when given, must name its master);
* otherwise fedexec starts one (``address`` as the master, default
  ``local[N]``, see :func:`default_master`), shares it with later executors, and
  stops it at interpreter exit or on :func:`stop_session`.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from pyspark import SparkContext

__all__ = [
    "acquire", "default_master", "detected_cpus", "executor_cores", "is_local", "stop_session",
]

_lock = threading.Lock()
_started: Any = None  # the SparkSession fedexec started, if any
_started_slots = 0  # its task slots, when fedexec chose them (default_master)
_atexit_registered = False

#: Task slots of a session fedexec starts are not what bounds concurrency (each
#: executor's ``num_cpus`` does), but a task blocked in ``get`` keeps its slot
#: while its children run: so many slots, of which idle ones cost nothing.
MIN_LOCAL_SLOTS = 64

#: How long starting a session on a cluster waits for its first executors.
EXECUTOR_WAIT_S = 10.0

#: Spark settings of a session fedexec starts (``spark_conf=`` adds or overrides).
DEFAULT_CONF: Mapping[str, str] = {
    "spark.app.name": "fedexec",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.log.level": "ERROR",
    "spark.python.worker.reuse": "true",
}


def default_master(num_cpus: float | None) -> str:
    """``local[N]``: N task slots, at least :data:`MIN_LOCAL_SLOTS`."""
    cpus = os.cpu_count() or 1
    slots = max(MIN_LOCAL_SLOTS, 4 * cpus, 2 * math.ceil(num_cpus or 0))
    return f"local[{slots}]"


def is_local(sc: SparkContext) -> bool:
    """Whether ``sc`` runs its tasks inside its own JVM (``local``/``local[N]``;
    not ``local-cluster[...]``, whose executors are separate processes)."""
    master = str(sc.master)
    return master == "local" or master.startswith("local[")


def acquire(address: str | None, num_cpus: float | None, given: Any,
            conf: Mapping[str, Any]) -> SparkContext:
    """The SparkContext an executor uses (see the module docstring).

    Raises:
        ValueError: ``address`` names another master than the running context's,
            or both ``address`` and a session are given.
        TypeError: ``given`` is not a SparkSession or SparkContext.
    """
    if given is not None:
        if address is not None:
            raise ValueError("pass either address= or spark= to the 'spark' backend, not both")
        return _use_this_python(_context_of(given))
    if address == "auto":
        raise ValueError(
            "address='auto' joins a cluster started by 'fedexec start' (the native backend); "
            "for the 'spark' backend give a Spark master ('spark://host:7077', 'local[4]') "
            "or pass spark=<SparkSession>")
    if address is not None and not isinstance(address, str):
        raise TypeError(f"address must be a Spark master URL, got {address!r}")
    with _lock:
        sc = SparkContext._active_spark_context
        if sc is not None:
            if address is not None and address != sc.master:
                raise ValueError(
                    f"this process already runs a SparkContext with master {sc.master!r} and "
                    f"Spark allows one per process; use address=None (or {sc.master!r}), or "
                    "stop it first (fedexec.backends.spark.stop_session() if fedexec started it)")
            return _use_this_python(sc)
        if address is not None:
            return _use_this_python(_start(address, conf))
        return _use_this_python(_start(default_master(num_cpus), conf, own_slots=True))


def executor_cores(sc: SparkContext) -> dict[str, int]:
    """``{host: cores}`` of the executors registered now (not the driver's entry);
    empty for a local master or when Spark's status store cannot be read."""
    if is_local(sc):
        return {}
    try:
        executors = sc._jsc.sc().statusStore().executorList(True)
        out: dict[str, int] = {}
        for i in range(executors.size()):
            e = executors.apply(i)
            if str(e.id()) == "driver":
                continue
            host = str(e.hostPort())
            if host.count(":") == 1:  # host:port (an IPv6 address has more colons)
                host = host.rsplit(":", 1)[0]
            out[host] = out.get(host, 0) + int(e.totalCores())
        return out
    except Exception:  # a Spark without this internal API: report no executors
        return {}


def detected_cpus(sc: SparkContext) -> int:
    """The CPUs an executor offers by default: this machine's for the session
    fedexec started with its own slot count, else Spark's default parallelism
    (the task slots of ``local[N]``, the executors' cores of a cluster)."""
    if _started is not None and _started.sparkContext is sc and _started_slots:
        return os.cpu_count() or 1
    return max(1, int(sc.defaultParallelism))


def _use_this_python(sc: SparkContext) -> SparkContext:
    """Run a local context's Python workers with this interpreter, unless the user
    chose one (``PYSPARK_PYTHON``): Spark's default is whatever ``python3`` is on
    PATH, but tasks pickled here need this interpreter's version and packages."""
    if is_local(sc) and "PYSPARK_PYTHON" not in os.environ and sc.pythonExec == "python3":
        sc.pythonExec = sys.executable
    return sc


def _context_of(given: Any) -> SparkContext:
    from pyspark.sql import SparkSession

    if isinstance(given, SparkSession):
        try:
            given = given.sparkContext
        except Exception as exc:
            raise TypeError(f"cannot use this SparkSession ({exc}); pass a classic one") from exc
    if not isinstance(given, SparkContext):
        raise TypeError(
            f"spark= takes a classic SparkSession or a SparkContext, got {given!r} (the "
            "'spark' backend runs tasks with Spark's RDD API, which Spark Connect lacks)")
    if given._jsc is None:
        raise ValueError("the SparkSession passed with spark= has been stopped")
    return given


def _start(master: str, conf: Mapping[str, Any], own_slots: bool = False) -> SparkContext:
    global _started, _started_slots, _atexit_registered
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master)
    settings = dict(DEFAULT_CONF)
    if master.startswith("local"):  # local and local-cluster: all on this machine
        settings.setdefault("spark.driver.bindAddress", "127.0.0.1")
        settings.setdefault("spark.driver.host", "127.0.0.1")
    settings.update({k: str(v) for k, v in conf.items()})
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    sc = session.sparkContext
    if not is_local(sc):  # executors register a moment after the context starts
        deadline = time.monotonic() + EXECUTOR_WAIT_S
        while not executor_cores(sc) and time.monotonic() < deadline:
            time.sleep(0.2)
    _started = session
    _started_slots = int(sc.defaultParallelism) if own_slots else 0
    if not _atexit_registered:
        atexit.register(stop_session)
        _atexit_registered = True
    return sc


def stop_session() -> bool:
    """Stop the SparkSession fedexec started in this process, if any; True if one was.

    Executors still using it stop working. A session passed with ``spark=`` or
    started by the user is never stopped by fedexec.
    """
    global _started, _started_slots
    with _lock:
        session, _started, _started_slots = _started, None, 0
    if session is None:
        return False
    session.stop()
    return True
