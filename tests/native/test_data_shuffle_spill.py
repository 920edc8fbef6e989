"""A shuffle and a sort of data three times the object store go through: the
exchange's blocks spill to disk and come back for the tasks that read them, and
every row arrives (native only: the backend with an object store capacity; the
store's counters are read through private means, as a test may)."""

from __future__ import annotations

import numpy as np
import pytest

import fedexec
import fedexec.data as fd

MiB = 1 << 20
STORE = 64 * MiB
BLOCK_ROWS = 4096  # x 1 KiB of payload = 4 MiB per block
BLOCKS = 48        # 192 MiB in all: 3x the store


def payload(batch):
    n = len(batch["id"])
    return {"id": batch["id"], "pad": np.full((n, 1024), 7, dtype=np.uint8)}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_shuffle_and_sort_three_times_the_store_spill_and_finish():
    n = BLOCK_ROWS * BLOCKS
    with fedexec.Executor("native", num_cpus=2, object_store_memory=STORE) as ex:
        ctx = fd.DataContext.get_current()
        saved = ctx.executor
        ctx.executor = ex
        try:
            ds = fd.range_table(n, parallelism=BLOCKS).map_batches(payload, batch_size=None)
            ids, previous, ordered, pad = [], -1, True, 0
            for batch in ds.random_shuffle(seed=2).sort("id").iter_batches(batch_size=8192):
                ids.append(batch["id"])
                ordered &= bool(batch["id"][0] > previous)
                previous = int(batch["id"][-1])
                pad += int(batch["pad"][:, -1].sum())
            store = ex._backend.stats()["store"]
        finally:
            ctx.executor = saved
    assert np.array_equal(np.concatenate(ids), np.arange(n)) and ordered
    assert pad == 7 * n
    assert store["spill_count"] > BLOCKS  # the data really did not fit
