"""Modin DataFrames to datasets and back, through Modin's ``"Fedexec"`` engine
(``fedexec.integrations.modin``, imported when used), whose partitions are refs
of pandas DataFrames in the same store as the blocks: both directions move refs.

``from_modin(df)``: Modin's ``unwrap_partitions(df, axis=0)`` gives one ref per
row of partitions (a task joins the row's column blocks, if several), then one
task per row makes it a block (``exchange.blocks_from_calls``).

``ds.to_modin()``: the dataset runs, each block becomes a pandas frame in a task
(``exchange.pandas_partitions``), and Modin's ``from_partitions(refs, axis=0)``
wraps the refs as the frame's row partitions, with the row counts and columns
given, so Modin computes nothing to build it. The index is ``0..n-1``, as
``to_pandas()`` gives.

Both need Modin's engine to be ``"Fedexec"`` on the dataset's executor (the refs
belong to one executor); ``to_modin`` selects that engine when the user has not
chosen one.
"""

from __future__ import annotations

from typing import Any

import fedexec

from .context import DataContext
from .dataset import Dataset, MaterializedDataset
from .exchange import blocks_from_calls, frame_to_block, pandas_partitions

__all__ = ["dataset_to_modin", "from_modin"]


def _modin_executor(what: str, *, select: bool) -> fedexec.Executor:
    """The executor Modin's tasks use, which must be the one datasets run on;
    with ``select``, first make ``"Fedexec"`` Modin's engine unless the user chose
    another one."""
    import modin.config as cfg

    import fedexec.integrations.modin as fm

    if select and cfg.Engine.get() != fm.ENGINE:
        if cfg.Backend.get_value_source() != cfg.ValueSource.DEFAULT:
            raise ValueError(
                f"{what} needs Modin's {fm.ENGINE!r} engine (its partitions are fedexec "
                f"refs), but Modin's engine is {cfg.Engine.get()!r}: call "
                f"modin.config.Engine.put({fm.ENGINE!r}) first")
        cfg.Engine.put(fm.ENGINE)
    modin_executor = fm.get_executor()
    data_executor = DataContext.get_current().resolve_executor()
    if modin_executor is not data_executor:
        raise ValueError(
            f"{what}: Modin's tasks run on {modin_executor!r} but datasets on "
            f"{data_executor!r}, and refs belong to one executor: run both on the same "
            "one (fedexec.integrations.modin.set_executor(ex) and "
            "fedexec.data.DataContext.get_current().executor = ex)")
    return data_executor


def from_modin(df: Any) -> MaterializedDataset:
    """A dataset of a Modin DataFrame (or Series) on the ``"Fedexec"`` engine,
    one block per row partition, in order (the index dropped); the partitions
    move by reference, never through the driver.

    Raises:
        TypeError: ``df`` is not a Modin frame.
        ValueError: Modin runs on another engine, or on another executor than
            datasets.
    """
    import modin.pandas as mpd
    from modin.distributed.dataframe.pandas import unwrap_partitions

    if isinstance(df, mpd.Series):
        df = df.to_frame()
    if not isinstance(df, mpd.DataFrame):
        raise TypeError(f"from_modin() takes a Modin DataFrame, got {type(df).__name__}")
    engine = type(df._query_compiler._modin_frame).__name__
    if engine != "PandasOnFedexecDataframe":
        raise ValueError(f"from_modin(): this frame is a {engine}, not on Modin's 'Fedexec' "
                         "engine: call modin.config.Engine.put('Fedexec') before making it "
                         "(or use from_pandas(modin.pandas.io.to_pandas(df)), which goes "
                         "through this process)")
    executor = _modin_executor("from_modin()", select=False)
    refs = unwrap_partitions(df, axis=0)
    return blocks_from_calls(executor, ((frame_to_block, (ref,), {"name": "FromModin"})
                                        for ref in refs))


def dataset_to_modin(ds: Dataset) -> Any:
    """``ds`` as a Modin DataFrame on the ``"Fedexec"`` engine, one row partition
    per block (see the module docstring)."""
    import pandas as pd
    from modin.distributed.dataframe.pandas import from_partitions

    _modin_executor("to_modin()", select=True)
    refs, meta, rows = pandas_partitions(ds, "ToModin")
    kept = [(ref, n) for ref, n in zip(refs, rows) if n > 0] or [(refs[0], rows[0])]
    return from_partitions([ref for ref, _ in kept], axis=0,
                           index=pd.RangeIndex(sum(n for _, n in kept)),
                           columns=meta.columns, row_lengths=[n for _, n in kept],
                           column_widths=[len(meta.columns)])
