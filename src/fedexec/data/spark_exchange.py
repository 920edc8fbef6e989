"""Spark DataFrames to datasets and back.

On a session ``fedexec.integrations.spark.init_spark`` started, the Spark
executors run inside fedexec actors, on fedexec nodes, and the data moves by
node-local Arrow IPC files (``exchange_info`` tells where), never through the
driver::

    from_spark(df)
      Spark job: df.mapInArrow(_WritePartition)   each task writes its partition's
        │ batches to <exchange dir>/<id>/part-N-M.arrow on its node (a new file
        │ every DataContext.target_max_block_size bytes) and returns one row per
        │ file (part, seq, path, node, rows): only these rows reach the driver
        ▼
      one fedexec task per file, NodeAffinity(node): reads the file, deletes it,
      returns [metadata, block]: the block goes into that node's object store

    ds.to_spark(spark)
      one fedexec task per block, placed round-robin on the nodes that run Spark
        │ executors (NodeAffinity): writes the block to <exchange dir>/<id>/
        │ block-N.arrow and returns (path, rows, schema)
        ▼
      an RDD of the paths, one partition per file, each preferring the Spark host
      of the file's node (Spark's locality) ─▶ a DataFrame of paths ─▶
      mapInArrow(_ReadArrow): each Spark task reads its file and yields the
      batches, cast to the Arrow types Spark expects

A ``to_spark`` frame reads its files each time an action computes it, so they
stay until Spark stops (``stop_spark`` removes the exchange directories); the
files ``from_spark`` wrote are deleted once read.

With any other SparkSession (e.g. ``local[*]``) the executors are not fedexec
processes, so the data goes through this process, with a ``RuntimeWarning``:
``from_spark`` takes the partitions one at a time (``toLocalIterator``) as
serialized Arrow batches and puts each as a block; ``to_spark`` fetches each
block, serializes it and ``parallelize``s them (Spark keeps them in the driver's
JVM for the life of the frame).

Types: Spark has no nanosecond timestamps (timestamps become microseconds; a
value that would lose digits raises) and no unsigned or tensor types. Timestamps
without a time zone become ``timestamp_ntz`` and come back as they were.
Order is kept both ways: ``from_spark`` makes one block per partition (several
for a partition above ``target_max_block_size``), ``to_spark`` one partition per
block.
"""

from __future__ import annotations

import os
import pickle
import uuid
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

import fedexec

from .block import BlockAccessor, BlockMetadata
from .bundle import RefBundle
from .context import DataContext
from .dataset import Dataset, MaterializedDataset
from .exchange import BlockCall, blocks_from_calls
from .iterator import iter_blocks
from .plan import InputData

__all__ = ["dataset_to_spark", "from_spark"]

_PARTS = pa.schema([("part", pa.int32()), ("seq", pa.int32()), ("path", pa.string()),
                    ("node", pa.string()), ("rows", pa.int64())])
_PARTS_DDL = "part int, seq int, path string, node string, rows long"
_CHUNKS = pa.schema([("part", pa.int32()), ("seq", pa.int32()), ("data", pa.binary())])
_CHUNKS_DDL = "part int, seq int, data binary"


