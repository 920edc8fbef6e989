"""``to_torch``'s ``torch.utils.data.IterableDataset`` (imports torch: imported
only when ``to_torch`` is called)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from .torch_utils import column_to_tensor

__all__ = ["TorchIterableDataset"]


class TorchIterableDataset(torch.utils.data.IterableDataset):
    """Batches of ``(features, label)`` tensors from a ``DataIterator``; each
    iteration is a new pass over it.

    ``features``: with ``feature_columns`` None, every column but the label as
    one ``(batch, k)`` tensor; a list of names: those columns as one tensor; a
    list of lists: a list of such tensors; a dict name → list: a dict of them.
    One column gives ``(batch, 1)`` with ``unsqueeze_feature_tensors`` (else
    ``(batch,)``). ``label``: the ``label_column`` (``(batch, 1)`` with
    ``unsqueeze_label_tensor``), or None. Dtypes: ``label_column_dtype``;
    ``feature_column_dtypes`` one dtype, or a list/dict shaped as ``feature_columns``.
    """

    def __init__(self, source: Any, *, label_column: str | None, feature_columns: Any,
                 label_column_dtype: Any, feature_column_dtypes: Any, batch_size: int,
                 prefetch_batches: int, drop_last: bool, local_shuffle_buffer_size: int | None,
                 local_shuffle_seed: int | None, unsqueeze_label_tensor: bool,
                 unsqueeze_feature_tensors: bool):
        super().__init__()
        if isinstance(feature_columns, Mapping) and feature_column_dtypes is not None and \
                not isinstance(feature_column_dtypes, (Mapping, torch.dtype)):
            raise TypeError("feature_column_dtypes must be a dict (or one dtype) when "
                            "feature_columns is a dict")
        self.source = source
        self.label_column = label_column
        self.feature_columns = feature_columns
        self.label_dtype = label_column_dtype
        self.feature_dtypes = feature_column_dtypes
        self.unsqueeze_label = unsqueeze_label_tensor
        self.unsqueeze_features = unsqueeze_feature_tensors
        self.batch_args = dict(batch_size=batch_size, prefetch_batches=prefetch_batches,
                               drop_last=drop_last,
                               local_shuffle_buffer_size=local_shuffle_buffer_size,
                               local_shuffle_seed=local_shuffle_seed)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for batch in self.source.iter_batches(batch_format="numpy", **self.batch_args):
            label = None
            if self.label_column is not None:
                if self.label_column not in batch:
                    raise KeyError(f"to_torch(): no label column {self.label_column!r}; the "
                                   f"columns are {list(batch)}")
                label = self._tensor(batch, [self.label_column], self.label_dtype,
                                     self.unsqueeze_label)
            yield self._features(batch), label

    def _features(self, batch: dict[str, Any]) -> Any:
        cols, dtypes = self.feature_columns, self.feature_dtypes
        if cols is None:
            cols = [c for c in batch if c != self.label_column]
        if isinstance(cols, Mapping):
            return {key: self._tensor(batch, list(group), _pick(dtypes, key),
                                      self.unsqueeze_features)
                    for key, group in cols.items()}
        if cols and all(isinstance(c, Sequence) and not isinstance(c, str) for c in cols):
            return [self._tensor(batch, list(group), _pick(dtypes, i), self.unsqueeze_features)
                    for i, group in enumerate(cols)]
        return self._tensor(batch, list(cols), dtypes, self.unsqueeze_features)

    @staticmethod
    def _tensor(batch: dict[str, Any], columns: list[str], dtype: Any, unsqueeze: bool) -> Any:
        missing = [c for c in columns if c not in batch]
        if missing:
            raise KeyError(f"to_torch(): no columns {missing}; the columns are {list(batch)}")
        tensors = [column_to_tensor(torch, c, batch[c], dtype) for c in columns]
        if len(tensors) == 1:
            t = tensors[0]
            return t.unsqueeze(1) if unsqueeze and t.dim() == 1 else t
        return torch.cat([t.unsqueeze(1) if t.dim() == 1 else t for t in tensors], dim=1)


def _pick(dtypes: Any, key: Any) -> Any:
    """The dtype for one feature group: from a dict/list of them, or the one dtype."""
    if isinstance(dtypes, Mapping):
        return dtypes.get(key)
    if isinstance(dtypes, (list, tuple)):
        return dtypes[key]
    return dtypes
