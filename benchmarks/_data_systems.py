"""One adapter per system for ``data.py``: the same five workloads on fedexec.data,
Ray Data, Dask DataFrame and one pandas/pyarrow process.

fedexec.data and Ray Data share one adapter (:class:`DatasetAPI`): the contract
gives fedexec.data Ray Data's names, so both run the very same calls. Every adapter
imports its library inside ``start`` (or a method), so this module imports with the
standard library only. An adapter lives in one child process, between ``start`` and
``shutdown``.

Workloads (the functions they apply are in ``_data_work``):

    etl(files, out, row_filter)  read -> transform -> filter -> groupby(key).mean(x)
                                 -> write Parquet under ``out``
    load(files)                  read and keep in the system (a materialised dataset,
                                 a persisted frame, a table): the untimed input of
                                 ``infer`` and ``shuffle_sort``
    infer(data)                  the torch MLP over every row -> (rows, sum of outputs)
    shuffle_sort(data)           random shuffle, sort by key -> each output block's
                                 summary (``_data_work.block_summary``)
    stream(files)                read -> transform, consumed batch by batch ->
                                 (rows, sum of x)
    take_range(n) / take_read(files)   take(10) of a lazy plan -> the rows (or None
                                 where the system has no such plan)
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import tempfile
from typing import Any

import _data_work as work

NUM_CPUS = 2
ITER_BATCH = 65_536  # rows per batch when the driver consumes a stream

#: Every system, in table order.
SYSTEMS = ("fedexec-native", "ray", "dask", "pandas")


class DataSystem:
    """What ``data.py``'s cases call; see the module docstring."""

    name = ""
    #: has an object store (sized by ``start``'s ``store_bytes``; P4 shrinks it)
    object_store = False
    #: writes objects to disk when memory runs short (P4 reports the bytes)
    spills = False
    #: notes that qualify this system's numbers (printed once, above the tables)
    notes: tuple[str, ...] = ()

    def start(self, store_bytes: int) -> None:
        """Start the runtime; ``store_bytes``: its object store's (or workers') budget."""

    def shutdown(self) -> None:
        pass

    def etl(self, files: list[str], out: str, row_filter: bool) -> None:
        raise NotImplementedError

    def load(self, files: list[str]) -> Any:
        raise NotImplementedError

    def infer(self, data: Any) -> tuple[int, float]:
        raise NotImplementedError

    def shuffle_sort(self, data: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def stream(self, files: list[str]) -> tuple[int, float]:
        raise NotImplementedError

    def take_range(self, n: int) -> list[dict[str, Any]] | None:
        raise NotImplementedError

    def take_read(self, files: list[str]) -> list[dict[str, Any]] | None:
        raise NotImplementedError

    def spill_info(self) -> dict[str, float]:
        """The system's own spill counters (cumulative since start), as far as it
        reports them: ``bytes`` and ``objects``."""
        return {}

    def store_dirs(self) -> list[str]:
        """Directories whose files are this system's object store (for MemoryWatch)."""
        return []

    def spill_dirs(self) -> list[str]:
        """Directories this system spills objects to (for MemoryWatch)."""
        return []


# =========================================================================== Ray Data API
class DatasetAPI(DataSystem):
    """fedexec.data and Ray Data: the same calls on ``self.rd`` (the module)."""

    rd: Any
    object_store = spills = True

    def range_dataset(self, n: int) -> Any:
        raise NotImplementedError

    def _transformed(self, files: list[str]) -> Any:
        return self.rd.read_parquet(files).map_batches(
            work.transform, batch_format="pandas", batch_size=None)

    def etl(self, files: list[str], out: str, row_filter: bool) -> None:
        ds = self._transformed(files)
        if row_filter:
            ds = ds.filter(work.keep_row)
        else:
            ds = ds.map_batches(work.keep, batch_format="pandas", batch_size=None)
        ds.groupby("key").mean("x").write_parquet(out)

    def load(self, files: list[str]) -> Any:
        return self.rd.read_parquet(files).materialize()

    def infer(self, data: Any) -> tuple[int, float]:
        ds = data.map_batches(work.Predictor, concurrency=NUM_CPUS,
                              batch_size=work.MODEL_BATCH, batch_format="numpy")
        rows, total = 0, 0.0
        for batch in ds.iter_batches(batch_size=ITER_BATCH, batch_format="numpy"):
            pred = batch["pred"]
            rows += len(pred)
            total += float(pred.astype("float64").sum())
        return rows, total

    def shuffle_sort(self, data: Any) -> list[dict[str, Any]]:
        ds = data.random_shuffle(seed=0).sort("key").map_batches(
            work.block_summary, batch_format="pandas", batch_size=None)
        return [dict(r) for r in ds.take_all()]

    def stream(self, files: list[str]) -> tuple[int, float]:
        rows, total = 0, 0.0
        for batch in self._transformed(files).iter_batches(batch_size=ITER_BATCH, batch_format="numpy"):
            rows += len(batch["x"])
            total += float(batch["x"].sum())
        return rows, total

    def take_range(self, n: int) -> list[dict[str, Any]]:
        ds = self.range_dataset(n).map_batches(work.add_square, batch_format="numpy",
                                               batch_size=None)
        return [dict(r) for r in ds.take(10)]

    def take_read(self, files: list[str]) -> list[dict[str, Any]]:
        return [dict(r) for r in self._transformed(files).take(10)]


class FedexecData(DatasetAPI):
    name = "fedexec-native"
    notes = ("fedexec-native: fedexec.init(backend='native', num_cpus=2, "
             "object_store_memory=STORE); fedexec.data on the default executor",)

    def start(self, store_bytes: int) -> None:
        import fedexec
        import fedexec.data as fd

        self.fedexec = fedexec
        self.ex = fedexec.init(backend="native", num_cpus=NUM_CPUS,
                               object_store_memory=store_bytes)
        self.rd = fd

    def shutdown(self) -> None:
        self.fedexec.shutdown()

    def range_dataset(self, n: int) -> Any:
        return self.rd.range_table(n)

    def spill_info(self) -> dict[str, float]:
        # The node's counters (a private call: a measuring instrument, not API).
        # spilled_bytes there is what is on disk now, not a running total; the
        # running total comes from MemoryWatch's view of the spill directory.
        try:
            store = self.ex._backend.stats()["store"]
        except Exception:
            return {}
        return {"objects": float(store.get("spill_count", 0))}

    def _sessions(self) -> list[str]:
        """The session names (``fedexec-<hex>``) of the native stores this system's
        processes own (their ``.owners`` file names one of them)."""
        from _memwatch import system_pids

        pids = system_pids()
        names = []
        for owners in glob.glob("/dev/shm/fedexec-*/.owners"):
            try:
                with open(owners) as f:
                    if pids & {int(p) for p in f.read().split()}:
                        names.append(os.path.basename(os.path.dirname(owners)))
            except (OSError, ValueError):
                continue
        return names

    def store_dirs(self) -> list[str]:
        return [os.path.join("/dev/shm", name) for name in self._sessions()]

    def spill_dirs(self) -> list[str]:
        tmp = tempfile.gettempdir()
        return [d for name in self._sessions()
                for d in glob.glob(os.path.join(tmp, f"{name}-*", "spill"))]


class RayData(DatasetAPI):
    name = "ray"
    notes = ("ray: ray.init(num_cpus=2, object_store_memory=STORE, "
             "include_dashboard=False), usage stats off, progress bars off",)

    def start(self, store_bytes: int) -> None:
        import ray
        import ray.data

        self.ray = ray
        ray.init(num_cpus=NUM_CPUS, object_store_memory=store_bytes,
                 include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        self.rd = ray.data

    def shutdown(self) -> None:
        self.ray.shutdown()

    def range_dataset(self, n: int) -> Any:
        return self.rd.range(n)

    def spill_info(self) -> dict[str, float]:
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        address = self.ray.get_runtime_context().gcs_address
        stats = get_memory_info_reply(get_state_from_address(address)).store_stats
        return {"bytes": float(stats.spilled_bytes_total),
                "objects": float(stats.spilled_objects_total)}


# =========================================================================== Dask
class DaskFrame(DataSystem):
    name = "dask"
    spills = True
    notes = ("dask: dask.dataframe on distributed.LocalCluster(n_workers=2, "
             "threads_per_worker=1, processes=True, memory_limit=STORE/2 each); "
             "the model is built once per worker process (a module global: Dask has "
             "no actor pool for map_partitions)",)

    def start(self, store_bytes: int) -> None:
        from distributed import Client, LocalCluster

        self.runs = itertools.count(1)  # see _data_work.transform's ``run``
        self.cluster = LocalCluster(n_workers=NUM_CPUS, threads_per_worker=1,
                                    processes=True, dashboard_address=None,
                                    memory_limit=store_bytes // NUM_CPUS,
                                    silence_logs=logging.CRITICAL)
        self.client = Client(self.cluster)

    def shutdown(self) -> None:
        self.client.close()
        self.cluster.close()

    @staticmethod
    def _frame_meta(columns: dict[str, str]) -> Any:
        import pandas as pd

        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})

    def _transformed(self, files: list[str]) -> Any:
        import dask.dataframe as dd

        return dd.read_parquet(files).map_partitions(
            work.transform, run=next(self.runs),
            meta=self._frame_meta({"key": "int64", "x": "float64"}))

    def etl(self, files: list[str], out: str, row_filter: bool) -> None:
        kept = self._transformed(files)
        kept = kept.map_partitions(work.keep, meta=kept._meta)
        means = kept.groupby("key")["x"].mean().rename("mean(x)").reset_index()
        means.to_parquet(out, write_index=False)

    def load(self, files: list[str]) -> Any:
        import dask.dataframe as dd
        from distributed import wait

        frame = dd.read_parquet(files).persist()
        wait(frame)
        return frame

    def infer(self, data: Any) -> tuple[int, float]:
        import dask

        pred = data.map_partitions(work.predict_partition, run=next(self.runs),
                                   meta=self._frame_meta({"pred": "float32"}))["pred"]
        rows, total = dask.compute(pred.count(), pred.astype("float64").sum())
        return int(rows), float(total)

    def shuffle_sort(self, data: Any) -> list[dict[str, Any]]:
        from distributed import wait

        run = next(self.runs)

        def with_random(df: Any, partition_info: Any = None) -> Any:
            number = partition_info["number"] if partition_info else 0
            return work.add_random(df, 100_000 * run + number)

        # A random shuffle in Dask: hash-partition on a column of random numbers.
        # It is persisted before the sort: Dask 2026.8 never finishes building the
        # graph of shuffle -> sort_values -> map_partitions as one expression (it
        # loops in the planner); both steps are timed.
        meta = data._meta.assign(_r=0.0)
        shuffled = data.map_partitions(with_random, meta=meta).shuffle(
            on="_r", force=True).persist()
        wait(shuffled)
        summaries = shuffled.drop(columns="_r").sort_values("key").map_partitions(
            work.block_summary, meta=self._frame_meta(
                {"rows": "int64", "first": "float64", "last": "float64", "sorted": "bool",
                 "p0_sum": "float64"})).compute()
        return summaries.to_dict("records")

    def stream(self, files: list[str]) -> tuple[int, float]:
        import dask

        x = self._transformed(files)["x"]
        rows, total = dask.compute(x.count(), x.sum())
        return int(rows), float(total)

    def take_range(self, n: int) -> list[dict[str, Any]]:
        import dask.dataframe as dd
        import pandas as pd

        parts = 200
        step = -(-n // parts)
        starts = list(range(0, n, step))
        stops = [min(s + step, n) for s in starts]
        frame = dd.from_map(work.range_part, starts, stops,
                            meta=self._frame_meta({"id": "int64"}))
        squared = frame.map_partitions(lambda df: pd.DataFrame(work.add_square(df)),
                                       meta=self._frame_meta({"id": "int64", "y": "int64"}))
        return squared.head(10).to_dict("records")

    def take_read(self, files: list[str]) -> list[dict[str, Any]]:
        return self._transformed(files).head(10).to_dict("records")

    def spill_info(self) -> dict[str, float]:
        def counters(dask_worker: Any) -> tuple[float, float]:
            metrics = getattr(dask_worker.data, "cumulative_metrics", {})
            return (metrics.get(("disk-write", "bytes"), 0.0),
                    metrics.get(("disk-write", "count"), 0.0))

        per_worker = self.client.run(counters).values()
        return {"bytes": float(sum(b for b, _ in per_worker)),
                "objects": float(sum(c for _, c in per_worker))}


# =========================================================================== the floor
class PandasFloor(DataSystem):
    name = "pandas"
    notes = ("pandas: one process, pandas and pyarrow (pyarrow with its own thread pool, as "
             "a plain script gets it; torch with one thread, as in each actor: two threads "
             "ran 2-4x slower and erratic on the loaded 2-core machine); files read one at "
             "a time where the work allows (ETL, streaming), so memory stays at about one "
             "file",)

    def etl(self, files: list[str], out: str, row_filter: bool) -> None:
        import pandas as pd
        import pyarrow.parquet as pq

        partial = []
        for path in files:
            kept = work.keep(work.transform(pq.read_table(path).to_pandas()))
            partial.append(kept.groupby("key")["x"].agg(["sum", "count"]))
        total = pd.concat(partial).groupby(level=0).sum()
        means = (total["sum"] / total["count"]).rename("mean(x)").reset_index()
        os.makedirs(out, exist_ok=True)
        means.to_parquet(os.path.join(out, "part-0.parquet"), index=False)

    def load(self, files: list[str]) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        return pa.concat_tables([pq.read_table(p) for p in files])

    def infer(self, data: Any) -> tuple[int, float]:
        predictor = work.Predictor()  # the actors' class, here in the driver, one thread
        pred = predictor({c: data.column(c).to_numpy() for c in data.column_names})["pred"]
        return len(pred), float(pred.astype("float64").sum())

    def shuffle_sort(self, data: Any) -> list[dict[str, Any]]:
        import numpy as np

        perm = np.random.default_rng(0).permutation(data.num_rows)
        ordered = data.take(perm).sort_by("key")
        return work.block_summary(ordered).to_dict("records")

    def stream(self, files: list[str]) -> tuple[int, float]:
        import pyarrow.parquet as pq

        rows, total = 0, 0.0
        for path in files:
            x = work.transform(pq.read_table(path).to_pandas())["x"].to_numpy()
            rows += len(x)
            total += float(x.sum())
        return rows, total

    def take_range(self, n: int) -> None:
        return None  # no lazy plan to measure: making 10 rows directly is free

    def take_read(self, files: list[str]) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        first = next(pq.ParquetFile(files[0]).iter_batches(batch_size=10))
        return work.transform(first.to_pandas()).to_dict("records")


def make(name: str) -> DataSystem:
    """The adapter for system ``name`` (one of :data:`SYSTEMS`)."""
    return {"fedexec-native": FedexecData, "ray": RayData, "dask": DaskFrame,
            "pandas": PandasFloor}[name]()
