"""Modin on fedexec: the ``"Fedexec"`` engine for ``modin.pandas``.

Usage::

    import fedexec.integrations.modin        # registers the engine (idempotent)
    import modin.config
    import modin.pandas as pd

    modin.config.Engine.put("Fedexec")       # or MODIN_ENGINE=Fedexec in the environment
    df = pd.read_csv("data.csv")             # blocks are parsed in fedexec tasks
    modin.pandas.io.to_pandas(df.groupby("key").agg("sum"))

Modin initialises the engine when it first needs it (the first frame or read):
it uses the default executor (``fedexec.init()`` with its defaults if there is
none), or the one given to ``fedexec.integrations.modin.set_executor(ex)``, and
sizes ``modin.config.NPartitions`` and ``CpuCount`` to its cluster's CPUs (unless
the user set them). ``modin.config`` values set in the driver (the minimum
partition sizes, NPartitions, CpuCount) travel with each task to the workers.

How a Modin frame maps onto fedexec::

    modin.pandas.DataFrame ─▶ PandasQueryCompiler ─▶ PandasOnFedexecDataframe
        │ partitions: 2-D NumPy array of PandasOnFedexecDataframePartition
        │   each: ObjectRef of a pandas DataFrame in the object store (shared
        │   memory on ``native``) + lazy call queue + length/width/node-id caches
        ▼
    an operation ─▶ FedexecWrapper.deploy(func, args)  (one fedexec task per block,
        │            or per row/column of blocks for full-axis operations)
        ▼
    results stay in the store as new ObjectRefs; ``to_pandas`` fetches them.

Modules: ``_engine`` (which executor, initialisation), ``_wrapper`` (the execution
wrapper: deploy/materialize/put/wait, nested refs), ``_partition`` (block
partition), ``_axis_partition`` (row/column partitions), ``_partition_manager``
(manager and frame classes), ``_io`` (readers/writers), ``_registration`` (the
factory and the engine/backend names).

Supported Modin versions: 0.37.x (``modin>=0.37,<0.38``): the engine plugs into
Modin's execution classes, whose interface changes between minor releases.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

try:
    import modin
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'fedexec.integrations.modin needs Modin: pip install "fedexec[modin]"') from exc

from ._engine import get_executor, initialize_fedexec, set_executor
from ._registration import BACKEND, ENGINE, PandasOnFedexecFactory, register
from ._wrapper import FedexecWrapper

__all__ = [
    "BACKEND",
    "ENGINE",
    "SUPPORTED_MODIN",
    "FedexecWrapper",
    "PandasOnFedexecDataframe",
    "PandasOnFedexecDataframeColumnPartition",
    "PandasOnFedexecDataframePartition",
    "PandasOnFedexecDataframePartitionManager",
    "PandasOnFedexecDataframeRowPartition",
    "PandasOnFedexecFactory",
    "PandasOnFedexecIO",
    "get_executor",
    "initialize_fedexec",
    "register",
    "set_executor",
]

# Modin's execution classes import most of Modin: loaded on first use.
_LAZY = {
    "PandasOnFedexecDataframe": "._partition_manager",
    "PandasOnFedexecDataframePartitionManager": "._partition_manager",
    "PandasOnFedexecDataframePartition": "._partition",
    "PandasOnFedexecDataframeColumnPartition": "._axis_partition",
    "PandasOnFedexecDataframeRowPartition": "._axis_partition",
    "PandasOnFedexecIO": "._io",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


#: The Modin release series this engine is written against (``modin>=0.37,<0.38``).
SUPPORTED_MODIN = "0.37"

if not modin.__version__.startswith(SUPPORTED_MODIN + "."):
    warnings.warn(
        f"fedexec.integrations.modin supports Modin {SUPPORTED_MODIN}.x, found "
        f"{modin.__version__}; Modin's engine interface changes between releases: "
        'pip install "fedexec[modin]"', RuntimeWarning, stacklevel=2)

register()