# --------------------------------------------------------------------------- Spark side
class _WritePartition:
    """In a Spark executor's Python worker (``mapInArrow``): write this partition's
    batches to files in the node's exchange directory, a new file once one holds
    ``max_bytes``; yield one ``_PARTS`` row per file (a partition without rows
    yields one with an empty path)."""

    def __init__(self, exchange_id: str, directory_env: str, node_env: str, max_bytes: int):
        self.exchange_id = exchange_id
        self.directory_env, self.node_env = directory_env, node_env
        self.max_bytes = max_bytes

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        directory, node = os.environ.get(self.directory_env), os.environ.get(self.node_env)
        if not directory or not node:
            raise RuntimeError(f"this Spark executor has no {self.directory_env} and "
                               f"{self.node_env}: it was not started by init_spark")
        ctx = _task_context(TaskContext)
        part = ctx.partitionId()
        folder = os.path.join(directory, self.exchange_id)
        files: list[dict[str, Any]] = []
        writer, size = None, 0
        try:
            for batch in batches:
                if writer is None or size >= self.max_bytes:
                    if writer is not None:
                        writer.close()
                    os.makedirs(folder, exist_ok=True)
                    path = os.path.join(folder, f"part-{part:06d}-{len(files):04d}-"
                                                f"{ctx.attemptNumber()}.arrow")
                    writer, size = pa.ipc.new_file(path, batch.schema), 0
                    files.append({"part": part, "seq": len(files), "path": path,
                                  "node": node, "rows": 0})
                writer.write_batch(batch)
                files[-1]["rows"] += batch.num_rows
                size += batch.nbytes
        finally:
            if writer is not None:
                writer.close()
        yield pa.RecordBatch.from_pylist(
            files or [{"part": part, "seq": 0, "path": "", "node": node, "rows": 0}],
            schema=_PARTS)


class _SerializePartition:
    """In a Spark executor's Python worker: each batch as Arrow IPC bytes, one
    ``_CHUNKS`` row per batch (the fallback through the driver)."""

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        part = _task_context(TaskContext).partitionId()
        for seq, batch in enumerate(batches):
            yield pa.RecordBatch.from_pylist(
                [{"part": part, "seq": seq, "data": _ipc_bytes(pa.Table.from_batches([batch]))}],
                schema=_CHUNKS)


