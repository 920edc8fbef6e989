"""fedexec and Spark, both ways.

Spark on fedexec (what RayDP does for Ray): ``init_spark`` starts a Spark
standalone master and workers inside fedexec actors and returns a SparkSession
on them; ``stop_spark`` stops it all (see ``_spark_on_fedexec``)::

    from fedexec.integrations.spark import init_spark, stop_spark

    spark = init_spark("etl", num_executors=2, executor_cores=1, executor_memory="1g")
    spark.range(1000).selectExpr("sum(id)").collect()
    stop_spark()

``fedexec.data.from_spark(df)`` and ``Dataset.to_spark(spark)`` move data between
such a session and fedexec without passing it through the driver, by node-local
files (``exchange_info`` says where).

fedexec on a Spark cluster: the native runtime, actors and object store included,
running inside Spark (what Ray-on-Spark does for Ray).

``start_cluster(spark, num_nodes=N)`` starts a native head on the Spark driver and
one background Spark job of ``N`` long-running tasks; each task starts a native
node manager that joins the head, and stays until the job is cancelled. A node
manager dies with its task's process (it watches it), so Spark's own cancellation
and executor loss clean up::

    from fedexec.integrations.spark import start_cluster

    cluster = start_cluster(spark, num_nodes=4, num_cpus_per_node=2)
    with fedexec.Executor(address=cluster.address, token=cluster.token) as ex:
        ...                                   # tasks, actors, placement groups
    cluster.stop()                            # or stop_cluster()

Every Spark task must be able to run for the cluster's lifetime, so ask for no
more nodes than the Spark application can run at once (``local[2]`` runs two).
The executors' Python (``spark.pyspark.python`` / ``PYSPARK_PYTHON``) must have
fedexec installed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any

from fedexec.exceptions import FedexecError

from ._spark_on_fedexec import ExchangeInfo, ExchangeNode, exchange_info, init_spark, stop_spark

__all__ = ["ExchangeInfo", "ExchangeNode", "SparkCluster", "exchange_info", "init_spark",
           "start_cluster", "stop_cluster", "stop_spark"]

_active: SparkCluster | None = None
_lock = threading.Lock()


def _node_task(head: str, token: str, args: dict[str, Any], backend_options: dict[str, Any]
               ) -> Any:
    """Runs inside a Spark task: start a node manager that joins ``head``, then wait
    (the task's life is the node's life)."""

    def run(partition: Any) -> Any:
        from fedexec.cluster import start_node

        index = next(iter(partition), 0)
        host = "127.0.0.1" if head.startswith("127.") or head.startswith("localhost") \
            else socket.gethostbyname(socket.gethostname())
        log = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                           f"fedexec-spark-node-{os.getpid()}.log")
        node = start_node(head, token=token, host=host, owner_pid=os.getpid(), log_path=log,
                          **args, **backend_options)
        try:
            code = None
            while code is None:
                code = node.wait(0.5)
        finally:
            with contextlib.suppress(Exception):
                node.stop(timeout=5)
        yield (index, node.node_id, code)

    return run


class SparkCluster:
    """A native fedexec cluster running inside a Spark application."""

    def __init__(self, spark: Any, head: Any, token: str, group: str, num_nodes: int):
        self.spark = spark
        self._head = head
        self.token = token
        self.job_group = group
        self.num_nodes = num_nodes
        self.address: str = head.address
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def connect(self, **kwargs: Any) -> Any:
        """A new ``Executor`` connected to this cluster (shut it down when done)."""
        from fedexec import Executor

        return Executor(address=self.address, token=self.token, **kwargs)

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes, as ``Executor.nodes()`` lists them."""
        with self.connect() as ex:
            return ex.nodes()

    def stop(self) -> None:
        """Cancel the Spark job (its tasks' node managers exit) and stop the head."""
        global _active
        with contextlib.suppress(Exception):
            self.spark.sparkContext.cancelJobGroup(self.job_group)
        if self._thread is not None:
            self._thread.join(30)
        self._head.stop(timeout=10)
        with _lock:
            if _active is self:
                _active = None

    def __enter__(self) -> SparkCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_cluster(spark: Any, num_nodes: int | None = None, *, num_cpus_per_node: float = 1,
                  num_gpus_per_node: float = 0,
                  resources_per_node: dict[str, float] | None = None,
                  object_store_memory_per_node: int | None = None, head_num_cpus: float = 0,
                  timeout: float = 120.0, heartbeat_interval: float = 0.5,
                  heartbeat_timeout: float = 5.0) -> SparkCluster:
    """Start a native cluster inside the Spark application of ``spark`` (a
    ``SparkSession``): a head on the driver (with ``head_num_cpus`` CPUs for tasks)
    and ``num_nodes`` node managers in Spark tasks (default: Spark's default
    parallelism). Returns once every node has joined; raises ``FedexecError`` if
    they do not within ``timeout`` seconds (the Spark job is then cancelled)."""
    global _active
    from fedexec.cluster import start_head

    sc = spark.sparkContext
    n = int(num_nodes or sc.defaultParallelism)
    if n < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes!r}")
    with _lock:
        if _active is not None:
            raise FedexecError("a fedexec cluster is already running in this Spark "
                               "application; stop_cluster() first")
    token = os.urandom(32).hex()
    options: dict[str, Any] = {"heartbeat_interval": heartbeat_interval,
                               "heartbeat_timeout": heartbeat_timeout}
    driver_host = sc.getConf().get("spark.driver.host", "127.0.0.1")
    host = "127.0.0.1" if sc.master.startswith("local") else driver_host
    head = start_head(host=host, num_cpus=head_num_cpus, token=token, owner_pid=os.getpid(),
                      **options)
    group = f"fedexec-cluster-{os.urandom(4).hex()}"
    cluster = SparkCluster(spark, head, token, group, n)
    args = {"num_cpus": num_cpus_per_node, "num_gpus": num_gpus_per_node,
            "resources": dict(resources_per_node or {})}
    if object_store_memory_per_node:
        args["object_store_memory"] = object_store_memory_per_node
    job = _node_task(cluster.address, token, args, options)

    def background() -> None:
        try:
            sc.setJobGroup(group, f"fedexec cluster of {n} nodes", interruptOnCancel=True)
            sc.parallelize(range(n), n).mapPartitions(job).collect()
        except BaseException as exc:  # cancelled (stop), or the job failed
            cluster._error = exc

    thread = threading.Thread(target=background, daemon=True, name="fedexec-spark-cluster")
    cluster._thread = thread
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            alive = [x for x in cluster.nodes() if x["alive"]]
            if len(alive) >= n + 1:
                break
            if not thread.is_alive() or time.monotonic() > deadline:
                why = f" ({cluster._error})" if cluster._error else ""
                raise FedexecError(
                    f"{len(alive) - 1} of {n} fedexec nodes joined within {timeout:g} s{why}; "
                    "the Spark application may not run that many tasks at once")
            time.sleep(0.2)
    except BaseException:
        cluster.stop()
        raise
    with _lock:
        _active = cluster
    return cluster


def stop_cluster() -> None:
    """Stop the cluster ``start_cluster`` started (no-op if none)."""
    cluster = _active
    if cluster is not None:
        cluster.stop()
