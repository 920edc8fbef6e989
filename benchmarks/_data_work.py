"""The data and the user functions of ``data.py``, shared by every system.

Every system runs these same functions on the same files, so they do the same work:
workers of fedexec, Ray and Dask import them by name (``data.py`` puts this directory
on ``PYTHONPATH``). numpy, pandas, pyarrow and torch are imported inside functions,
so the runner itself imports this module cheaply.

Data sets (Parquet, written by :func:`write_dataset` into the runner's temporary
directory; one file per part, each made from its own seed, so every run and every
``--scale`` is reproducible):

    etl       key int64 (1,000 groups), a, b, c float64 in [0, 1), d int64: 40 B a row
    features  f0 .. f31 float32: 128 B a row (P2's model input)
    sort      key float64 in [0, 1), p0, p1, p2 float64: 32 B a row
"""

from __future__ import annotations

import itertools
import os
from typing import Any

NUM_GROUPS = 1000
THRESHOLD = 1.5  # keep rows with x > THRESHOLD (about two thirds of them)
NUM_FEATURES = 32
HIDDEN = 256
MODEL_BATCH = 4096  # rows per forward pass, on every system

#: name -> (columns and numpy dtypes, bytes per row)
SCHEMAS: dict[str, list[tuple[str, str]]] = {
    "etl": [("key", "int64"), ("a", "float64"), ("b", "float64"), ("c", "float64"),
            ("d", "int64")],
    "features": [(f"f{i}", "float32") for i in range(NUM_FEATURES)],
    "sort": [("key", "float64"), ("p0", "float64"), ("p1", "float64"), ("p2", "float64")],
}


def row_bytes(name: str) -> int:
    """In-memory bytes of one row of data set ``name``."""
    import numpy as np

    return sum(np.dtype(t).itemsize for _, t in SCHEMAS[name])


