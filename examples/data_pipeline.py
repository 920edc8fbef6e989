"""fedexec.data twice over: the classic windowed program, then a modern
Parquet -> map_batches -> groupby pipeline checked against pandas.

    python examples/data_pipeline.py

Runs on the default executor (native); each transform runs as fedexec tasks.
"""

import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import fedexec.data as fd


def classic():
    """The classic program: range -> map -> filter, then a pipeline of windows."""
    ds = fd.range(10000)                                 # rows are the ints 0..9999
    ds = ds.map(lambda x: {"data": x ** 2})
    ds = ds.filter(lambda x: x["data"] % 2 == 0)
    pipe = ds.window(blocks_per_window=2)                # a DatasetPipeline of windows
    pipe = (pipe.map(lambda x: {"data": x["data"] // 2})
                .filter(lambda x: x["data"] % 4 == 0)
                .flat_map(lambda x: [x, {"data": -x["data"]}]))
    first = pipe.take(10)
    pipe.show(10)
    expected = [v for x in range(0, 10000, 2) if (x * x // 2) % 4 == 0
                for v in ({"data": x * x // 2}, {"data": -(x * x // 2)})]
    assert first == expected[:10], first


def add_revenue(batch: pd.DataFrame) -> pd.DataFrame:
    """A numeric transform on a pandas batch: the value with a 10% markup."""
    batch["value"] = batch["value"] * 1.1 + batch["units"]
    return batch


def modern():
    """Parquet files -> map_batches (pandas batches) -> groupby mean, as pandas does it."""
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({"store": rng.choice(["north", "south", "east", "west"], 2500),
                            "units": rng.integers(0, 10, 2500),
                            "value": rng.random(2500) * 100})
              for _ in range(4)]
    with tempfile.TemporaryDirectory() as path:
        for i, frame in enumerate(frames):
            pq.write_table(pa.Table.from_pandas(frame), f"{path}/part-{i}.parquet")

        ds = fd.read_parquet(path)
        ds = ds.map_batches(add_revenue, batch_format="pandas")
        means = ds.groupby("store").mean("value")
        result = means.to_pandas()
        print(result)
        print(means.stats())                             # per operator: time, rows, bytes

    expected = (add_revenue(pd.concat(frames, ignore_index=True))
                .groupby("store", as_index=False)["value"].mean()
                .rename(columns={"value": "mean(value)"}))
    pd.testing.assert_frame_equal(result, expected, check_exact=False, rtol=1e-9)


if __name__ == "__main__":
    classic()
    modern()
