"""fedexec.serve: model serving over HTTP with replicas, batching and autoscaling.

Built on the public fedexec API only (a controller actor that recovers from a
checkpoint when it dies, one actor per replica, an HTTP proxy actor per node); needs a backend with actors, named actors and worker
processes (the native backend). Requests take a direct path: the proxy and
handles keep authenticated connections to each replica (see ``_wire``).
"""

from __future__ import annotations

from ._ingress import ingress
from .api import (
    delete,
    get_app_handle,
    get_deployment,
    get_deployment_handle,
    list_deployments,
    run,
    shutdown,
    start,
    status,
)
from .autoscaling import AutoscalingConfig
from .batching import batch
from .deployment import Application, Deployment, deployment
from .exceptions import (
    DeploymentFailedError,
    DeploymentNotFoundError,
    ReplicaDiedError,
    RequestTimeoutError,
    ServeError,
    ServeNotRunningError,
)
from .handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
from .schema import ApplicationStatusOverview, DeploymentStatusOverview, ProxyStatus, ServeStatus

__all__ = [
    "Application",
    "ApplicationStatusOverview",
    "AutoscalingConfig",
    "Deployment",
    "DeploymentFailedError",
    "DeploymentHandle",
    "DeploymentNotFoundError",
    "DeploymentResponse",
    "DeploymentResponseGenerator",
    "DeploymentStatusOverview",
    "ProxyStatus",
    "ReplicaDiedError",
    "RequestTimeoutError",
    "ServeError",
    "ServeNotRunningError",
    "ServeStatus",
    "batch",
    "delete",
    "deployment",
    "get_app_handle",
    "get_deployment",
    "get_deployment_handle",
    "ingress",
    "list_deployments",
    "run",
    "shutdown",
    "start",
    "status",
]
