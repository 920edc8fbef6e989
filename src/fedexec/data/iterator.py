"""Consuming a run: blocks, batches and rows, with prefetching.

The streaming executor yields bundles (refs). Here they are fetched and shaped::

    executor ──bundles──▶ fetch blocks ─▶ cut into batches ─▶ format ──▶ consumer
                         └──── on a prefetch thread, up to N batches ahead ────┘

A local shuffle buffer (``local_shuffle.py``) may sit between cutting and
formatting. With ``prefetch_batches=N > 0`` the fetching, cutting and formatting run on one
thread (``fedexec-data-prefetch``) that keeps up to N batches ready in a bounded
queue while the consumer works on the current one; ``0`` does it all inline.
Closing the consumer's iterator stops the thread, which closes the executor's
iterator (so the run's tasks are cancelled).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import fedexec

from .batcher import batch_blocks
from .block import Block, BlockAccessor, check_batch_format
from .bundle import RefBundle
from .local_shuffle import check_shuffle_args, shuffled_batches

__all__ = ["batches_of", "iter_batches", "iter_blocks", "iter_rows", "prefetched"]

T = TypeVar("T")
_END = object()


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def iter_blocks(bundles: Iterator[RefBundle], executor: fedexec.Executor) -> Iterator[Block]:
    """The blocks of ``bundles``, fetched from the store, in order."""
    for bundle in bundles:
        refs = bundle.block_refs
        yield from (executor.get(refs) if len(refs) > 1 else [executor.get(refs[0])])


def iter_batches(bundles: Iterator[RefBundle], executor: fedexec.Executor, *,
                 batch_size: int | None, batch_format: str, prefetch_batches: int,
                 drop_last: bool, local_shuffle_buffer_size: int | None = None,
                 local_shuffle_seed: int | None = None) -> Iterator[Any]:
    """Batches of ``batch_size`` rows in ``batch_format`` (see ``Dataset.iter_batches``)."""
    return batches_of(lambda: iter_blocks(bundles, executor), _closer(bundles),
                      batch_size=batch_size, batch_format=batch_format,
                      prefetch_batches=prefetch_batches, drop_last=drop_last,
                      local_shuffle_buffer_size=local_shuffle_buffer_size,
                      local_shuffle_seed=local_shuffle_seed)


def batches_of(blocks: Callable[[], Iterator[Block]], on_close: Callable[[], None] | None, *,
               batch_size: int | None, batch_format: str, prefetch_batches: int,
               drop_last: bool, local_shuffle_buffer_size: int | None = None,
               local_shuffle_seed: int | None = None,
               finalize: Callable[[Any], Any] | None = None) -> Iterator[Any]:
    """Batches cut from the stream ``blocks()`` (through the local shuffle buffer
    when ``local_shuffle_buffer_size`` is set), formatted and then ``finalize``d
    (e.g. made torch tensors) on the prefetch thread; ``on_close`` as in
    :func:`prefetched`."""
    check_batch_format(batch_format)
    if not isinstance(prefetch_batches, int) or prefetch_batches < 0:
        raise ValueError(f"prefetch_batches must be an int >= 0, got {prefetch_batches!r}")
    check_shuffle_args(batch_size, local_shuffle_buffer_size)

    def produce() -> Iterator[Any]:
        if local_shuffle_buffer_size is None:
            cut = batch_blocks(blocks(), batch_size, drop_last=drop_last)
        else:
            assert batch_size is not None
            cut = shuffled_batches(blocks(), batch_size, local_shuffle_buffer_size,
                                   local_shuffle_seed, drop_last=drop_last)
        for block in cut:
            batch = BlockAccessor.for_block(block).to_batch(batch_format)
            yield batch if finalize is None else finalize(batch)

    return prefetched(produce, prefetch_batches, on_close=on_close)


def iter_rows(bundles: Iterator[RefBundle], executor: fedexec.Executor, *,
              prefetch_blocks: int = 1) -> Iterator[Any]:
    """The rows of ``bundles`` (one block fetched ahead on a thread by default)."""

    def produce() -> Iterator[Block]:
        return iter_blocks(bundles, executor)

    for block in prefetched(produce, prefetch_blocks, on_close=_closer(bundles)):
        yield from BlockAccessor.for_block(block).iter_rows()


def _closer(it: Iterator[Any]) -> Callable[[], None]:
    def close() -> None:
        closing = getattr(it, "close", None)
        if closing is not None:
            closing()
    return close


def prefetched(produce: Callable[[], Iterator[T]], depth: int,
               on_close: Callable[[], None] | None = None) -> Iterator[T]:
    """The items of ``produce()``, computed up to ``depth`` ahead on a thread
    (inline when ``depth`` is 0). ``on_close`` runs when the iteration ends or the
    consumer closes it, on the thread that ran ``produce``."""
    if depth <= 0:
        return _inline(produce, on_close)
    return _threaded(produce, depth, on_close)


def _inline(produce: Callable[[], Iterator[T]],
            on_close: Callable[[], None] | None) -> Iterator[T]:
    try:
        yield from produce()
    finally:
        if on_close is not None:
            on_close()


def _threaded(produce: Callable[[], Iterator[T]], depth: int,
              on_close: Callable[[], None] | None) -> Iterator[T]:
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def body() -> None:
        end: Any = _END
        try:
            for item in produce():
                if not put(item):
                    break
        except BaseException as e:
            end = _Raised(e)
        finally:
            if on_close is not None:
                try:
                    on_close()
                except BaseException as e:  # the run's own error, if it had none yet
                    if end is _END:
                        end = _Raised(e)
            put(end)

    thread = threading.Thread(target=body, name="fedexec-data-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=60)
