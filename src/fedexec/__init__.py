"""fedexec: parallel and distributed Python on ``concurrent.futures``.

One program, written against ``Executor`` / ``ObjectRef`` / actors, runs in one
process (``local``), on fedexec's own runtime (``native``), or on Dask or Spark,
by changing ``backend=``. Public names are re-exported here; everything else is
private. Libraries (``fedexec.tune``, ``fedexec.integrations`` ...) are imported
lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import backends, exceptions
from ._api import (
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_actor,
    get_gpu_ids,
    get_runtime_context,
    kill,
    nodes,
    placement_group,
    put,
    remove_placement_group,
    wait,
)
from ._runtime import RuntimeContext
from ._version import __version__
from .actors import ActorHandle, ActorMethod
from .exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    AuthenticationError,
    BackendUnavailableError,
    BrokenExecutorError,
    ClusterUnreachableError,
    FedexecError,
    GetTimeoutError,
    NodeDiedError,
    ObjectLostError,
    ObjectStoreFullError,
    OutOfMemoryError,
    RuntimeEnvSetupError,
    SerializationError,
    TaskCancelledError,
    TaskError,
    UnsupportedOnBackendError,
    WorkerCrashedError,
)
from .executor import (
    DEFAULT_BACKEND,
    Executor,
    current_executor,
    init,
    is_initialized,
    shutdown,
)
from .options import NodeAffinity, PlacementGroupStrategy
from .placement import PlacementGroup
from .refs import ObjectRef
from .remote import ActorClass, RemoteFunction, remote

__all__ = [
    "DEFAULT_BACKEND",
    "ActorClass",
    "ActorDiedError",
    "ActorHandle",
    "ActorMethod",
    "ActorUnavailableError",
    "AuthenticationError",
    "BackendUnavailableError",
    "BrokenExecutorError",
    "ClusterUnreachableError",
    "Executor",
    "FedexecError",
    "GetTimeoutError",
    "NodeAffinity",
    "NodeDiedError",
    "ObjectLostError",
    "ObjectRef",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "PlacementGroup",
    "PlacementGroupStrategy",
    "RemoteFunction",
    "RuntimeContext",
    "RuntimeEnvSetupError",
    "SerializationError",
    "TaskCancelledError",
    "TaskError",
    "UnsupportedOnBackendError",
    "WorkerCrashedError",
    "__version__",
    "available_resources",
    "backends",
    "cancel",
    "cluster_resources",
    "current_executor",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "nodes",
    "placement_group",
    "put",
    "remote",
    "remove_placement_group",
    "shutdown",
    "wait",
]

_LAZY = {"cluster", "data", "integrations", "rl", "serve", "train", "tune", "util"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'fedexec' has no attribute {name!r}")
