"""The partition manager and the frame class of the ``PandasOnFedexec`` execution:
they bind Modin's generic pandas-frame algorithms to fedexec's partition classes."""

from __future__ import annotations

from typing import Any

from modin.core.dataframe.pandas.dataframe.dataframe import PandasDataframe
from modin.core.dataframe.pandas.partitioning.partition_manager import (
    PandasDataframePartitionManager,
)

from ._axis_partition import (
    PandasOnFedexecDataframeColumnPartition,
    PandasOnFedexecDataframeRowPartition,
)
from ._partition import PandasOnFedexecDataframePartition
from ._wrapper import FedexecWrapper

__all__ = ["PandasOnFedexecDataframe", "PandasOnFedexecDataframePartitionManager"]


class PandasOnFedexecDataframePartitionManager(PandasDataframePartitionManager):
    """Modin's partition manager over fedexec block and axis partitions."""

    _partition_class = PandasOnFedexecDataframePartition
    _column_partitions_class = PandasOnFedexecDataframeColumnPartition
    _row_partition_class = PandasOnFedexecDataframeRowPartition
    _execution_wrapper = FedexecWrapper

    @classmethod
    def wait_partitions(cls, partitions: Any) -> None:
        """Block until every block of ``partitions`` (a NumPy array of partitions) is
        computed, without fetching them."""
        cls._execution_wrapper.wait(
            [block for partition in partitions for block in partition.list_of_blocks])


class PandasOnFedexecDataframe(PandasDataframe):
    """A Modin pandas frame whose blocks live in fedexec's object store (arguments
    as for ``modin.core.dataframe.pandas.dataframe.dataframe.PandasDataframe``)."""

    _partition_mgr_cls = PandasOnFedexecDataframePartitionManager

    @property
    def engine(self) -> str:
        """The engine's name, ``"Fedexec"``."""
        return "Fedexec"
