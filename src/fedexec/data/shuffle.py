"""The exchange: all-to-all operators as map-reduce over the object store, and
the ones built on it directly (``random_shuffle``, ``repartition``,
``randomize_block_order``). Sorting and grouping use it too (``sort.py``,
``grouped.py``).

An all-to-all function (``plan.AllToAll``) runs on a driver thread once every
input block is in the store; it only ever handles refs and metadata::

    input blocks (refs) ─▶ map task i: map_fn(block_i, i) ─▶ [row counts, part_0 .. part_N-1]
                           (num_returns = 1 + N; the driver fetches only the counts)
    parts j of all maps ─▶ reduce task j: reduce_fn(j, parts) ─▶ [[metadata], block_j]
                           (non-empty parts only; a partition with none gets no task)
    output: one bundle per non-empty reduce output, in partition order

Tasks go through ``ctx.submit`` (tracked: progress for the stall clock,
cancelled if the run stops). The driver drops its refs to the input blocks once
the map tasks hold them and to the parts once the reduce tasks do, so each is
freed as soon as the tasks that read it end.

Memory: the exchange holds the whole dataset in the store twice at worst (map
outputs, then reduce outputs, the inputs being freed as map tasks end). A
dataset larger than the store still goes through: the store spills objects to
disk and restores them for the tasks that read them; the limits are the spill
disk (about twice the data) and one reduce task's partition, which must fit in a
worker's memory (partitions are about ``data / N``).

Partitions: ``N`` defaults to the number of input blocks, at most
:data:`MAX_PARTITIONS` (there are ``M x N`` parts), but at least enough for
output blocks of ``DataContext.target_max_block_size``.

Randomness: a shuffle's seed (drawn once per run when None) seeds map task ``i``
with ``(seed, 0, i)`` and reduce task ``j`` with ``(seed, 1, j)``, so the same
seed over the same blocks gives the same order on every run and every backend.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from .all_to_all import AllToAllContext
from .block import Block, BlockAccessor, BlockMetadata, compact
from .bundle import RefBundle
from .transforms import finish_task

__all__ = [
    "MAX_PARTITIONS",
    "exchange",
    "num_partitions",
    "random_shuffle_fn",
    "randomize_block_order_fn",
    "repartition_fn",
    "take_blocks",
]

#: The most partitions an exchange makes by default (``M x N`` parts in the store).
MAX_PARTITIONS = 200

#: ``map_fn(block, index) -> N parts`` and ``reduce_fn(index, parts) -> block``.
MapFn = Callable[[Block, int], Sequence[Block]]
ReduceFn = Callable[[int, list[Block]], Block]
AllToAllFn = Callable[[list[RefBundle], AllToAllContext], list[RefBundle]]

_Blocks = list[tuple[Any, BlockMetadata]]


def take_blocks(bundles: list[RefBundle]) -> _Blocks:
    """The ``(ref, metadata)`` pairs of ``bundles``, in order; the list handed to an
    all-to-all function is emptied so that only the caller holds the refs (and can
    let them go)."""
    blocks = [pair for bundle in bundles for pair in bundle.blocks]
    bundles.clear()
    return blocks


def num_partitions(ctx: AllToAllContext, blocks: _Blocks) -> int:
    """The default number of output partitions (see the module docstring)."""
    total = sum(meta.size_bytes or 0 for _, meta in blocks)
    by_size = -(-total // max(1, ctx.data_context.target_max_block_size))
    return max(1, min(len(blocks), MAX_PARTITIONS), by_size)


def _map_task(fn: MapFn, index: int, n: int, block: Block) -> list[Any]:
    parts = [compact(p) for p in fn(block, index)]
    if len(parts) != n:  # pragma: no cover - a bug in a map function
        raise RuntimeError(f"an exchange map made {len(parts)} parts, expected {n}")
    return [[BlockAccessor.for_block(p).num_rows() for p in parts], *parts]


def _reduce_task(fn: ReduceFn, index: int, *parts: Block) -> list[Any]:
    start, cpu = time.time(), time.thread_time()
    return finish_task([fn(index, list(parts))], 1, (), start, cpu)


def exchange(ctx: AllToAllContext, blocks: _Blocks, map_fn: MapFn, reduce_fn: ReduceFn,
             n: int) -> list[RefBundle]:
    """Map every block into ``n`` parts, reduce each partition's parts (see the
    module docstring). ``blocks`` is emptied (the refs are let go once the map
    tasks hold them)."""
    maps = [ctx.submit(_map_task, map_fn, i, n, ref, num_returns=1 + n)
            for i, (ref, _) in enumerate(blocks)]
    blocks.clear()
    counts = ctx.executor.get([refs[0] for refs in maps])
    parts = [[refs[1 + j] for refs, c in zip(maps, counts) if c[j] > 0] for j in range(n)]
    del maps
    return [b for b in reduce_parts(ctx, parts, reduce_fn) if b is not None]


def reduce_parts(ctx: AllToAllContext, parts: list[list[Any]],
                 reduce_fn: ReduceFn) -> list[RefBundle | None]:
    """One reduce task per non-empty list of part refs in ``parts`` (emptied);
    the output bundle of each list, in order (None: no parts, or no rows out)."""
    reduces = {j: ctx.submit(_reduce_task, reduce_fn, j, *refs, num_returns=2)
               for j, refs in enumerate(parts) if refs}
    n = len(parts)
    parts.clear()
    metas = dict(zip(reduces, ctx.executor.get([refs[0] for refs in reduces.values()])))
    out: list[RefBundle | None] = [None] * n
    for j, (_, block_ref) in reduces.items():
        if metas[j][0].num_rows != 0:
            out[j] = RefBundle(((block_ref, metas[j][0]),))
    return out


# --------------------------------------------------------------------------- random
def check_seed(seed: Any) -> int | None:
    """``seed`` itself if it is None or an int >= 0, else ``ValueError``."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
    return None if seed is None else int(seed)


