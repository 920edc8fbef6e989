"""``FedexecWrapper``: how Modin runs a function remotely and reaches its results.

Modin's partitions and I/O dispatchers call five class methods (``deploy``,
``materialize``, ``put``, ``wait``, ``is_future``) on their *execution wrapper*;
this is fedexec's, the counterpart of Modin's ``DaskWrapper``/``RayWrapper``.

Modin (like Dask) expects futures *anywhere* in a call's arguments to be replaced
by their values: a partition's call queue ``[[func_ref, args, kwargs], ...]``, an
axis function's ``f_kwargs={"call_queue": [...]}``. fedexec resolves only refs
passed directly as arguments and leaves nested ones as refs (its core rule), so
``deploy`` does the nesting explicitly::

    deploy(func, f_args, f_kwargs, num_returns=n)
        │ walk func, f_args, f_kwargs (list / tuple / dict, exact types): every
        │ ObjectRef -> _Slot(i), the i-th distinct ref, collected in order
        ▼
    executor.options(num_returns=n).submit(_run_deployed, _Call(...), ref_0, ref_1, ...)
        │ fedexec resolves the top-level refs to their values (zero-copy on native)
        ▼
    _run_deployed on a worker: each _Slot(i) replaced by value i, func(*args, **kwargs)
        ▼
    ObjectRef (or a list of n of them): the partition's data, its metadata

``materialize`` does the same walk on the caller side (one ``get`` for all refs of
a nested structure), as ``distributed.Client.gather`` does for Dask.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import pandas
from modin.config import CpuCount, MinColumnPartitionSize, MinRowPartitionSize, NPartitions

from fedexec import ObjectRef

from ._engine import get_executor

__all__ = ["FedexecWrapper"]

# How deep deploy/materialize look into lists, tuples and dicts for refs. Modin's
# deepest nesting is an axis function's call queue: f_kwargs -> queue -> entry ->
# args -> a list of refs (depth 4).
_MAX_DEPTH = 8

# Modin settings that code running in tasks reads (the readers split what they
# parse by the minimum partition sizes). The caller's values travel with every
# task, so a ``modin.config`` change made in the driver after the worker processes
# started applies in them too.
_SHIPPED_CONFIG = (MinRowPartitionSize, MinColumnPartitionSize, NPartitions, CpuCount)


class _Slot:
    """Marker left in a call in place of the ``index``-th distinct ref."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return _Slot, (self.index,)

    def __repr__(self) -> str:
        return f"_Slot({self.index})"


class _Call:
    """What a task runs: ``func(*args, **kwargs)`` with markers for the refs, under
    the caller's values of ``_SHIPPED_CONFIG``."""

    __slots__ = ("args", "config", "func", "kwargs", "return_pandas_df")

    def __init__(self, func: Any, args: Any, kwargs: Any, return_pandas_df: bool | None,
                 config: tuple[Any, ...]):
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.return_pandas_df = return_pandas_df
        self.config = config

    def __reduce__(self) -> tuple[Any, ...]:
        return _Call, (self.func, self.args, self.kwargs, self.return_pandas_df, self.config)


def _config_values() -> tuple[Any, ...]:
    return tuple(param.get() for param in _SHIPPED_CONFIG)


def _apply_config(values: tuple[Any, ...]) -> None:
    for param, value in zip(_SHIPPED_CONFIG, values):
        if param.get() != value:
            param.put(value)


def _map_nested(value: Any, leaf: Callable[[Any], Any], depth: int = 0) -> Any:
    """``value`` with ``leaf(item)`` in place of each item inside lists, tuples and
    dicts (exact types, up to ``_MAX_DEPTH`` deep); ``leaf`` returns an item it does
    not replace as is. Containers where nothing changed are returned as they are
    (same object)."""
    replaced = leaf(value)
    if replaced is not value or depth >= _MAX_DEPTH:
        return replaced
    kind = type(value)
    if kind is list or kind is tuple:
        items = [_map_nested(v, leaf, depth + 1) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return kind(items)
    if kind is dict:
        new = {k: _map_nested(v, leaf, depth + 1) for k, v in value.items()}
        if all(new[k] is v for k, v in value.items()):
            return value
        return new
    return value


def _extract(value: Any, refs: dict[ObjectRef[Any], int]) -> Any:
    """``value`` with each ref in it replaced by a ``_Slot`` (``refs`` numbers them);
    containers without refs are returned as they are (same object)."""

    def slot(item: Any) -> Any:
        if not isinstance(item, ObjectRef):
            return item
        index = refs.get(item)
        if index is None:
            index = refs[item] = len(refs)
        return _Slot(index)

    return _map_nested(value, slot)


def _restore(value: Any, values: list[Any] | tuple[Any, ...]) -> Any:
    """The inverse of :func:`_extract`: each ``_Slot(i)`` becomes ``values[i]``."""
    return _map_nested(value, lambda item: values[item.index] if type(item) is _Slot else item)


_MODIN_FUTURE_WARNINGS = ("ignore", None, FutureWarning, re.compile(r"modin\."), 0)


def _silence_modin_future_warnings() -> None:
    """Hide pandas' ``FutureWarning``s raised from Modin's own code, as Modin does on
    its Dask, Ray and unidist workers (the user's functions still warn). Checked on
    every task: ``warnings.catch_warnings`` blocks (pytest's, say) drop the filter."""
    if _MODIN_FUTURE_WARNINGS not in warnings.filters:
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"modin\.")


