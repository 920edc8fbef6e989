"""``PandasOnFedexecDataframePartition``: one block of a Modin frame, a pandas
DataFrame held in fedexec's object store.

A partition holds::

    _data           ObjectRef of the pandas DataFrame (shared memory on ``native``)
    call_queue      [[func, args, kwargs], ...] deferred calls, run by the next task
    _length_cache   int, or an ObjectRef of it, or None (not known yet)
    _width_cache    same, for the number of columns
    _ip_cache       id of the fedexec node holding the data (Modin calls it "ip"),
                    or an ObjectRef of it

``apply`` starts one task running the queued calls and the new one on the block;
the task returns the new block and its node id (``num_returns=2``). On ``native``
the task sees the block as a zero-copy, read-only view of shared memory; a call
that fails with ``ValueError`` (pandas writing in place) is run again on a copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas
from modin.core.dataframe.pandas.partitioning.partition import PandasDataframePartition
from modin.pandas.indexing import compute_sliced_len

import fedexec
from fedexec import ObjectRef

from ._engine import get_executor
from ._wrapper import FedexecWrapper

__all__ = ["PandasOnFedexecDataframePartition", "node_id"]


def node_id() -> str:
    """The id of the fedexec node this code runs on (Modin's partition "ip")."""
    return fedexec.get_runtime_context().node_id


def _call_on_block(func: Callable[..., Any], df: Any, *args: Any, **kwargs: Any) -> Any:
    """``func(df, *args, **kwargs)``; on ``ValueError`` once more on a copy of ``df``.

    On ``native`` a block arrives as a zero-copy, read-only view of shared memory,
    and pandas raises ``ValueError`` when an operation writes into it in place
    (Modin's Ray and unidist engines retry the same way).
    """
    try:
        return func(df, *args, **kwargs)
    except ValueError:
        if not isinstance(df, (pandas.DataFrame, pandas.Series)):
            raise
        return func(df.copy(), *args, **kwargs)


def apply_func(partition: pandas.DataFrame, func: Callable[..., Any], *args: Any,
               **kwargs: Any) -> tuple[Any, str]:
    """Task body: ``func(partition, *args, **kwargs)`` and the node id."""
    return _call_on_block(func, partition, *args, **kwargs), node_id()


def apply_list_of_funcs(call_queue: list[Any], partition: pandas.DataFrame) -> tuple[Any, str]:
    """Task body: run a call queue on ``partition``; returns the result and node id."""
    for func, f_args, f_kwargs in call_queue:
        partition = _call_on_block(func, partition, *f_args, **f_kwargs)
    return partition, node_id()


def _empty_frame(df: pandas.DataFrame) -> pandas.DataFrame:
    return pandas.DataFrame([])


class PandasOnFedexecDataframePartition(PandasDataframePartition):
    """A block partition whose data is a :class:`fedexec.ObjectRef`.

    Args:
        data: ref to the pandas DataFrame.
        length, width: its shape, or refs to them, if known.
        ip: id of the node holding it, or a ref to it.
        call_queue: deferred ``[func, args, kwargs]`` calls.
    """

    execution_wrapper = FedexecWrapper
    # Modin would ``put`` ``_iloc`` once per process and keep the ref in this class
    # attribute; a ref must not outlive its executor, so the function itself is used.
    _iloc_func = staticmethod(PandasDataframePartition._iloc)

    def __init__(self, data: ObjectRef[Any], length: Any = None, width: Any = None,
                 ip: Any = None, call_queue: list[Any] | None = None):
        super().__init__()
        if not isinstance(data, ObjectRef):
            raise TypeError(f"partition data must be a fedexec ObjectRef, got {data!r}")
        self._data = data
        self.call_queue = [] if call_queue is None else call_queue
        self._length_cache = length
        self._width_cache = width
        self._ip_cache = ip

    def _deploy_queue(self, call_queue: list[Any]) -> list[ObjectRef[Any]]:
        """Start the task running ``call_queue`` on this block: [data ref, node ref]."""
        if len(call_queue) > 1:
            return self.execution_wrapper.deploy(
                func=apply_list_of_funcs, f_args=(call_queue, self._data), num_returns=2)
        # One call: passed unpacked, so its refs are top-level (a bit faster).
        func, f_args, f_kwargs = call_queue[0]
        return self.execution_wrapper.deploy(
            func=apply_func, f_args=(self._data, func, *f_args), f_kwargs=f_kwargs,
            num_returns=2)

    def apply(self, func: Any, *args: Any, **kwargs: Any) -> PandasOnFedexecDataframePartition:
        """A new partition: the queued calls and ``func(df, *args, **kwargs)`` run in
        one task on this block."""
        data, ip = self._deploy_queue([*self.call_queue, [func, args, kwargs]])
        return self.__constructor__(data, ip=ip)

    def drain_call_queue(self) -> None:
        """Run the queued calls now (one task); this partition then holds the result."""
        if not self.call_queue:
            return
        call_queue = self.call_queue
        self._data, self._ip_cache = self._deploy_queue(call_queue)
        self.call_queue = []

    def wait(self) -> None:
        """Block until this partition's data is computed."""
        self.drain_call_queue()
        self.execution_wrapper.wait(self._data)

    def mask(self, row_labels: Any, col_labels: Any) -> PandasOnFedexecDataframePartition:
        """Lazily select ``row_labels``/``col_labels`` (positions) of this block."""
        new_obj = super().mask(row_labels, col_labels)
        if isinstance(row_labels, slice) and isinstance(self._length_cache, ObjectRef):
            if row_labels == slice(None):
                new_obj._length_cache = self._length_cache
            else:
                new_obj._length_cache = self.execution_wrapper.deploy(
                    func=compute_sliced_len, f_args=(row_labels, self._length_cache))
        if isinstance(col_labels, slice) and isinstance(self._width_cache, ObjectRef):
            if col_labels == slice(None):
                new_obj._width_cache = self._width_cache
            else:
                new_obj._width_cache = self.execution_wrapper.deploy(
                    func=compute_sliced_len, f_args=(col_labels, self._width_cache))
        return new_obj

    def __copy__(self) -> PandasOnFedexecDataframePartition:
        return self.__constructor__(self._data, length=self._length_cache,
                                    width=self._width_cache, ip=self._ip_cache,
                                    call_queue=self.call_queue)

    @classmethod
    def put(cls, obj: pandas.DataFrame) -> PandasOnFedexecDataframePartition:
        """Store the pandas DataFrame ``obj`` and wrap it in a partition."""
        return cls(get_executor().put(obj), len(obj.index), len(obj.columns))

    @classmethod
    def preprocess_func(cls, func: Callable[..., Any]) -> ObjectRef[Any]:
        """Store ``func`` once for an operation over many partitions (it is pickled
        now, while Modin turns the Modin frames it captures into pandas ones)."""
        return get_executor().put(func)

    def length(self, materialize: bool = True) -> Any:
        """Number of rows (an int; a ref to it if ``materialize=False`` and unknown)."""
        if self._length_cache is None:
            self._length_cache = self.apply(self._length_extraction_fn())._data
        if materialize and isinstance(self._length_cache, ObjectRef):
            self._length_cache = self.execution_wrapper.materialize(self._length_cache)
        return self._length_cache

    def width(self, materialize: bool = True) -> Any:
        """Number of columns (an int; a ref to it if ``materialize=False`` and unknown)."""
        if self._width_cache is None:
            self._width_cache = self.apply(self._width_extraction_fn())._data
        if materialize and isinstance(self._width_cache, ObjectRef):
            self._width_cache = self.execution_wrapper.materialize(self._width_cache)
        return self._width_cache

    def ip(self, materialize: bool = True) -> Any:
        """Id of the fedexec node holding the data (a ref to it if not materialized)."""
        if self._ip_cache is None:
            self._ip_cache = self.apply(_empty_frame)._ip_cache
        if materialize and isinstance(self._ip_cache, ObjectRef):
            self._ip_cache = self.execution_wrapper.materialize(self._ip_cache)
        return self._ip_cache
