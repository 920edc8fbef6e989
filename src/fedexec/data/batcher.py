"""Cutting a stream of blocks into batches of a fixed number of rows.

Used inside tasks (``map_batches``: a batch may span the blocks one task got)
and in the driver (``iter_batches``: across the blocks of the whole stream).
Slicing a table copies nothing; a batch made of pieces of several blocks is
concatenated once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .block import Block, BlockAccessor

__all__ = ["batch_blocks"]


def batch_blocks(blocks: Iterable[Block], batch_size: int | None, *,
                 drop_last: bool = False) -> Iterator[Block]:
    """Blocks of exactly ``batch_size`` rows, in order; the last may be shorter
    (dropped with ``drop_last``). ``batch_size=None``: each non-empty block as is.

    Raises:
        ValueError: ``batch_size`` is not None or an int >= 1.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or
                                   not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
    if batch_size is None:
        for block in blocks:
            if BlockAccessor.for_block(block).num_rows() > 0:
                yield block
        return
    pieces: list[Block] = []
    held = 0
    for block in blocks:
        acc = BlockAccessor.for_block(block)
        n = acc.num_rows()
        offset = 0
        while offset < n:
            take = min(batch_size - held, n - offset)
            pieces.append(block if (offset == 0 and take == n) else acc.slice(offset, offset + take))
            held += take
            offset += take
            if held == batch_size:
                yield BlockAccessor.concat(pieces)
                pieces, held = [], 0
    if pieces and not drop_last:
        yield BlockAccessor.concat(pieces)
