"""The module-level API (``fedexec.get``, ``fedexec.put``, ...): each call goes to
the runtime running the current task, else to the default executor."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ._runtime import RuntimeContext
from .actors import ActorHandle
from .executor import current_executor
from .placement import PlacementGroup
from .refs import ObjectRef

__all__ = [
    "available_resources",
    "cancel",
    "cluster_resources",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "kill",
    "nodes",
    "placement_group",
    "put",
    "remove_placement_group",
    "wait",
]


def _owner_of(refs: Any) -> Any:
    """The executor that made ``refs`` when they all come from one live executor
    (so ``fedexec.get(ref)`` works on refs of any executor, as ``ray.get`` does),
    else the current executor."""
    items = [refs] if isinstance(refs, ObjectRef) else refs
    if isinstance(items, (list, tuple)) and items:
        backends = {id(r._backend): r._backend for r in items if isinstance(r, ObjectRef)}
        if len(backends) == 1:
            owner = getattr(next(iter(backends.values())), "executor", None)
            if owner is not None and not owner._is_shutdown:
                return owner
    return current_executor()


def get(refs: Any, *, timeout: float | None = None) -> Any:
    """``Executor.get`` on the executor that made ``refs`` (else the current one)."""
    return _owner_of(refs).get(refs, timeout=timeout)


def put(value: Any) -> ObjectRef[Any]:
    """``Executor.put`` on the current executor."""
    return current_executor().put(value)


def wait(refs: Iterable[ObjectRef[Any]], *, num_returns: int = 1,
         timeout: float | None = None) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
    """``Executor.wait`` on the executor that made ``refs`` (else the current one)."""
    if not isinstance(refs, (list, tuple)):
        refs = list(refs) if isinstance(refs, Iterable) and not isinstance(refs, (str, bytes)) \
            else refs
    return _owner_of(refs).wait(refs, num_returns=num_returns, timeout=timeout)


def cancel(ref: ObjectRef[Any], *, force: bool = False, recursive: bool = True) -> bool:
    """``Executor.cancel`` on the executor that made ``ref`` (else the current one)."""
    return _owner_of(ref).cancel(ref, force=force, recursive=recursive)


def kill(actor: ActorHandle[Any], *, no_restart: bool = True) -> None:
    """``Executor.kill`` on the executor the handle belongs to (else the current one)."""
    owner = getattr(getattr(actor, "_backend", None), "executor", None)
    if owner is None or owner.is_shutdown:
        owner = current_executor()
    owner.kill(actor, no_restart=no_restart)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle[Any]:
    """``Executor.get_actor`` on the current executor."""
    return current_executor().get_actor(name, namespace)


def cluster_resources() -> dict[str, float]:
    """``Executor.cluster_resources`` on the current executor."""
    return current_executor().cluster_resources()


def available_resources() -> dict[str, float]:
    """``Executor.available_resources`` on the current executor."""
    return current_executor().available_resources()


def nodes() -> list[dict[str, Any]]:
    """``Executor.nodes`` on the current executor."""
    return current_executor().nodes()


def placement_group(bundles: Sequence[dict[str, float]], strategy: str = "PACK",
                    name: str | None = None) -> PlacementGroup:
    """``Executor.placement_group`` on the current executor."""
    return current_executor().placement_group(bundles, strategy=strategy, name=name)


def remove_placement_group(pg: PlacementGroup) -> None:
    """``Executor.remove_placement_group`` on the current executor."""
    current_executor().remove_placement_group(pg)


def get_runtime_context() -> RuntimeContext:
    """Where this code runs: ``node_id``, ``worker_id``, ``task_id``, ``actor_id``,
    ``job_id``, ``node_ip_address``, ``gpu_ids``, ``namespace`` (inside a task or
    actor: that task's)."""
    return current_executor().get_runtime_context()


def get_gpu_ids() -> list[str]:
    """The GPU ids given to the running task or actor (``[]`` on CPU or in a driver)."""
    return get_runtime_context().get_gpu_ids()