def _run_deployed(call: _Call, *values: Any) -> Any:
    """The task body of every ``deploy``: ``values`` are the refs' values (fedexec
    resolved them, as they are top-level arguments)."""
    _silence_modin_future_warnings()
    _apply_config(call.config)
    func, args, kwargs = call.func, call.args, call.kwargs
    if values:
        func = _restore(func, values)
        args = _restore(args, values)
        kwargs = _restore(kwargs, values)
    result = func(*args, **kwargs)
    if call.return_pandas_df and not isinstance(result, pandas.DataFrame):
        result = pandas.DataFrame(result)
    return result


def _task_name(func: Any) -> str:
    if isinstance(func, ObjectRef):
        return "modin"
    return f"modin:{getattr(func, '__qualname__', type(func).__name__)}"


class FedexecWrapper:
    """Modin's execution wrapper for fedexec: runs functions as fedexec tasks and
    keeps their results as :class:`fedexec.ObjectRef` in the object store."""

    @classmethod
    def deploy(cls, func: Callable[..., Any] | ObjectRef[Any], f_args: Any = None,
               f_kwargs: dict[str, Any] | None = None, return_pandas_df: bool | None = None,
               num_returns: int = 1, pure: bool = True) -> Any:
        """Run ``func(*f_args, **f_kwargs)`` as a task on :func:`get_executor`.

        Args:
            func: a callable, or a ref to one (see :meth:`put`).
            f_args, f_kwargs: its arguments; refs in them, also inside lists, tuples
                and dicts, are replaced by their values on the worker.
            return_pandas_df: wrap a result that is not a DataFrame in one.
            num_returns: how many values ``func`` returns (each gets its own ref).
            pure: ignored (Dask's option; fedexec never deduplicates tasks).

        Returns:
            An ObjectRef, or a list of ``num_returns`` of them when it is not 1.
        """
        refs: dict[ObjectRef[Any], int] = {}
        call = _Call(
            _extract(func, refs),
            _extract(tuple(f_args) if f_args is not None else (), refs),
            _extract(f_kwargs if f_kwargs is not None else {}, refs),
            return_pandas_df,
            _config_values(),
        )
        executor = get_executor().options(num_returns=num_returns, name=_task_name(func))
        return executor.submit(_run_deployed, call, *refs)

    @classmethod
    def is_future(cls, item: Any) -> bool:
        """Whether ``item`` is a fedexec ObjectRef."""
        return isinstance(item, ObjectRef)

    @classmethod
    def materialize(cls, obj_id: Any) -> Any:
        """The value of a ref; for a list, tuple or dict holding refs, a copy with each
        ref replaced by its value (all fetched with one ``get``); anything else as is."""
        if isinstance(obj_id, ObjectRef):
            return get_executor().get(obj_id)
        refs: dict[ObjectRef[Any], int] = {}
        packed = _extract(obj_id, refs)
        if not refs:
            return obj_id
        return _restore(packed, get_executor().get(list(refs)))

    @classmethod
    def put(cls, data: Any, **kwargs: Any) -> Any:
        """Store ``data`` in the object store and return its ref.

        Callables are returned unchanged: Modin caches what ``put`` returns for its
        helper functions in class attributes for the life of the process, and a
        ref would not outlive the executor that holds it (functions are small and
        travel inside the task; ``preprocess_func`` of the partition class does
        store user functions, once per operation). ``kwargs`` (Dask's ``hash``,
        ``broadcast``) are ignored.
        """
        if callable(data):
            return data
        return get_executor().put(data)

    @classmethod
    def wait(cls, obj_ids: Any, num_returns: int | None = None) -> None:
        """Block until ``num_returns`` (default: all) of the refs among ``obj_ids`` (a
        ref or an iterable; other items are ignored) are done, without fetching them."""
        items = [obj_ids] if isinstance(obj_ids, ObjectRef) else obj_ids
        refs = list(dict.fromkeys(i for i in items if isinstance(i, ObjectRef)))
        if refs:
            n = len(refs) if num_returns is None else min(num_returns, len(refs))
            get_executor().wait(refs, num_returns=n)
