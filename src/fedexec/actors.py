"""Actor handles and method proxies (``@remote`` classes are in ``fedexec.remote``).

``ActorHandle`` is what ``executor.actor(Cls)`` / ``Cls.remote()`` return: it names
one actor in one runtime. ``handle.method.remote(...)`` submits a call and returns
an ``ObjectRef``; calls from one caller run in submission order when
``max_concurrency == 1``. Handles pickle, so they can be passed to tasks and
other actors; unpickled, they bind to the runtime the code runs under.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import serialization
from ._runtime import current_backend
from .options import MethodOptions

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = ["ActorHandle", "ActorMethod"]

T = TypeVar("T")


def public_methods(cls: type) -> dict[str, bool]:
    """``{method name: is coroutine function}`` for the methods callable remotely."""
    out = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name != "__call__":
            continue
        if callable(member):
            out[name] = inspect.iscoroutinefunction(member)
    return out


def is_async_class(methods: dict[str, bool]) -> bool:
    """An actor is async when any of its methods is ``async def``."""
    return any(methods.values())


class ActorMethod:
    """``handle.method``: call it with ``.remote(...)``; ``.options(num_returns=2)``."""

    __slots__ = ("_handle", "_name", "_options")

    def __init__(self, handle: ActorHandle, name: str, options: MethodOptions | None = None):
        self._handle = handle
        self._name = name
        self._options = options or MethodOptions()

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit the call; an ``ObjectRef`` (a list of them if ``num_returns > 1``)."""
        h = self._handle
        refs = h._backend.submit_actor_call(h, self._name, args, kwargs, self._options)
        return refs[0] if self._options.num_returns == 1 else refs

    def options(self, **opts: Any) -> ActorMethod:
        """A copy of this method proxy with call options (``num_returns``, ``name``)."""
        return ActorMethod(self._handle, self._name, MethodOptions.make(self._options, **opts))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor methods cannot be called directly; use "
            f"handle.{self._name}.remote(...) instead"
        )

    def __repr__(self) -> str:
        return f"ActorMethod({self._handle._class_name}.{self._name})"


class ActorHandle(Generic[T]):
    """A handle to a running actor. Attribute access gives :class:`ActorMethod` s."""

    def __init__(
        self,
        actor_id: str,
        backend: Backend,
        class_name: str,
        methods: dict[str, bool],
        name: str | None = None,
        namespace: str | None = None,
        location: str | None = None,
    ):
        self._actor_id = actor_id
        self._backend = backend
        self._class_name = class_name
        self._methods = methods
        self._name = name
        self._namespace = namespace
        self._location = location  # backend data: where the actor lives (a node id)

    @property
    def actor_id(self) -> str:
        """The actor's id (hex string)."""
        return self._actor_id

    def __getattr__(self, item: str) -> ActorMethod:
        methods = self.__dict__.get("_methods")
        if methods is None or item not in methods:
            raise AttributeError(
                f"actor {self.__dict__.get('_class_name', '?')!r} has no method {item!r}"
            )
        return ActorMethod(self, item)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __repr__(self) -> str:
        return f"ActorHandle({self._class_name}, {self._actor_id})"

    def _state(self) -> dict[str, Any]:
        return {
            "class_name": self._class_name,
            "methods": self._methods,
            "name": self._name,
            "namespace": self._namespace,
            "location": self._location,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        serialization.note_contained(self)
        return (_rebuild_actor, (self._actor_id, self._state()))


def _rebuild_actor(actor_id: str, state: dict[str, Any]) -> ActorHandle[Any]:
    backend = current_backend()
    if backend is None:
        from .exceptions import ActorDiedError

        raise ActorDiedError(
            f"actor handle {actor_id} was unpickled outside any fedexec runtime"
        )
    return backend.resolve_actor(actor_id, state)
