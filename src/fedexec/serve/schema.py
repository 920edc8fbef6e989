"""``serve.status()``'s result, in Ray's shape."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DeploymentStatusOverview:
    """One deployment: ``status`` is ``"HEALTHY"``, ``"UPDATING"``, ``"UNHEALTHY"`` or
    ``"DEPLOY_FAILED"``; ``replica_states`` counts replicas by state."""

    status: str
    message: str = ""
    replica_states: dict[str, int] = field(default_factory=dict)
    target_replicas: int = 0


@dataclass
class ApplicationStatusOverview:
    """One application: ``status`` is ``"RUNNING"``, ``"DEPLOYING"``, ``"UNHEALTHY"``,
    ``"DEPLOY_FAILED"`` or ``"DELETING"``."""

    status: str
    message: str = ""
    route_prefix: str | None = None
    deployments: dict[str, DeploymentStatusOverview] = field(default_factory=dict)


@dataclass
class ProxyStatus:
    """The HTTP proxy of one node: ``status`` is ``"STARTING"``, ``"HEALTHY"`` or
    ``"UNHEALTHY"`` (``message`` says why; it is started again)."""

    host: str
    port: int | None
    status: str
    pid: int | None = None
    message: str = ""


@dataclass
class ServeStatus:
    applications: dict[str, ApplicationStatusOverview] = field(default_factory=dict)
    http_options: dict[str, Any] = field(default_factory=dict)
    proxies: dict[str, ProxyStatus] = field(default_factory=dict)  # by node id

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ServeStatus:
        apps = {}
        for name, app in raw["applications"].items():
            deps = {d: DeploymentStatusOverview(s["status"], s["message"],
                                                dict(s["replica_states"]),
                                                s["target_replicas"])
                    for d, s in app["deployments"].items()}
            apps[name] = ApplicationStatusOverview(app["status"], app["message"],
                                                   app["route_prefix"], deps)
        proxies = {node: ProxyStatus(p["host"], p["port"], p["status"], p["pid"], p["message"])
                   for node, p in raw.get("proxies", {}).items()}
        return cls(apps, dict(raw.get("http_options", {})), proxies)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
