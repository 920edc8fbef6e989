"""fedexec.data streams a dataset 10x the object store through it without
holding it: the memory of the whole runtime stays bounded and little is spilled.

Native only: it is the backend with an object store capacity. The test samples,
from a thread, the proportional set size (PSS: shared pages counted once) of
the runtime's processes (node manager, workers) and the driver, and the store's
spill counters (private means a test may use; the library sees none of them).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest

import fedexec
import fedexec.data as fd

MiB = 1 << 20
STORE = 64 * MiB
BLOCK_ROWS = 4096  # x 1 KiB of payload = 4 MiB per block
BLOCKS = 160       # 640 MiB in all: 10x the store


def payload(batch):
    n = len(batch["id"])
    return {"id": batch["id"], "pad": np.full((n, 1024), 7, dtype=np.uint8)}


def checksum(batch):
    batch["sum"] = batch["pad"][:, :8].sum(axis=1, dtype=np.int64)
    return batch


class Sampler:
    """Peak PSS of this process and its descendants, and peak store counters."""

    def __init__(self, executor: fedexec.Executor):
        self.executor = executor
        self.peak_pss = 0
        self.peak_spilled = 0
        self.peak_used = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-sampler", daemon=True)

    def pss(self) -> int:
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_pss = max(self.peak_pss, self.pss())
            store = self.executor._backend.stats()["store"]
            self.peak_spilled = max(self.peak_spilled, store["spilled_bytes"])
            self.peak_used = max(self.peak_used, store["used_bytes"])
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_dataset_ten_times_the_store_streams_with_bounded_memory():
    with fedexec.Executor("native", num_cpus=2, object_store_memory=STORE) as ex:
        ctx = fd.DataContext.get_current()
        saved = ctx.executor
        ctx.executor = ex
        try:
            # the source (read + payload, fused) makes 640 MiB; checksum is its own
            # operator (other resources: not fused), so every block crosses the store
            ds = fd.range_table(BLOCK_ROWS * BLOCKS, parallelism=BLOCKS).map_batches(
                payload, batch_size=None).map_batches(checksum, batch_size=None, num_cpus=1)
            ds.limit(BLOCK_ROWS * 4).count()  # warm up: workers started, libraries loaded
            time.sleep(0.5)
            baseline = Sampler(ex).pss()
            spills_before = ex._backend.stats()["store"]["spill_count"]
            rows = total = 0
            with Sampler(ex) as sampler:
                start = time.monotonic()
                for batch in ds.iter_batches(batch_size=BLOCK_ROWS):
                    rows += len(batch["id"])
                    total += int(batch["sum"].sum()) + int(batch["pad"][:, -1].sum())
                elapsed = time.monotonic() - start
            store = ex._backend.stats()["store"]
        finally:
            ctx.executor = saved
    data = BLOCK_ROWS * BLOCKS * 1024
    assert rows == BLOCK_ROWS * BLOCKS and total == rows * 9 * 7
    spilled_files = store["spill_count"] - spills_before
    growth = sampler.peak_pss - baseline
    print(f"\n{data / MiB:.0f} MiB through a {STORE / MiB:.0f} MiB store in {elapsed:.1f} s "
          f"({data / MiB / elapsed:.0f} MiB/s): PSS baseline {baseline / MiB:.0f} MiB, peak "
          f"{sampler.peak_pss / MiB:.0f} MiB (+{growth / MiB:.0f} MiB); store peak "
          f"{sampler.peak_used / MiB:.0f} MiB used, {sampler.peak_spilled / MiB:.1f} MiB "
          f"spilled at most, {spilled_files} objects spilled in all")
    # Bounded: the growth is about the store plus the blocks the tasks and the
    # consumer hold, far from the 640 MiB that went through.
    assert growth < STORE + 128 * MiB, growth
    # Little is spilled: fewer than 10% of the blocks ever went to disk.
    assert spilled_files <= BLOCKS // 10, spilled_files
    assert sampler.peak_spilled <= 0.1 * data
    assert "Operator 2 MapBatches(checksum)" in ds.stats()
