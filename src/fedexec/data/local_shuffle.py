"""The local shuffle buffer of ``iter_batches(local_shuffle_buffer_size=n)``.

Rows are mixed in the consumer's process, across block boundaries, without a
distributed shuffle: blocks stream into a buffer; a batch is drawn at random
from it once it holds at least ``n + batch_size`` rows (so at least ``n`` rows
stay behind to mix with the rows still to come); when the stream ends the
buffer is drained in random batches. State::

    mixed     Block | None   the buffer's rows in a random order; batches are cut
                             from its front (``offset``), which copies nothing
    pending   list[Block]    blocks arrived since the last mix

Mixing concatenates ``mixed[offset:]`` with ``pending`` and permutes the whole,
so each batch is a uniform random sample of the buffer's rows. A seed makes the
order reproducible for the same input blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .block import Block, BlockAccessor

__all__ = ["check_shuffle_args", "shuffled_batches"]


def check_shuffle_args(batch_size: int | None, buffer_size: int | None) -> None:
    """Raise ``ValueError`` for a local shuffle that cannot be done."""
    if buffer_size is None:
        return
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
        raise ValueError(f"local_shuffle_buffer_size must be None or an int >= 1, "
                         f"got {buffer_size!r}")
    if batch_size is None:
        raise ValueError("a local shuffle buffer needs a batch_size (it draws batches of "
                         "that many rows); batch_size=None means whole blocks")


def shuffled_batches(blocks: Iterable[Block], batch_size: int, buffer_size: int,
                     seed: int | None = None, *, drop_last: bool = False) -> Iterator[Block]:
    """Blocks of ``batch_size`` rows drawn at random from a buffer of at least
    ``buffer_size`` rows (see the module docstring); the last may be shorter
    (dropped with ``drop_last``)."""
    rng = np.random.default_rng(seed)
    mixed: Block | None = None
    offset = 0
    pending: list[Block] = []
    pending_rows = 0

    def held() -> int:
        left = 0 if mixed is None else BlockAccessor.for_block(mixed).num_rows() - offset
        return left + pending_rows

    def mix() -> None:
        nonlocal mixed, offset, pending, pending_rows
        parts = pending if mixed is None else [
            BlockAccessor.for_block(mixed).slice(offset, BlockAccessor.for_block(mixed)
                                                 .num_rows()), *pending]
        whole = BlockAccessor.concat(parts)
        acc = BlockAccessor.for_block(whole)
        mixed = acc.take(rng.permutation(acc.num_rows()).tolist())
        offset, pending, pending_rows = 0, [], 0

    def draw(n: int) -> Block:
        nonlocal offset
        if pending:
            mix()
        assert mixed is not None
        batch = BlockAccessor.for_block(mixed).slice(offset, offset + n)
        offset += n
        return batch

    for block in blocks:
        rows = BlockAccessor.for_block(block).num_rows()
        if rows == 0:
            continue
        pending.append(block)
        pending_rows += rows
        while held() >= buffer_size + batch_size:
            yield draw(batch_size)
    while held() >= batch_size:
        yield draw(batch_size)
    rest = held()
    if rest and not drop_last:
        yield draw(rest)
