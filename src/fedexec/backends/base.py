"""The Backend protocol: the only thing ``Executor`` talks to.

A backend runs tasks and actors and completes the ``ObjectRef`` s it returns.
``Executor`` validates input, turns options into :class:`TaskOptions` /
:class:`ActorOptions`, and implements ``get``/``wait``/``map`` generically on top
of the refs, so a backend writes only what differs between runtimes::

    Executor ──submit/put/cancel/actors/resources──▶ Backend ──completes──▶ ObjectRef

Features a backend lacks raise :class:`UnsupportedOnBackendError` (the default
implementations below), naming the backends that have them, and are declared
by the ``capabilities`` class attribute so tests skip by capability.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .._runtime import RuntimeContext, current_task
from ..exceptions import UnsupportedOnBackendError
from ._registry import CAPABILITIES, backends_with

if TYPE_CHECKING:
    from ..actors import ActorHandle
    from ..config import RuntimeConfig
    from ..options import ActorOptions, MethodOptions, TaskOptions
    from ..placement import PlacementGroup
    from ..refs import ObjectRef

__all__ = ["CAPABILITIES", "Backend"]

class Backend:
    """Base class of backends. Subclasses set ``name``/``capabilities`` and override
    the methods of the features they declare."""

    name: ClassVar[str] = "?"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: The backend options (``Executor(..., **backend_options)``) it reads; any
    #: other is a ``ValueError`` at construction.
    options: ClassVar[frozenset[str]] = frozenset()
    #: True if ``ref_released`` must be called when an ``ObjectRef`` is collected.
    tracks_refs: ClassVar[bool] = False

    def __init__(self, config: RuntimeConfig) -> None:
        self.check_options(config.backend_options)
        self.config = config
        #: The ``fedexec.Executor`` over this backend (set by the executor).
        self.executor: Any = None

    @classmethod
    def check_options(cls, backend_options: Mapping[str, Any]) -> None:
        """``ValueError`` naming any option this backend does not read."""
        unknown = sorted(set(backend_options) - cls.options)
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for the {cls.name!r} backend; it takes "
                f"{sorted(cls.options) or 'none'} (other settings are Executor arguments: "
                "num_cpus=, resources=, ...)")

    # -- tasks and objects -------------------------------------------------------
    def submit(
        self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions
    ) -> list[ObjectRef[Any]]:
        """Schedule ``fn(*args, **kwargs)``; return ``options.num_returns`` refs."""
        raise NotImplementedError

    def put(self, value: Any) -> ObjectRef[Any]:
        """Store ``value``; return a completed ref to it."""
        raise NotImplementedError

    def resolve_ref(self, ref_id: str) -> ObjectRef[Any]:
        """The ref for ``ref_id`` (called when a ref is unpickled in this runtime)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Send any batched messages now (someone is about to wait for a result)."""

    def ref_released(self, ref: ObjectRef[Any]) -> None:
        """An ``ObjectRef`` of this runtime was garbage-collected (``tracks_refs``).
        Called from ``__del__``: may run in any thread, must not block or lock."""

    def ref_escaping(self, ref: ObjectRef[Any]) -> None:
        """``ref`` is being pickled (it may reach another process): a backend whose
        refs may be known only here registers it where others can find it."""

    def cancel(self, ref: ObjectRef[Any], *, force: bool, recursive: bool) -> bool:
        """Cancel the task behind ``ref`` (API.md "cancel"); True if delivered."""
        raise self._unsupported("cancel", "cancel_running")

    def cancel_pending(self, ref: ObjectRef[Any]) -> bool:
        """``Future.cancel`` semantics: cancel only if not started; True if cancelled."""
        return False

    @contextlib.contextmanager
    def blocked(self, refs: Sequence[ObjectRef[Any]] = (), timeout: float | None = None,
                done: Callable[[], bool] | None = None) -> Iterator[None]:
        """Wrapped around a wait of at most ``timeout`` for the unfinished ``refs``
        (until ``done()``, by default until all are done). A backend may lend the
        waiting task's resources, fetch objects, report a long wait, or do the
        waiting itself (reading its connection in the waiting thread)."""
        yield

    # -- actors ------------------------------------------------------------------
    def create_actor(
        self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], options: ActorOptions
    ) -> ActorHandle[Any]:
        """Create an actor; return its handle (``get_if_exists`` honoured here)."""
        raise self._unsupported("actors", "actors")

    def submit_actor_call(
        self,
        handle: ActorHandle[Any],
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: MethodOptions,
    ) -> list[ObjectRef[Any]]:
        """Call ``method`` on the actor; return ``options.num_returns`` refs."""
        raise self._unsupported("actors", "actors")

    def get_actor(self, name: str, namespace: str | None) -> ActorHandle[Any]:
        """The named actor's handle; ``ValueError`` if there is none."""
        raise self._unsupported("named actors", "named_actors")

    def kill_actor(self, handle: ActorHandle[Any], *, no_restart: bool) -> None:
        """Kill the actor (restart it if ``no_restart`` is False and it may restart)."""
        raise self._unsupported("actors", "actors")

    def resolve_actor(self, actor_id: str, state: dict[str, Any]) -> ActorHandle[Any]:
        """A handle for ``actor_id`` (called when a handle is unpickled here)."""
        raise self._unsupported("actors", "actors")

    # -- cluster -----------------------------------------------------------------
    def cluster_resources(self) -> dict[str, float]:
        """Total resources of the cluster."""
        raise NotImplementedError

    def available_resources(self) -> dict[str, float]:
        """Resources not in use right now."""
        raise NotImplementedError

    def nodes(self) -> list[dict[str, Any]]:
        """One dict per node: ``node_id``, ``address``, ``alive``, ``resources``."""
        raise NotImplementedError

    def placement_group(
        self, bundles: Sequence[dict[str, float]], strategy: str, name: str | None
    ) -> PlacementGroup:
        """Reserve ``bundles`` atomically; return the group (``ready()`` tells when)."""
        raise self._unsupported("placement groups", "placement_groups")

    def remove_placement_group(self, pg: PlacementGroup) -> None:
        """Free the group's reservation."""
        raise self._unsupported("placement groups", "placement_groups")

    def runtime_context(self) -> RuntimeContext:
        """Where the calling driver code runs (tasks get theirs from the task context)."""
        raise NotImplementedError

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Stop accepting work; cancel queued work if asked; wait if asked; free all."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------
    def namespace_for(self, namespace: str | None) -> str:
        """The namespace of a named-actor operation: ``namespace`` if given, else the
        running task's (tasks and actors inherit their driver's, as in Ray), else
        this runtime's (``Executor(namespace=...)``, default ``"default"``)."""
        if namespace:
            return namespace
        task = current_task()
        if task is not None and task.backend is self:
            return task.runtime.namespace
        return self.config.namespace or "default"

    def _check_single_node_strategy(self, options: Any, node_id: str) -> None:
        """Scheduling strategies on a one-node runtime: affinity to another node is
        infeasible unless soft; placement groups are not available."""
        from ..options import NodeAffinity

        strategy = options.scheduling_strategy
        if isinstance(strategy, NodeAffinity):
            if strategy.node_id != node_id and not strategy.soft:
                raise ValueError(f"no alive node with id {strategy.node_id!r}")
        elif strategy not in ("DEFAULT", "SPREAD"):
            raise self._unsupported("placement groups", "placement_groups")

    def _unsupported(self, feature: str, capability: str) -> UnsupportedOnBackendError:
        others = ", ".join(backends_with(capability)) or "none yet"
        return UnsupportedOnBackendError(
            f"{feature} are not available on the {self.name!r} backend; "
            f"backends that have them: {others}"
        )
