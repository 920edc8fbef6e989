"""Splitting a dataset into several: ``split``, ``split_at_indices``,
``train_test_split``.

Each runs the dataset once (``materialize``), then cuts the list of its blocks
using only their metadata (row counts): a block that falls wholly inside one
part is shared by reference; a block that straddles a cut is sliced by a small
task (``_slice_task``), so no block passes through the driver::

    materialize ──▶ [(ref, meta)] ──cut at global row indices──▶ parts
                                       └─ straddling blocks: slice tasks

Parts are ``MaterializedDataset`` objects in order: concatenated, they are the
original rows (less the remainder ``equal=True`` drops).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import fedexec

from .block import BlockAccessor, BlockMetadata
from .bundle import RefBundle
from .context import DataContext
from .plan import InputData
from .transforms import finish_task

if TYPE_CHECKING:
    from .dataset import Dataset, MaterializedDataset

__all__ = ["split", "split_at_indices", "train_test_split"]

_Block = tuple[fedexec.ObjectRef[Any], BlockMetadata]


def split(ds: Dataset, n: int, *, equal: bool = False) -> list[MaterializedDataset]:
    """``n`` parts in order. ``equal=False``: whole blocks, cut where the row
    counts come closest to ``total/n`` each (parts may differ by up to a block;
    with fewer blocks than ``n`` some are empty). ``equal=True``: exactly
    ``total // n`` rows each, the last ``total % n`` rows (at most ``n - 1``)
    dropped.

    Raises:
        ValueError: ``n`` is not an int >= 1.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"split() needs a number of parts n >= 1, got {n!r}")
    blocks = _blocks_of(ds)
    total = sum(_rows(m) for _, m in blocks)
    if equal:
        size = total // n
        return _cut(blocks, [size * k for k in range(n + 1)])
    offsets = [0]
    for _, meta in blocks:
        offsets.append(offsets[-1] + _rows(meta))
    bounds, j = [0], 0
    for k in range(1, n):
        target = total * k / n
        while j + 1 < len(offsets) and abs(offsets[j + 1] - target) <= abs(offsets[j] - target):
            j += 1
        bounds.append(offsets[j])
    bounds.append(total)
    return _cut(blocks, bounds)


def split_at_indices(ds: Dataset, indices: Sequence[int]) -> list[MaterializedDataset]:
    """``len(indices) + 1`` parts: rows ``[0, i0)``, ``[i0, i1)``, ... ``[ik, end)``
    (an index past the end gives empty parts).

    Raises:
        ValueError: an index is negative, not an int, or they are not sorted.
    """
    indices = list(indices)
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"split_at_indices() takes ints, got {i!r}")
        if i < 0:
            raise ValueError(f"split_at_indices(): indices must be >= 0, got {indices}")
    if indices != sorted(indices):
        raise ValueError(f"split_at_indices(): indices must be sorted, got {indices}")
    blocks = _blocks_of(ds)
    total = sum(_rows(m) for _, m in blocks)
    return _cut(blocks, [0, *(min(i, total) for i in indices), total])


def train_test_split(ds: Dataset, test_size: float | int, *, shuffle: bool = False,
                     seed: int | None = None) -> tuple[MaterializedDataset, MaterializedDataset]:
    """``(train, test)``: ``test`` is the last ``test_size`` rows (an int), or the
    last fraction ``test_size`` of them (a float: ``train`` keeps
    ``int(total * (1 - test_size))`` rows); ``shuffle=True`` shuffles first
    (``random_shuffle(seed=seed)``).

    Raises:
        ValueError: a float outside (0, 1), an int outside (0, total), or a bad
            ``seed``.
    """
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
        raise TypeError(f"test_size must be a float in (0, 1) or an int, got {test_size!r}")
    if isinstance(test_size, float) and not 0 < test_size < 1:
        raise ValueError(f"test_size as a fraction must be in (0, 1), got {test_size}")
    if shuffle:
        ds = ds.random_shuffle(seed=seed)
    blocks = _blocks_of(ds)
    total = sum(_rows(m) for _, m in blocks)
    if isinstance(test_size, float):
        at = int(total * (1 - test_size))
    else:
        if not 0 < test_size < total:
            raise ValueError(f"test_size as a number of rows must be in (0, {total}) for "
                             f"this dataset of {total} rows, got {test_size}")
        at = total - test_size
    train, test = _cut(blocks, [0, at, total])
    return train, test


# --------------------------------------------------------------------------- helpers
def _rows(meta: BlockMetadata) -> int:
    assert meta.num_rows is not None
    return meta.num_rows


def _executor() -> fedexec.Executor:
    return DataContext.get_current().resolve_executor()


def _blocks_of(ds: Dataset) -> list[_Block]:
    """The dataset's blocks (it runs once, unless materialized), each with an
    exact row count."""
    from .dataset import MaterializedDataset

    mat = ds if isinstance(ds, MaterializedDataset) else ds.materialize()
    blocks = [pair for bundle in mat._bundles for pair in bundle.blocks]
    unknown = [i for i, (_, meta) in enumerate(blocks) if meta.num_rows is None]
    if unknown:
        executor = _executor()
        metas = executor.get([executor.options(name="BlockMetadata", num_cpus=0)
                              .submit(_metadata_of, blocks[i][0]) for i in unknown])
        for i, meta in zip(unknown, metas):
            blocks[i] = (blocks[i][0], meta)
    return blocks


def _cut(blocks: list[_Block], bounds: list[int]) -> list[MaterializedDataset]:
    """One dataset per ``[bounds[k], bounds[k+1])`` row range (bounds ascending)."""
    from .dataset import MaterializedDataset

    executor = _executor()
    slicer = executor.options(name="Split", num_returns=2)
    parts: list[list[Any]] = []
    pending: list[tuple[int, int, fedexec.ObjectRef[Any], fedexec.ObjectRef[Any]]] = []
    for lo, hi in itertools.pairwise(bounds):
        part: list[Any] = []
        start = 0
        for ref, meta in blocks:
            end = start + _rows(meta)
            a, b = max(lo, start), min(hi, end)
            if a < b:
                if a == start and b == end:
                    part.append((ref, meta))
                else:
                    meta_ref, block_ref = slicer.submit(_slice_task, ref, a - start, b - start)
                    pending.append((len(parts), len(part), meta_ref, block_ref))
                    part.append(None)
            start = end
        parts.append(part)
    if pending:
        metas = executor.get([p[2] for p in pending])
        for (k, i, _, block_ref), block_metas in zip(pending, metas):
            parts[k][i] = (block_ref, block_metas[0])
    return [MaterializedDataset(InputData(bundles=tuple(RefBundle((pair,)) for pair in part)))
            for part in parts]


def _slice_task(block: Any, lo: int, hi: int) -> list[Any]:
    """Task body: rows ``lo:hi`` of ``block`` (``[[metadata], block]``)."""
    start, cpu = time.time(), time.thread_time()
    return finish_task([BlockAccessor.for_block(block).slice(lo, hi)], 1, (), start, cpu)


def _metadata_of(block: Any) -> BlockMetadata:
    return BlockAccessor.for_block(block).get_metadata()
