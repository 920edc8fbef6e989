"""Spark on fedexec: a Spark standalone cluster whose master and workers run inside
fedexec actors, and a ``SparkSession`` on it (what RayDP does for Ray).

``init_spark`` builds it in this order; each step may take ``timeout`` seconds::

    driver (this process)                       fedexec cluster
    ─────────────────────                       ───────────────
    placement group, SPREAD:                    reserved on the nodes
      N * {CPU: executor_cores, memory: executor_memory}
    actor SparkDaemon, num_cpus=0  ───────────▶ master: spark://host:port (ALIVE)
    N actors SparkDaemon, one per bundle ─────▶ worker i: --cores C --memory M,
                                                registered with the master
    SparkSession(master=spark://host:port,      (started while the workers start)
      spark.executor.cores=C, spark.executor.memory=M,
      spark.cores.max=N*C)  ─────────────────▶ one executor JVM per worker
    wait until N executors registered

Each worker offers exactly one executor's cores and memory, and the application
asks for N*C cores, so exactly N executors start, one per worker, each inside its
actor's process tree on that actor's node, using the CPUs and memory the actor
reserved from fedexec's scheduler. Every Spark process is killed with its actor
(see ``_spark_daemon``). A failed start stops whatever it had started.

State (``_lock`` guards it): ``_active``, the running ``_SparkOnFedexec`` (or the
one being started), else None; one per process, as Spark allows one SparkContext
per process. A ``_SparkOnFedexec`` holds its executor, actors, placement group,
session, and ``worker_infos`` (what each worker's ``start_worker`` returned).

Exchanging data with fedexec without the driver (``fedexec.data.from_spark`` and
``Dataset.to_spark``): the executors' Python workers run this interpreter on the
fedexec nodes, inside the worker actors' process trees, and their environment names
their node and a node-local exchange directory (see ``_spark_daemon``).
:func:`exchange_info` tells the driver, for the session ``init_spark`` made, which
nodes run executors, at which Spark host, with which directory. A Spark task writes
its partition's Arrow batches to a file there and returns only the path; a fedexec
task placed on that node (``NodeAffinity``) reads the file into the node's object
store. The other way, fedexec tasks on those nodes write blocks there and Spark
reads each file in a task that prefers that host.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import fedexec
from fedexec.exceptions import FedexecError

from ._spark_daemon import EXCHANGE_DIR_ENV, NODE_ID_ENV, SparkDaemon, find_java

__all__ = ["ExchangeInfo", "ExchangeNode", "exchange_info", "init_spark", "stop_spark"]

_lock = threading.Lock()
_active: _SparkOnFedexec | None = None

#: Settings init_spark owns: they come from its arguments.
_RESERVED = {"spark.master": "init_spark's cluster", "spark.executor.cores": "executor_cores",
             "spark.executor.memory": "executor_memory",
             "spark.cores.max": "num_executors * executor_cores"}
_STOP_TIMEOUT = 60.0
_UNITS = {"": 1 << 20, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory(value: int | str) -> int:
    """Bytes of ``value``: an int is bytes; a string is Spark's notation (``"512m"``,
    ``"2g"``, ``"1024"`` = MiB)."""
    if isinstance(value, bool):
        raise TypeError(f"executor_memory must be bytes or a size like '2g', got {value!r}")
    if isinstance(value, int):
        n = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([bkmgt]?)b?\s*", str(value).lower())
        if match is None:
            raise ValueError(f"executor_memory must be bytes or a size like '512m' or '2g', "
                             f"got {value!r}")
        n = int(match.group(1)) * _UNITS[match.group(2)]
    if n < 1 << 20:
        raise ValueError(f"executor_memory must be at least 1 MiB, got {value!r}")
    return n


class _SparkOnFedexec:
    """The actors, placement group and session of one ``init_spark``."""

    def __init__(self, executor: fedexec.Executor):
        self.executor = executor
        self.master: fedexec.ActorHandle[Any] | None = None
        self.workers: list[fedexec.ActorHandle[Any]] = []
        self.pg: fedexec.PlacementGroup | None = None
        self.session: Any = None
        self.worker_infos: list[dict[str, Any]] = []

    def _get(self, refs: Any, timeout: float) -> Any:
        """``executor.get``, given a margin over the actors' own ``timeout``; an
        actor's ``FedexecError`` is raised as a plain ``FedexecError`` carrying its
        message (not the remote traceback)."""
        try:
            return self.executor.get(refs, timeout=timeout + 30)
        except fedexec.TaskError as exc:
            if isinstance(exc.cause, FedexecError):
                raise FedexecError(str(exc.cause)) from None
            raise

    def start(self, app_name: str, num_executors: int, cores: int, memory: int,
              configs: Mapping[str, Any], host: str | None, master_port: int,
              timeout: float) -> Any:
        """Start everything (see the module docstring); each step gets ``timeout``."""
        ex = self.executor
        daemon_conf = {k: str(v) for k, v in configs.items()}
        strategies: list[Any] = ["SPREAD"] * num_executors
        if "placement_groups" in fedexec.backends.capabilities(ex.backend):
            bundle = {"CPU": float(cores), "memory": float(memory)}
            self.pg = ex.placement_group([dict(bundle) for _ in range(num_executors)],
                                         strategy="SPREAD")
            strategies = [fedexec.PlacementGroupStrategy(self.pg, i)
                          for i in range(num_executors)]
        self.master = ex.options(num_cpus=0, max_restarts=0).actor(SparkDaemon)
        master = self.master.start_master.remote(host, master_port, daemon_conf, timeout)
        if self.pg is not None and not self.pg.ready(timeout=timeout):
            raise FedexecError(
                f"fedexec has not had room for {num_executors} Spark executors of {cores} "
                f"CPU and {memory / 2**20:.0f} MiB within {timeout:g} s (free now: "
                f"{ex.available_resources()}); ask for fewer or smaller executors, or free "
                "or add resources")
        self.workers = [ex.options(num_cpus=cores, memory=memory, max_restarts=0,
                                   scheduling_strategy=strategy).actor(SparkDaemon)
                        for strategy in strategies]
        url = self._get(master, timeout)["url"]
        mib = memory >> 20
        workers = [w.start_worker.remote(url, host, cores, mib, daemon_conf, timeout)
                   for w in self.workers]
        # The driver's JVM starts while the workers do; executors follow the workers.
        try:
            self.session = _session(app_name, url, num_executors, cores, mib, configs,
                                    host or fedexec.util.get_node_ip_address())
        except Exception as exc:
            _stop_context()  # created by this call, if at all: none ran before
            self._fail(f"the SparkSession on {url} could not start ({_summary(exc)}); when "
                       "the application has ended, its executors kept failing to start")
        self.worker_infos = self._get(workers, timeout)
        self._wait_for_executors(num_executors, timeout)
        return self.session

    def _wait_for_executors(self, n: int, timeout: float) -> None:
        sc = self.session.sparkContext._jsc.sc()
        deadline = time.monotonic() + timeout
        registered = 0
        while not sc.isStopped():
            registered = len(sc.statusTracker().getExecutorInfos()) - 1  # - the driver
            if registered >= n:
                return
            if time.monotonic() > deadline:
                self._fail(f"{registered} of {n} Spark executors registered within "
                           f"{timeout:g} s")
            time.sleep(0.2)
        self._fail(f"the Spark application ended after {registered} of {n} executors "
                   "registered (the master ends it when its executors keep failing to start)")

    def _fail(self, why: str) -> NoReturn:
        """Raise ``FedexecError(why)`` with the end of the workers' logs."""
        logs = ""
        with contextlib.suppress(Exception):
            texts = self.executor.get([w.diagnostics.remote() for w in self.workers],
                                      timeout=30)
            logs = "\n".join(f"--- Spark worker {i} ---\n{t}" for i, t in enumerate(texts))
        raise FedexecError(
            f"{why}; check the executors' settings in configs (Java options, memory) and "
            f"the Spark workers' logs below; everything init_spark started is stopped\n{logs}")

    def stop(self) -> None:
        """Stop the session, the daemons (workers first) and their actors; never
        raises (the actors' processes may be gone already)."""
        session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.stop()
        daemons = [*self.workers, *([self.master] if self.master is not None else [])]
        self.workers, self.master, self.worker_infos = [], None, []
        ex = self.executor
        if not ex.is_shutdown:
            refs = []
            for actor in daemons:
                with contextlib.suppress(Exception):
                    refs.append(actor.stop.remote())
            with contextlib.suppress(Exception):
                ex.wait(refs, num_returns=len(refs), timeout=_STOP_TIMEOUT)
            for actor in daemons:
                with contextlib.suppress(Exception):
                    ex.kill(actor)
            if self.pg is not None:
                with contextlib.suppress(Exception):
                    ex.remove_placement_group(self.pg)
        self.pg = None


