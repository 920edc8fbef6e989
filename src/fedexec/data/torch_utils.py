"""PyTorch exchange: batches as tensors, ``to_torch``, ``from_torch``.

torch is imported only when one of these is used (``import fedexec.data`` never
imports it); without it they raise ``ImportError`` saying how to install it.

* ``iter_torch_batches``: each numpy batch (dict column → ndarray) becomes a
  dict column → tensor (``dtypes``, ``device``) on the prefetch thread, or is
  handed to the user's ``collate_fn`` (whose tensors are then moved to ``device``).
* ``to_torch``: a ``torch.utils.data.IterableDataset`` of ``(features, label)``
  (``torch_dataset.py``, imported lazily since it subclasses a torch class).
* ``from_torch``: a ``Datasource`` reading a map-style torch dataset by index
  ranges in parallel read tasks (an ``IterableDataset`` in one task); its
  samples become plain rows, kept as they are (tensors, tuples ...).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from .block import Block, BlockMetadata
from .datasource import Datasource, ReadTask

__all__ = ["TorchDatasource", "batch_to_tensors", "column_to_tensor", "from_torch",
           "import_torch", "torch_finalizer"]

INSTALL_HINT = "pip install torch==2.13.0"
#: Samples per block read by a ``from_torch`` read task.
_SAMPLES_PER_BLOCK = 1024


def import_torch(what: str) -> Any:
    """The ``torch`` module, or ``ImportError`` saying ``what`` needs it."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{what} needs PyTorch, which is not installed here: "
                          f"{INSTALL_HINT}") from e
    return torch


def resolve_device(torch: Any, device: Any) -> Any:
    """``device`` as a ``torch.device`` (``"auto"``: cuda when available, else cpu)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def column_to_tensor(torch: Any, name: str, values: np.ndarray, dtype: Any = None,
                     device: Any = None) -> Any:
    """One batch column as a tensor (an object column of equal-shape arrays is
    stacked first).

    Raises:
        TypeError: the column holds values that make no tensor (strings ...).
    """
    if values.dtype == object:
        try:
            values = np.stack([np.asarray(v) for v in values]) if len(values) else \
                values.astype(np.float64)
        except ValueError:
            pass
    if values.dtype.kind in "OUSV":
        raise TypeError(f"column {name!r} holds {values.dtype} values, which make no torch "
                        "tensor: drop it (select_columns/drop_columns) or pass collate_fn= "
                        "to build the batch yourself")
    if not values.flags.writeable:
        values = values.copy()  # torch refuses to share a read-only buffer
    return torch.as_tensor(values, dtype=dtype, device=device)


def batch_to_tensors(torch: Any, batch: Mapping[str, np.ndarray], dtypes: Any,
                     device: Any) -> dict[str, Any]:
    """A numpy batch as a dict column → tensor; ``dtypes`` is one torch dtype for
    every column or a dict column → dtype (others keep numpy's)."""
    out = {}
    for name, values in batch.items():
        dtype = dtypes.get(name) if isinstance(dtypes, Mapping) else dtypes
        out[name] = column_to_tensor(torch, name, values, dtype, device)
    return out


def move_to(torch: Any, value: Any, device: Any) -> Any:
    """``value`` with every tensor in it (dicts, lists, tuples) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: move_to(torch, v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(move_to(torch, v, device) for v in value)
    return value


def torch_finalizer(*, dtypes: Any, device: Any, collate_fn: Callable[[Any], Any] | None
                    ) -> Callable[[Any], Any]:
    """What turns a numpy batch into the batch ``iter_torch_batches`` yields.

    Raises:
        ImportError: torch is not installed.
        ValueError: both ``collate_fn`` and ``dtypes`` (the function picks the dtypes).
    """
    torch = import_torch("iter_torch_batches()")
    if collate_fn is not None and dtypes is not None:
        raise ValueError("iter_torch_batches(): collate_fn builds the tensors itself, so "
                         "dtypes cannot be given with it; set the dtypes in collate_fn")
    if collate_fn is not None and not callable(collate_fn):
        raise TypeError(f"collate_fn must be callable, got {collate_fn!r}")
    target = resolve_device(torch, device)
    if collate_fn is not None:
        fn = collate_fn
        if target.type == "cpu":
            return fn
        return lambda batch: move_to(torch, fn(batch), target)
    return lambda batch: batch_to_tensors(torch, batch, dtypes, target)


# --------------------------------------------------------------------------- from_torch
class TorchDatasource(Datasource):
    """The samples of a torch dataset as plain rows (``fedexec.data.from_torch``)."""

    def __init__(self, dataset: Any):
        torch = import_torch("from_torch()")
        self.iterable = isinstance(dataset, torch.utils.data.IterableDataset)
        if not self.iterable and not (hasattr(dataset, "__len__") and
                                      hasattr(dataset, "__getitem__")):
            raise TypeError("from_torch() takes a torch Dataset (with __len__ and "
                            "__getitem__) or an IterableDataset, got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset

    def get_name(self) -> str:
        return "Torch"

    def get_read_tasks(self, parallelism: int) -> list[ReadTask]:
        if self.iterable:
            return [ReadTask(_IterableRead(self.dataset), BlockMetadata(None, None))]
        n = len(self.dataset)
        parallelism = max(1, min(parallelism, n))
        bounds = [n * i // parallelism for i in range(parallelism + 1)]
        return [ReadTask(_IndexRead(self.dataset, lo, hi), BlockMetadata(hi - lo, None))
                for lo, hi in itertools.pairwise(bounds)]


class _IndexRead:
    """Samples ``lo..hi-1`` of a map-style dataset, in blocks."""

    def __init__(self, dataset: Any, lo: int, hi: int):
        self.dataset, self.lo, self.hi = dataset, lo, hi

    def __call__(self) -> Iterator[Block]:
        for start in range(self.lo, self.hi, _SAMPLES_PER_BLOCK):
            stop = min(self.hi, start + _SAMPLES_PER_BLOCK)
            yield [self.dataset[i] for i in range(start, stop)]


class _IterableRead:
    """Every sample of an ``IterableDataset``, in blocks."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __call__(self) -> Iterator[Block]:
        samples = iter(self.dataset)
        while True:
            block = list(itertools.islice(samples, _SAMPLES_PER_BLOCK))
            if not block:
                return
            yield block


def from_torch(dataset: Any, *, parallelism: int = -1) -> Any:
    """A dataset of a torch ``Dataset``'s samples as plain rows, kept as they are
    (read by ``parallelism`` tasks by index range; an ``IterableDataset`` by one).

    Raises:
        ImportError: torch is not installed.
        TypeError: ``dataset`` is not a torch dataset.
    """
    from .read_api import read_datasource

    return read_datasource(TorchDatasource(dataset), parallelism=parallelism)