class _ReadArrow:
    """In a Spark executor's Python worker: for each row, the Arrow data of its
    ``path`` (a file on this machine) or ``data`` (IPC bytes), cast to ``schema``
    (the types Spark expects for the frame's schema)."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for value in batch.column(0).to_pylist():
                if isinstance(value, str):
                    if not os.path.exists(value):
                        raise FileNotFoundError(
                            f"{value} is not on this machine: Spark ran this task away "
                            "from the node that wrote it (raise spark.locality.wait)")
                    table = pa.ipc.open_file(pa.OSFile(value)).read_all()
                else:
                    table = pa.ipc.open_stream(pa.py_buffer(value)).read_all()
                if table.column_names != self.schema.names:
                    table = table.select(self.schema.names)
                yield from table.cast(self.schema).to_batches()


def _task_context(task_context_class: Any) -> Any:
    ctx = task_context_class.get()
    if ctx is None:
        raise RuntimeError("this function runs in a Spark task (mapInArrow), not here")
    return ctx


def _as_row(value: Any) -> tuple[Any]:
    return (value,)


# --------------------------------------------------------------------------- fedexec side
def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _read_file(path: str) -> tuple[BlockMetadata, pa.Table]:
    """Task body (on the file's node): the file as a block; the file is deleted
    (and its directory, once empty)."""
    table = pa.ipc.open_file(pa.OSFile(path)).read_all()
    os.remove(path)
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass  # other files of the exchange are still there
    return BlockAccessor.for_block(table).get_metadata(), table


def _write_file(block: Any, path: str) -> tuple[str, int, pa.Schema]:
    """Task body (on a node that runs a Spark executor): write the block as an
    Arrow IPC file; ``(path, rows, schema)``, the path empty for no rows."""
    table = BlockAccessor.for_block(block).to_arrow()
    if table.num_rows == 0:
        return "", 0, table.schema
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with pa.ipc.new_file(path, table.schema) as writer:
        writer.write_table(table)
    return path, table.num_rows, table.schema


def _exchange(spark: Any, what: str, stacklevel: int) -> Any:
    """``exchange_info`` of ``spark`` (None: not init_spark's session, with the
    warning that the data goes through the driver, attributed to the code
    ``stacklevel`` frames above the caller), checked against the executor
    datasets run on."""
    from fedexec.integrations.spark import exchange_info

    info = exchange_info(spark)
    if info is None:
        warnings.warn(
            f"{what}: this SparkSession was not started by "
            "fedexec.integrations.spark.init_spark, so its executors cannot hand data to "
            "fedexec nodes: the data goes through this process, in chunks",
            RuntimeWarning, stacklevel=stacklevel + 1)
        return None
    executor = DataContext.get_current().resolve_executor()
    if info.executor is not executor:
        raise ValueError(f"{what}: Spark runs on {info.executor!r} but datasets on "
                         f"{executor!r}: use one executor for both (init_spark(..., "
                         "executor=ex) and DataContext.get_current().executor = ex)")
    return info


def _window(executor: fedexec.Executor) -> int:
    """How many 0-CPU file tasks run at once: the cluster's CPUs (Spark's executors
    may hold them all, so these tasks ask for none)."""
    return max(2, int(executor.cluster_resources().get("CPU", 2)))


def _arrow_schema_of(spark_df: Any) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(spark_df.schema)


def from_spark(df: Any) -> MaterializedDataset:
    """A dataset of a Spark DataFrame, one block per partition (several for a
    partition above ``DataContext.target_max_block_size``), in order.

    On a session ``init_spark`` started, the partitions go from the executors to
    fedexec's object store on the same nodes, never through this process (see the
    module docstring); with another session, through this process, one Arrow batch
    at a time, with a ``RuntimeWarning``.

    Raises:
        TypeError: ``df`` is not a Spark DataFrame.
        ValueError: Spark runs on another executor than datasets.
    """
    from pyspark.sql import DataFrame

    if not isinstance(df, DataFrame):
        raise TypeError(f"from_spark() takes a Spark DataFrame, got {type(df).__name__}")
    info = _exchange(df.sparkSession, "from_spark()", stacklevel=2)
    executor = DataContext.get_current().resolve_executor()
    if info is None:
        return _from_spark_through_driver(df, executor)
    exchange_id = f"from-spark-{uuid.uuid4().hex}"
    writer = _WritePartition(exchange_id, info.directory_env, info.node_id_env,
                             DataContext.get_current().target_max_block_size)
    parts = sorted(df.mapInArrow(writer, _PARTS_DDL).collect(),
                   key=lambda r: (r["part"], r["seq"]))
    calls: list[BlockCall] = [
        (_read_file, (r["path"],), {"name": "FromSpark", "num_cpus": 0,
                                    "scheduling_strategy": fedexec.NodeAffinity(r["node"])})
        for r in parts if r["path"]]
    if not calls:
        return _empty(df, executor)
    return blocks_from_calls(executor, calls, window=_window(executor))


def _put_blocks(tables: Iterable[pa.Table], executor: fedexec.Executor
                ) -> MaterializedDataset:
    """A dataset of ``tables`` put from this process, each as soon as it comes."""
    bundles = tuple(RefBundle(((executor.put(t), BlockAccessor.for_block(t).get_metadata()),))
                    for t in tables)
    return MaterializedDataset(InputData(bundles=bundles))


def _empty(df: Any, executor: fedexec.Executor) -> MaterializedDataset:
    """One empty block with the frame's columns (nothing to move)."""
    return _put_blocks([_arrow_schema_of(df).empty_table()], executor)


def _from_spark_through_driver(df: Any, executor: fedexec.Executor) -> MaterializedDataset:
    rows = df.mapInArrow(_SerializePartition(), _CHUNKS_DDL).toLocalIterator()
    ds = _put_blocks((pa.ipc.open_stream(pa.py_buffer(row["data"])).read_all()
                      for row in rows), executor)
    return ds if ds.num_blocks() else _empty(df, executor)


# --------------------------------------------------------------------------- to Spark
def _spark_schemas(schemas: list[pa.Schema], spark: Any) -> tuple[Any, pa.Schema]:
    """The Spark schema of blocks with ``schemas``, and the Arrow schema Spark's
    ``mapInArrow`` wants its batches in."""
    from pyspark.sql.pandas.types import from_arrow_type, to_arrow_schema
    from pyspark.sql.types import StructField, StructType

    try:
        unified = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"to_spark(): the blocks' schemas do not agree: {e}") from None
    fields = []
    for f in unified:
        try:
            fields.append(StructField(f.name, from_arrow_type(f.type, prefer_timestamp_ntz=True),
                                      nullable=True))
        except TypeError as e:
            raise ValueError(f"to_spark(): column {f.name!r} has the Arrow type {f.type}, "
                             f"which Spark lacks ({e}); convert it first (map_batches)") \
                from None
    struct = StructType(fields)
    timezone = spark.conf.get("spark.sql.session.timeZone")
    try:
        target = to_arrow_schema(struct, timezone=timezone)
    except TypeError:  # pyspark 3.5: no keywords
        target = to_arrow_schema(struct)
    return struct, target


