"""``DataIterator``: something to iterate over in batches, rows or torch tensors.

What ``Dataset.iterator()``, ``Dataset.streaming_split(n)`` and a
``DatasetPipeline`` hand to a consumer (a training loop). A subclass says where
its blocks come from (:meth:`DataIterator._block_stream`); the shared code here
cuts them into batches (with the local shuffle buffer), formats them and
prefetches on a thread (``iterator.batches_of``)::

    _block_stream() ──blocks──▶ batches_of: cut / shuffle / format / finalize ──▶ consumer
                               └─────────── prefetch thread ──────────────────┘

Each call of ``iter_batches``/``iter_rows``/``iter_torch_batches`` is one pass
(an epoch) over the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .block import Block, BlockAccessor
from .iterator import batches_of, prefetched

__all__ = ["BlockStream", "DataIterator", "DatasetIterator"]

#: ``(make_blocks, on_close)``: a function starting one pass over the blocks, and
#: what to call when the pass ends or the consumer stops early.
BlockStream = tuple[Callable[[], Iterator[Block]], Callable[[], None] | None]


class DataIterator:
    """Iterates over data in batches, rows or torch batches; each call is a pass."""

    def _block_stream(self) -> BlockStream:
        """A new pass over the blocks (see ``BlockStream``)."""
        raise NotImplementedError

    def iter_batches(self, *, batch_size: int | None = 256, batch_format: str = "default",
                     prefetch_batches: int = 1, drop_last: bool = False,
                     local_shuffle_buffer_size: int | None = None,
                     local_shuffle_seed: int | None = None) -> Iterator[Any]:
        """Batches of ``batch_size`` rows, as ``Dataset.iter_batches``."""
        return self._batches(batch_size=batch_size, batch_format=batch_format,
                             prefetch_batches=prefetch_batches, drop_last=drop_last,
                             local_shuffle_buffer_size=local_shuffle_buffer_size,
                             local_shuffle_seed=local_shuffle_seed)

    def _batches(self, finalize: Callable[[Any], Any] | None = None, **kwargs: Any
                 ) -> Iterator[Any]:
        make_blocks, on_close = self._block_stream()
        return batches_of(make_blocks, on_close, finalize=finalize, **kwargs)

    def iter_rows(self) -> Iterator[Any]:
        """The rows, in order (one block fetched ahead on a thread)."""
        make_blocks, on_close = self._block_stream()
        for block in prefetched(make_blocks, 1, on_close=on_close):
            yield from BlockAccessor.for_block(block).iter_rows()

    def iter_torch_batches(self, *, batch_size: int | None = 256, dtypes: Any = None,
                           device: Any = "cpu", collate_fn: Callable[[Any], Any] | None = None,
                           prefetch_batches: int = 1, drop_last: bool = False,
                           local_shuffle_buffer_size: int | None = None,
                           local_shuffle_seed: int | None = None) -> Iterator[Any]:
        """Batches as dicts of torch tensors (see ``torch_utils.torch_finalizer``):
        ``dtypes`` (one torch dtype, or a dict column → dtype), on ``device``; or
        whatever ``collate_fn(numpy_batch)`` returns (moved to ``device``).

        Raises:
            ImportError: torch is not installed.
            ValueError: both ``collate_fn`` and ``dtypes``.
        """
        from .torch_utils import torch_finalizer

        finalize = torch_finalizer(dtypes=dtypes, device=device, collate_fn=collate_fn)
        return self._batches(finalize, batch_size=batch_size, batch_format="numpy",
                             prefetch_batches=prefetch_batches, drop_last=drop_last,
                             local_shuffle_buffer_size=local_shuffle_buffer_size,
                             local_shuffle_seed=local_shuffle_seed)

    def to_torch(self, *, label_column: str | None = None, feature_columns: Any = None,
                 label_column_dtype: Any = None, feature_column_dtypes: Any = None,
                 batch_size: int = 1, prefetch_batches: int = 1, drop_last: bool = False,
                 local_shuffle_buffer_size: int | None = None,
                 local_shuffle_seed: int | None = None, unsqueeze_label_tensor: bool = True,
                 unsqueeze_feature_tensors: bool = True) -> Any:
        """A ``torch.utils.data.IterableDataset`` of ``(features, label)`` batches
        (see ``torch_dataset.TorchIterableDataset``); each pass over it is a pass
        over this iterator."""
        from .torch_utils import import_torch

        import_torch("to_torch()")
        from .torch_dataset import TorchIterableDataset

        return TorchIterableDataset(
            self, label_column=label_column, feature_columns=feature_columns,
            label_column_dtype=label_column_dtype, feature_column_dtypes=feature_column_dtypes,
            batch_size=batch_size, prefetch_batches=prefetch_batches, drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed, unsqueeze_label_tensor=unsqueeze_label_tensor,
            unsqueeze_feature_tensors=unsqueeze_feature_tensors)


class DatasetIterator(DataIterator):
    """``Dataset.iterator()``: each pass is a new run of the dataset."""

    def __init__(self, ds: Any):
        self._ds = ds

    def _block_stream(self) -> BlockStream:
        from .iterator import iter_blocks

        run = self._ds._run()
        return (lambda: iter_blocks(run.bundles, run.executor)), run.bundles.close

    def __repr__(self) -> str:
        return f"DataIterator({self._ds!r})"