def make_part(name: str, rows: int, seed: int) -> Any:
    """One part of data set ``name`` as a pandas DataFrame (``rows`` rows)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {}
    for col, dtype in SCHEMAS[name]:
        if col == "key" and name == "etl":
            cols[col] = rng.integers(0, NUM_GROUPS, rows, dtype=np.int64)
        elif dtype == "int64":
            cols[col] = rng.integers(0, 1_000_000, rows, dtype=np.int64)
        else:
            cols[col] = rng.random(rows, dtype=np.float64).astype(dtype, copy=False)
    return pd.DataFrame(cols)


def write_dataset(directory: str, name: str, total_rows: int, parts: int,
                  seed: int) -> list[str]:
    """Write data set ``name`` as ``parts`` Parquet files under ``directory``
    (made if missing); the file paths, in order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    paths = []
    per_part = -(-total_rows // parts)
    for i in range(parts):
        rows = min(per_part, total_rows - i * per_part)
        if rows <= 0:
            break
        path = os.path.join(directory, f"part-{i:04d}.parquet")
        table = pa.Table.from_pandas(make_part(name, rows, seed * 100_003 + i),
                                     preserve_index=False)
        pq.write_table(table, path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- P1, P4
def transform(df: Any, run: int = 0) -> Any:
    """P1's numeric transform (a pandas batch in, a pandas batch out):
    ``x = 2.5 a + log1p(b) c - 0.01 (d mod 7) + key / 1000``, keeping ``key`` and ``x``.

    ``run`` is not used: Dask passes a new number each run, which gives the run's
    graph new keys, so that no result still held from an earlier run is reused."""
    import numpy as np
    import pandas as pd

    key = df["key"].to_numpy()
    x = (df["a"].to_numpy() * 2.5 + np.log1p(df["b"].to_numpy()) * df["c"].to_numpy()
         - (df["d"].to_numpy() % 7) * 0.01 + key / NUM_GROUPS)
    return pd.DataFrame({"key": key, "x": x})


def keep(df: Any) -> Any:
    """P1's filter on a whole pandas batch: the rows with ``x > THRESHOLD``."""
    return df[df["x"].to_numpy() > THRESHOLD]


def keep_row(row: Any) -> bool:
    """P1's filter for one row (``Dataset.filter(fn)``; only with ``--row-filter``)."""
    return bool(row["x"] > THRESHOLD)


# --------------------------------------------------------------------------- P2
def make_model() -> Any:
    """The small MLP (32 -> 256 -> 256 -> 1, float32), the same weights everywhere."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(NUM_FEATURES, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, 1))
    return model.eval()


def predict_array(model: Any, x: Any) -> Any:
    """The model's outputs for the rows of ``x`` (float32 array, rows x 32), computed
    in forward passes of at most :data:`MODEL_BATCH` rows."""
    import numpy as np
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(x), MODEL_BATCH):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start:start + MODEL_BATCH]))
            out.append(model(chunk).numpy()[:, 0])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def feature_matrix(columns: Any) -> Any:
    """Rows x 32 float32 from a mapping (dict of arrays or DataFrame) of ``f0..f31``."""
    import numpy as np

    return np.stack([np.asarray(columns[f"f{i}"], dtype=np.float32)
                     for i in range(NUM_FEATURES)], axis=1)


class Predictor:
    """P2's callable class: builds the model once (one thread per actor: two actors
    share the two cores), then predicts each numpy batch (dict of column -> array)."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        self.model = make_model()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {"pred": predict_array(self.model, feature_matrix(batch))}


_WORKER_MODEL: list[Any] = []


def predict_partition(df: Any, run: int = 0) -> Any:
    """Dask's form of :class:`Predictor`: one model per worker process, built on its
    first partition and kept in a module global (Dask has no actor pool for
    ``map_partitions``). ``run``: as in :func:`transform`."""
    import pandas as pd

    if not _WORKER_MODEL:
        import torch

        torch.set_num_threads(1)
        _WORKER_MODEL.append(make_model())
    return pd.DataFrame({"pred": predict_array(_WORKER_MODEL[0], feature_matrix(df))},
                        index=df.index)


# --------------------------------------------------------------------------- P3
def add_random(df: Any, seed: int) -> Any:
    """``df`` with a column ``_r`` of random floats (Dask's random shuffle key)."""
    import numpy as np

    return df.assign(_r=np.random.default_rng(seed).random(len(df)))


def block_summary(df: Any) -> Any:
    """One row describing a sorted block: rows, first and last key, whether its keys
    are sorted, and the sum of ``p0`` (so lost or doubled rows show)."""
    import numpy as np
    import pandas as pd

    key = df["key"].to_numpy()
    sorted_ok = bool(np.all(key[1:] >= key[:-1])) if len(key) else True
    return pd.DataFrame({
        "rows": [len(key)],
        "first": [float(key[0]) if len(key) else np.nan],
        "last": [float(key[-1]) if len(key) else np.nan],
        "sorted": [sorted_ok],
        "p0_sum": [float(df["p0"].to_numpy().sum())],
    })


def check_sorted(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The check payload of P3 from every output block's :func:`block_summary`: total
    rows, sum of ``p0``, the key range, and whether the blocks, taken in key order,
    are each sorted and do not overlap (so the whole is a sort by ``key``)."""
    blocks = sorted((s for s in summaries if s["rows"]), key=lambda s: s["first"])
    ordered = all(s["sorted"] for s in blocks) and all(
        a["last"] <= b["first"] for a, b in itertools.pairwise(blocks))
    return {
        "rows": int(sum(s["rows"] for s in blocks)),
        "p0_sum": float(sum(s["p0_sum"] for s in blocks)),
        "min_key": blocks[0]["first"] if blocks else None,
        "max_key": blocks[-1]["last"] if blocks else None,
        "sorted": ordered,
        "blocks": len(blocks),
    }


# --------------------------------------------------------------------------- take
def add_square(batch: Any) -> Any:
    """The map of the ``take(10)`` plans: adds ``y = id * id`` (numpy batch)."""
    import numpy as np

    ids = np.asarray(batch["id"])
    return {"id": ids, "y": ids * ids}


def range_part(start: int, stop: int) -> Any:
    """Rows ``start..stop-1`` of the range data set as a pandas frame (column ``id``)."""
    import numpy as np
    import pandas as pd

    return pd.DataFrame({"id": np.arange(start, stop, dtype=np.int64)})
