"""``@serve.ingress(app)``: a class deployment answering HTTP with an ASGI app
(FastAPI or starlette) under the deployment's route prefix.

Routes whose endpoints are methods of the class are re-added in each replica
bound to that replica's instance, so ``self`` is the replica's object.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

C = TypeVar("C", bound=type)

_ATTR = "__fedexec_serve_asgi_app__"


def ingress(app: Any) -> Callable[[C], C]:
    """Serve the class's HTTP requests with the ASGI ``app`` (e.g. a FastAPI app)."""
    if not callable(app):
        raise TypeError(f"serve.ingress takes an ASGI app such as FastAPI(), got "
                        f"{type(app).__name__}")

    def decorate(cls: C) -> C:
        if not isinstance(cls, type):
            raise TypeError("@serve.ingress decorates a class (then @serve.deployment); "
                            f"got {type(cls).__name__}")
        setattr(cls, _ATTR, app)
        return cls

    return decorate


def bound_asgi_app(cls: type, instance: Any) -> Any:
    """The class's ingress app with its method routes bound to ``instance``; None
    when the class has no ingress."""
    app = getattr(cls, _ATTR, None)
    if app is None:
        return None
    routes = getattr(getattr(app, "router", None), "routes", None)
    if routes is None or not hasattr(app, "add_api_route"):
        return app  # a plain ASGI app: served as it is
    prefix = cls.__qualname__ + "."
    bound = copy.copy(app)
    bound.router = copy.copy(app.router)
    bound.router.routes = []
    bound.middleware_stack = None
    for route in routes:
        endpoint = getattr(route, "endpoint", None)
        name = getattr(endpoint, "__name__", "")
        if endpoint is not None and getattr(endpoint, "__qualname__", "").startswith(prefix) \
                and hasattr(instance, name):
            bound.add_api_route(route.path, getattr(instance, name),
                                methods=list(route.methods or ["GET"]), name=route.name,
                                response_model=getattr(route, "response_model", None),
                                status_code=getattr(route, "status_code", None))
        else:
            bound.router.routes.append(route)
    return bound