def _located_rdd(sc: Any, items: list[tuple[Any, list[str]]]) -> Any:
    """An RDD with one partition per item, each preferring its hosts (Spark's
    ``makeRDD`` with locations, which pyspark does not wrap)."""
    from pyspark import RDD
    from pyspark.serializers import CPickleSerializer

    jvm = sc._jvm
    to_seq = jvm.org.apache.spark.api.python.PythonUtils.toSeq
    pairs = jvm.java.util.ArrayList()
    for value, hosts in items:
        names = jvm.java.util.ArrayList()
        for host in hosts:
            names.add(host)
        pairs.add(jvm.scala.Tuple2(bytearray(pickle.dumps(value)), to_seq(names)))
    tag = getattr(getattr(jvm.scala.reflect, "ClassTag$"), "MODULE$").apply(
        jvm.java.lang.Class.forName("[B"))
    rdd = sc._jsc.sc().makeRDD(to_seq(pairs), tag)
    return RDD(jvm.org.apache.spark.api.java.JavaRDD.fromRDD(rdd, tag), sc, CPickleSerializer())


def dataset_to_spark(ds: Dataset, spark: Any) -> Any:
    """``ds`` as a Spark DataFrame of ``spark`` (see the module docstring)."""
    from pyspark.sql import SparkSession

    if not isinstance(spark, SparkSession):
        raise TypeError(f"to_spark() takes a SparkSession, got {type(spark).__name__}")
    info = _exchange(spark, "to_spark()", stacklevel=3)
    run = ds._run()
    executor = run.executor
    if info is None:
        items: list[tuple[Any, list[str]]] = []
        schemas = []
        for block in iter_blocks(run.bundles, executor):
            table = BlockAccessor.for_block(block).to_arrow()
            schemas.append(table.schema)
            if table.num_rows:
                items.append((_ipc_bytes(table), []))
        column = "data binary"
        rdd = spark.sparkContext.parallelize([v for v, _ in items], max(1, len(items)))
    else:
        nodes = list({n.node_id: n for n in info.nodes}.values())
        folder = f"to-spark-{uuid.uuid4().hex}"
        written: list[tuple[fedexec.ObjectRef[Any], str]] = []
        pending: list[fedexec.ObjectRef[Any]] = []
        window = _window(executor)
        refs = (ref for bundle in run.bundles for ref in bundle.block_refs)
        for i, ref in enumerate(refs):
            node = nodes[i % len(nodes)]
            if len(pending) >= window:
                _, pending = executor.wait(pending, num_returns=len(pending) - window + 1)
            out = executor.options(
                name="ToSpark", num_cpus=0,
                scheduling_strategy=fedexec.NodeAffinity(node.node_id)).submit(
                _write_file, ref, os.path.join(node.directory, folder, f"block-{i:06d}.arrow"))
            written.append((out, node.host))
            pending.append(out)
        results = executor.get([out for out, _ in written])
        schemas = [schema for _, _, schema in results]
        items = [(path, [host]) for (path, _, _), (_, host) in zip(results, written) if path]
        column = "path string"
        rdd = _located_rdd(spark.sparkContext, items)
    if not schemas:
        from pyspark.sql.types import StructType

        return spark.createDataFrame([], StructType([]))
    struct, target = _spark_schemas(schemas, spark)
    if not items:
        return spark.createDataFrame([], struct)
    return spark.createDataFrame(rdd.map(_as_row), column).mapInArrow(_ReadArrow(target),
                                                                       struct)