def _session(app_name: str, url: str, n: int, cores: int, mib: int,
             configs: Mapping[str, Any], host: str) -> Any:
    """The SparkSession on the master at ``url`` (see the module docstring)."""
    from pyspark.sql import SparkSession

    settings: dict[str, str] = {
        "spark.driver.host": host, "spark.driver.bindAddress": host,
        "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
        "spark.dynamicAllocation.enabled": "false"}
    settings.update({k: str(v) for k, v in configs.items()})
    settings.update({"spark.executor.cores": str(cores), "spark.executor.memory": f"{mib}m",
                     "spark.cores.max": str(n * cores)})
    builder = SparkSession.builder.master(url).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    # The executors' Python workers run what this interpreter pickles: by default
    # the same interpreter (pyspark's default is whatever python3 is on PATH).
    session.sparkContext.pythonExec = settings.get(
        "spark.pyspark.python", os.environ.get("PYSPARK_PYTHON", sys.executable))
    return session


def _stop_context() -> None:
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    if sc is not None:
        with contextlib.suppress(Exception):
            sc.stop()


def _summary(exc: BaseException) -> str:
    """The first lines of an error (a Py4J error holds a whole Java stack)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300] or type(exc).__name__


def _check_args(num_executors: int, executor_cores: int, configs: Mapping[str, Any]) -> None:
    for name, value in (("num_executors", num_executors), ("executor_cores", executor_cores)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    for key in configs:
        if key in _RESERVED:
            raise ValueError(f"configs may not set {key!r}: init_spark sets it from "
                             f"{_RESERVED[key]}")


def init_spark(app_name: str, num_executors: int, executor_cores: int,
               executor_memory: int | str, *, configs: Mapping[str, Any] | None = None,
               executor: fedexec.Executor | None = None, host: str | None = "127.0.0.1",
               master_port: int = 0, timeout: float = 180.0) -> Any:
    """Start a Spark standalone cluster inside fedexec actors and return a
    ``pyspark.sql.SparkSession`` connected to it.

    Args:
        app_name: the Spark application's name.
        num_executors: how many Spark executors (one Spark worker actor each, spread
            over fedexec's nodes).
        executor_cores: cores of each executor; its actor reserves as many CPUs.
        executor_memory: heap of each executor, bytes or Spark's notation (``"2g"``);
            its actor reserves as much ``memory``.
        configs: more Spark settings, given to the session and to the master and
            workers (so ``spark.authenticate`` and the like reach every daemon).
        executor: the fedexec executor whose cluster runs Spark (default:
            ``fedexec.current_executor()``); it must support actors.
        host: the address every Spark process binds to (default ``127.0.0.1``:
            nothing is reachable from other machines); None: each node's own address
            (``fedexec.util.get_node_ip_address()``), for a multi-machine cluster.
        master_port: the master's port (0: a free one).
        timeout: seconds each step of the start may take (the master, fedexec
            finding room for the executors, the workers, the executors registering).

    Returns:
        The ``SparkSession`` (stop it with :func:`stop_spark`, not ``spark.stop()``).

    Raises:
        FedexecError: Spark already runs on fedexec in this process, or another
            SparkContext does; Java missing on a node; the port is in use; fedexec has
            no room for the executors; or the executors did not register within
            ``timeout``. Whatever had been started is stopped first.
        ValueError: bad sizes, or ``configs`` setting what the arguments set.
    """
    global _active
    configs = dict(configs or {})
    _check_args(num_executors, executor_cores, configs)
    memory = parse_memory(executor_memory)
    if memory < 450 << 20:
        raise ValueError(f"executor_memory must be at least 450 MiB (Spark's minimum), "
                         f"got {executor_memory!r}")
    from pyspark import SparkContext

    with _lock:
        if _active is not None:
            raise FedexecError("Spark already runs on fedexec in this process: call "
                               "stop_spark() before init_spark() again")
        running = SparkContext._active_spark_context
        if running is not None:
            raise FedexecError(
                f"this process already runs a SparkContext (master {running.master!r}) and "
                "Spark allows one per process: stop it (spark.stop()) before init_spark()")
        if SparkContext._gateway is None:
            find_java("this machine (the Spark driver)")
        ex = executor if executor is not None else fedexec.current_executor()
        if "actors" not in fedexec.backends.capabilities(ex.backend):
            raise fedexec.UnsupportedOnBackendError(
                f"init_spark runs Spark in actors, which the {ex.backend!r} backend lacks; "
                "use the 'native' backend")
        state = _active = _SparkOnFedexec(ex)
    try:
        return state.start(app_name, num_executors, executor_cores, memory, configs, host,
                           master_port, timeout)
    except BaseException:
        with _lock:
            _active = None
        state.stop()
        raise


def stop_spark() -> None:
    """Stop the SparkSession, the Spark processes and the actors ``init_spark``
    started; a no-op when none runs."""
    global _active
    with _lock:
        state, _active = _active, None
    if state is not None:
        state.stop()


@dataclass(frozen=True)
class ExchangeNode:
    """A fedexec node that runs a Spark executor of ``init_spark``'s session.

    Attributes:
        node_id: the fedexec node's id (for ``fedexec.NodeAffinity``).
        host: the address the Spark worker and its executor use on that node.
        directory: a directory on that node shared by the executor's Python
            workers and fedexec tasks placed there, removed when Spark stops.
    """

    node_id: str
    host: str
    directory: str


@dataclass(frozen=True)
class ExchangeInfo:
    """Where Spark on fedexec runs (see :func:`exchange_info`).

    Attributes:
        executor: the fedexec executor whose cluster runs Spark.
        nodes: one entry per Spark worker, in the order they were started.
        node_id_env: the environment variable holding, in an executor's Python
            worker, the id of its fedexec node.
        directory_env: the environment variable holding, there, that node's
            exchange directory.
    """

    executor: fedexec.Executor
    nodes: tuple[ExchangeNode, ...]
    node_id_env: str = NODE_ID_ENV
    directory_env: str = EXCHANGE_DIR_ENV


def exchange_info(spark: Any = None) -> ExchangeInfo | None:
    """Where the Spark session ``init_spark`` started runs, for moving data between
    its executors and fedexec by node-local files (see the module docstring).

    Args:
        spark: a ``SparkSession`` (or None: the one ``init_spark`` started).

    Returns:
        The executor and the nodes, or None when Spark does not run on fedexec in
        this process, or ``spark`` belongs to another SparkContext.
    """
    with _lock:
        state = _active
    if state is None or state.session is None or not state.worker_infos:
        return None
    if spark is not None and spark.sparkContext is not state.session.sparkContext:
        return None
    nodes = tuple(ExchangeNode(i["node_id"], i["host"], i["exchange_dir"])
                  for i in state.worker_infos)
    return ExchangeInfo(state.executor, nodes)