def _rng(seed: int, stage: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage, index])


def _indices(array: np.ndarray) -> Sequence[int]:
    return cast("Sequence[int]", array)  # an ndarray: no conversion to a list


@dataclass(frozen=True)
class _ShuffleMap:
    seed: int
    n: int

    def __call__(self, block: Block, index: int) -> list[Block]:
        acc = BlockAccessor.for_block(block)
        dest = _rng(self.seed, 0, index).integers(0, self.n, acc.num_rows())
        grouped = BlockAccessor.for_block(acc.take(_indices(np.argsort(dest, kind="stable"))))
        ends = np.cumsum(np.bincount(dest, minlength=self.n))
        return [grouped.slice(int(lo), int(hi)) for lo, hi in zip([0, *ends[:-1]], ends)]


@dataclass(frozen=True)
class _ShuffleReduce:
    seed: int

    def __call__(self, index: int, parts: list[Block]) -> Block:
        acc = BlockAccessor.for_block(BlockAccessor.concat(parts))
        return acc.take(_indices(_rng(self.seed, 1, index).permutation(acc.num_rows())))


def random_shuffle_fn(seed: int | None, n: int | None = None) -> AllToAllFn:
    """The all-to-all function of ``random_shuffle`` (into ``n`` blocks; None:
    :func:`num_partitions`)."""
    return functools.partial(_random_shuffle, seed, n)


def _random_shuffle(seed: int | None, n: int | None, bundles: list[RefBundle],
                    ctx: AllToAllContext) -> list[RefBundle]:
    seed = secrets.randbits(63) if seed is None else seed
    blocks = take_blocks(bundles)
    n = n or num_partitions(ctx, blocks)
    return exchange(ctx, blocks, _ShuffleMap(seed, n), _ShuffleReduce(seed), n)


def randomize_block_order_fn(seed: int | None) -> AllToAllFn:
    """The all-to-all function of ``randomize_block_order``: the blocks in a random
    order (no task, no data moved)."""
    return functools.partial(_randomize_block_order, seed)


def _randomize_block_order(seed: int | None, bundles: list[RefBundle],
                           ctx: AllToAllContext) -> list[RefBundle]:
    blocks = take_blocks(bundles)
    rng = np.random.default_rng(secrets.randbits(63) if seed is None else seed)
    return [RefBundle((blocks[i],)) for i in rng.permutation(len(blocks))]


# --------------------------------------------------------------------------- repartition
@dataclass(frozen=True)
class _Slices:
    """Map function cutting a block at row offsets."""

    cuts: tuple[int, ...]

    def __call__(self, block: Block, index: int) -> list[Block]:
        acc = BlockAccessor.for_block(block)
        return [acc.slice(lo, hi) for lo, hi in zip(self.cuts, self.cuts[1:])]


def _concat(index: int, parts: list[Block]) -> Block:
    return BlockAccessor.concat(parts)


def _num_rows(block: Block) -> int:
    return BlockAccessor.for_block(block).num_rows()


def repartition_fn(n: int, shuffle: bool) -> AllToAllFn:
    """The all-to-all function of ``repartition(n, shuffle=...)``."""
    if shuffle:
        return functools.partial(_random_shuffle, None, n)
    return functools.partial(_repartition, n)


def _repartition(n: int, bundles: list[RefBundle], ctx: AllToAllContext) -> list[RefBundle]:
    """``n`` blocks of nearly equal row counts, rows in order: a block inside one
    output goes to it whole; one across outputs is cut by a task; an output made of
    one whole block is that block (no task)."""
    blocks = take_blocks(bundles)
    unknown = [i for i, (_, meta) in enumerate(blocks) if meta.num_rows is None]
    counted = ctx.executor.get([ctx.submit(_num_rows, blocks[i][0]) for i in unknown])
    rows = [meta.num_rows or 0 for _, meta in blocks]
    for i, c in zip(unknown, counted):
        rows[i] = c
    total = sum(rows)
    edges = [total * j // n for j in range(n + 1)]
    parts: list[list[Any]] = [[] for _ in range(n)]
    whole: dict[int, tuple[Any, BlockMetadata]] = {}
    start = 0
    for (ref, meta), count in zip(blocks, rows):
        end = start + count
        outs = [j for j in range(n) if edges[j] < min(end, edges[j + 1]) and
                max(start, edges[j]) < edges[j + 1]]
        if len(outs) == 1:
            parts[outs[0]].append(ref)
            whole[outs[0]] = (ref, meta)
        elif outs:
            cuts = (0, *(edges[j + 1] - start for j in outs[:-1]), count)
            refs = ctx.submit(_map_task, _Slices(cuts), 0, len(outs), ref,
                              num_returns=1 + len(outs))
            for j, part in zip(outs, refs[1:]):
                parts[j].append(part)
        start = end
    blocks.clear()
    direct = {j for j in whole if len(parts[j]) == 1 and parts[j][0] is whole[j][0]}
    for j in direct:
        parts[j] = []
    reduced = reduce_parts(ctx, parts, _concat)
    out = [RefBundle((whole[j],)) if j in direct else reduced[j] for j in range(n)]
    return [b for b in out if b is not None]
