"""What the driver's backend and a lease's runtime share: the name, the
capabilities, and the errors for what plain Spark does not have."""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn

from ...exceptions import UnsupportedOnBackendError
from ..base import Backend

__all__ = ["SparkBase"]

_ACTORS_HINT = (
    "plain Spark runs short tasks, not long-lived processes; use "
    "fedexec.integrations.spark.start_cluster(spark) to run the native runtime, "
    "actors included, on a Spark cluster"
)


class SparkBase(Backend):
    """Base of :class:`SparkBackend` and of the runtime tasks see inside a lease."""

    name: ClassVar[str] = "spark"
    #: Tasks run in Spark's Python worker processes (a dead one is detected and its
    #: task retried) and can be interrupted; Spark clusters span machines.
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"cancel_running", "worker_processes", "multi_node"})

    def _no_actors(self, feature: str, capability: str) -> NoReturn:
        err = self._unsupported(feature, capability)
        raise UnsupportedOnBackendError(f"{err}; {_ACTORS_HINT}")

    def create_actor(self, cls: type, args: Any, kwargs: Any, options: Any) -> Any:
        self._no_actors("actors", "actors")

    def submit_actor_call(self, handle: Any, method: str, args: Any, kwargs: Any,
                          options: Any) -> Any:
        self._no_actors("actors", "actors")

    def get_actor(self, name: str, namespace: str | None) -> Any:
        self._no_actors("named actors", "named_actors")

    def kill_actor(self, handle: Any, *, no_restart: bool) -> None:
        self._no_actors("actors", "actors")

    def resolve_actor(self, actor_id: str, state: dict[str, Any]) -> Any:
        self._no_actors("actors", "actors")
