"""``@serve.ingress(app)``: a class deployment answering HTTP with an ASGI app
(FastAPI or starlette) under the deployment's route prefix.

Routes whose endpoints are methods of the class are re-added in each replica
bound to that replica's instance, so ``self`` is the replica's object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fedexec.util.serialization import loads as safe_loads

C = TypeVar("C", bound=type)

_ATTR = "__fedexec_serve_asgi_app__"


class Portable:
    """Holds an object that may reach a starlette app (an ingress class, the app
    itself, a pydantic model whose namespace holds the app) so that it pickles:
    starlette's ``State`` does not survive pickle as it is, so each ``State`` is
    pickled as a new one holding the same values."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load, (_dump(self.value),))


def _dump(app: Any) -> bytes:
    import io

    import cloudpickle

    try:
        from starlette.datastructures import State
    except ImportError:
        return cloudpickle.dumps(app)

    class _Pickler(cloudpickle.CloudPickler):
        def reducer_override(self, obj: Any) -> Any:
            if type(obj) is State:
                return (State, (dict(obj._state),))
            return super().reducer_override(obj)

    buf = io.BytesIO()
    _Pickler(buf).dump(app)
    return buf.getvalue()


def _load(blob: bytes) -> Portable:
    return Portable(safe_loads(blob))


def ingress(app: Any) -> Callable[[C], C]:
    """Serve the class's HTTP requests with the ASGI ``app`` (e.g. a FastAPI app)."""
    if not callable(app):
        raise TypeError(f"serve.ingress takes an ASGI app such as FastAPI(), got "
                        f"{type(app).__name__}")

    def decorate(cls: C) -> C:
        if not isinstance(cls, type):
            raise TypeError("@serve.ingress decorates a class (then @serve.deployment); "
                            f"got {type(cls).__name__}")
        setattr(cls, _ATTR, Portable(app))
        return cls

    return decorate


def bound_asgi_app(cls: type, instance: Any) -> Any:
    """The class's ingress app with its method routes bound to ``instance``; None
    when the class has no ingress. Each replica binds a copy of its own (replicas
    may share a process: actors as threads on the local backend)."""
    holder = getattr(cls, _ATTR, None)
    if holder is None:
        return None
    app = _load(_dump(holder.value)).value
    routes = getattr(getattr(app, "router", None), "routes", None)
    if routes is None or not hasattr(app, "add_api_route"):
        return app  # a plain ASGI app: served as it is
    for index, route in enumerate(list(routes)):
        endpoint = getattr(route, "endpoint", None)
        name = getattr(endpoint, "__name__", "")
        method = getattr(cls, name, None) if name else None
        if endpoint is None or getattr(method, "__qualname__", None) != endpoint.__qualname__:
            continue  # not a method of the class: served as it is
        app.add_api_route(route.path, getattr(instance, name),
                          methods=list(route.methods or ["GET"]), name=route.name,
                          response_model=getattr(route, "response_model", None),
                          status_code=getattr(route, "status_code", None))
        routes[index] = routes.pop()  # the bound route takes the method's place
    app.middleware_stack = None
    return app
