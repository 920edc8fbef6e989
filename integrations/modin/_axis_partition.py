"""Axis (virtual) partitions: a full row or column of blocks, run as one task.

The task gets every block of the axis as a top-level ref (so fedexec hands it the
DataFrames), concatenates them, runs the function and splits the result again::

    deploy(_deploy_fedexec_func, (deployer, axis, func, f_args, f_kwargs, ..., *block_refs),
           num_returns=num_splits * 4)
        ──▶ [df_0, len_0, width_0, node_0, df_1, ...]  each its own ObjectRef

``f_args``/``f_kwargs`` may themselves hold refs (a drained call queue): the
wrapper resolves those too (see ``_wrapper``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas
from modin.core.dataframe.pandas.partitioning.axis_partition import (
    PandasDataframeAxisPartition,
)

from ._partition import PandasOnFedexecDataframePartition, node_id
from ._wrapper import FedexecWrapper

__all__ = [
    "PandasOnFedexecDataframeColumnPartition",
    "PandasOnFedexecDataframeRowPartition",
    "PandasOnFedexecDataframeVirtualPartition",
]


def _deploy_fedexec_func(deployer: Callable[..., Any], axis: int, f_to_deploy: Any,
                         f_args: Any, f_kwargs: Any, *args: Any,
                         extract_metadata: bool = True, **kwargs: Any) -> Any:
    """Task body: ``deployer`` (one of ``PandasDataframeAxisPartition.deploy_*``) on
    the axis' blocks; with ``extract_metadata`` each result frame is followed by its
    length, width and node id."""
    result = deployer(axis, f_to_deploy, f_args, f_kwargs, *args, **kwargs)
    if not extract_metadata:
        return result
    node = node_id()
    if isinstance(result, pandas.DataFrame):
        return result, len(result), len(result.columns), node
    if all(isinstance(r, pandas.DataFrame) for r in result):
        return [x for r in result for x in (r, len(r), len(r.columns), node)]
    return [x for r in result for x in (r, None, None, node)]


class PandasOnFedexecDataframeVirtualPartition(PandasDataframeAxisPartition):
    """An axis partition over :class:`PandasOnFedexecDataframePartition` blocks.

    Args:
        list_of_partitions: the blocks (or axis partitions) it spans.
        get_ip: unused (Modin's signature).
        full_axis: whether it spans the whole axis.
        call_queue: deferred ``[func, args, kwargs]`` calls.
        length, width: its shape, or refs to it, if known.
    """

    axis: int | None = None
    _PARTITIONS_METADATA_LEN = 3  # (length, width, node id)
    partition_type = PandasOnFedexecDataframePartition

    @property
    def list_of_ips(self) -> list[Any]:
        """Node ids (or refs to them) of the blocks of this partition."""
        result = []
        for partition in self.list_of_block_partitions:
            partition.drain_call_queue()
            result.append(partition.ip(materialize=False))
        return result

    @classmethod
    def deploy_splitting_func(cls, axis: int, func: Any, f_args: Any, f_kwargs: Any,
                              num_splits: int, *partitions: Any,
                              extract_metadata: bool = False) -> Any:
        """Concatenate the blocks along ``axis`` and split with ``func`` in one task."""
        return FedexecWrapper.deploy(
            func=_deploy_fedexec_func,
            f_args=(PandasDataframeAxisPartition.deploy_splitting_func, axis, func, f_args,
                    f_kwargs, num_splits, *partitions),
            f_kwargs={"extract_metadata": extract_metadata},
            num_returns=(num_splits * (1 + cls._PARTITIONS_METADATA_LEN)
                         if extract_metadata else num_splits),
        )

    @classmethod
    def deploy_axis_func(cls, axis: int, func: Any, f_args: Any, f_kwargs: Any,
                         num_splits: int, maintain_partitioning: bool, *partitions: Any,
                         min_block_size: int, lengths: Any = None,
                         manual_partition: bool = False) -> Any:
        """Run ``func`` over the full axis made of ``partitions`` in one task; returns
        ``num_splits`` (or ``len(lengths)``) results, each with its metadata."""
        result_num_splits = len(lengths) if lengths else num_splits
        return FedexecWrapper.deploy(
            func=_deploy_fedexec_func,
            f_args=(PandasDataframeAxisPartition.deploy_axis_func, axis, func, f_args,
                    f_kwargs, num_splits, maintain_partitioning, *partitions),
            f_kwargs={"min_block_size": min_block_size, "lengths": lengths,
                      "manual_partition": manual_partition},
            num_returns=result_num_splits * (1 + cls._PARTITIONS_METADATA_LEN),
        )

    @classmethod
    def deploy_func_between_two_axis_partitions(
            cls, axis: int, func: Any, f_args: Any, f_kwargs: Any, num_splits: int,
            len_of_left: int, other_shape: Any, *partitions: Any,
            min_block_size: int) -> Any:
        """Run ``func`` on two full axes (the first ``len_of_left`` blocks are the left
        frame's) in one task; returns ``num_splits`` results with their metadata."""
        return FedexecWrapper.deploy(
            func=_deploy_fedexec_func,
            f_args=(PandasDataframeAxisPartition.deploy_func_between_two_axis_partitions,
                    axis, func, f_args, f_kwargs, num_splits, len_of_left, other_shape,
                    *partitions),
            f_kwargs={"min_block_size": min_block_size},
            num_returns=num_splits * (1 + cls._PARTITIONS_METADATA_LEN),
        )

    def wait(self) -> None:
        """Block until every block of this partition is computed."""
        self.drain_call_queue()
        FedexecWrapper.wait(self.list_of_blocks)


class PandasOnFedexecDataframeColumnPartition(PandasOnFedexecDataframeVirtualPartition):
    """A column of blocks (the function sees the full axis 0)."""

    axis = 0


class PandasOnFedexecDataframeRowPartition(PandasOnFedexecDataframeVirtualPartition):
    """A row of blocks (the function sees the full axis 1)."""

    axis = 1
