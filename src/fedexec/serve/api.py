"""The module-level serve API: start, run, status, delete, shutdown, handles."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import cloudpickle

import fedexec
from fedexec.backends import capabilities

from . import _checkpoint, _context, _loop
from ._client import CONTROLLER_NAME, NAMESPACE, controller_handle, forget_client, get_client
from ._ingress import Portable
from ._proxies import check_location
from .deployment import _DEFAULTS, Application, Deployment
from .exceptions import DeploymentFailedError, DeploymentNotFoundError, ServeNotRunningError
from .handle import DeploymentHandle
from .schema import ServeStatus

HTTP_DEFAULTS: dict[str, Any] = {"host": "127.0.0.1", "port": 8000, "request_timeout_s": 30.0,
                                 "location": "EveryNode", "node_port": None}
_NEEDS = {"actors", "named_actors"}
_DEFAULT_PREFIX = "/"


def _executor(ex: fedexec.Executor | None = None) -> fedexec.Executor:
    ex = ex if ex is not None else _context.executor()
    missing = _NEEDS - set(capabilities(ex.backend))
    if missing:
        raise fedexec.UnsupportedOnBackendError(
            f"fedexec.serve needs {sorted(missing)}, which the {ex.backend!r} backend lacks; "
            "run serve on a backend with actors and named actors (native, local or dask: "
            "fedexec.init() or Executor(backend='native'))")
    return ex


def _http_options(http_options: Any) -> dict[str, Any]:
    if http_options is None:
        return dict(HTTP_DEFAULTS)
    if not isinstance(http_options, dict):  # an object with attributes (Ray's HTTPOptions)
        http_options = {k: getattr(http_options, k) for k in HTTP_DEFAULTS
                        if hasattr(http_options, k)}
    unknown = set(http_options) - set(HTTP_DEFAULTS) - {"root_path"}
    if unknown:
        raise ValueError(f"unknown http_options {sorted(unknown)}; known: "
                         f"{sorted(HTTP_DEFAULTS)}")
    opts = {**HTTP_DEFAULTS, **{k: v for k, v in http_options.items()
                                if k in HTTP_DEFAULTS and v is not None}}
    opts["location"] = check_location(getattr(opts["location"], "value", opts["location"]))
    return opts


def start(detached: bool = False, http_options: Any = None, *,
          executor: fedexec.Executor | None = None, **_ignored: Any) -> None:
    """Start serve (its controller and HTTP proxy) on the current cluster; a no-op
    when it already runs there.

    Args:
        detached: keep serve running after this driver exits (a cluster started
            with ``fedexec start --head``; reach it with ``address="auto"``).
        http_options: ``{"host": "127.0.0.1", "port": 8000, "request_timeout_s": 30,
            "location": "EveryNode", "node_port": None}``: a proxy on every node
            (``"HeadOnly"``: on the head only), the head's on ``port``, the others
            on ``node_port`` (default: ``port``, or an ephemeral port on a host
            that already has a proxy); ``serve.status().proxies`` lists them.
        executor: the executor serve runs on and this process's serve calls use
            until ``serve.shutdown()`` (default: the current executor).
    """
    from ._controller import ServeController

    ex = _executor(executor)
    if executor is not None:
        _context.remember_executor(executor)
    try:
        controller_handle().ping.remote().result(30)
        return
    except ServeNotRunningError:
        pass
    opts = _http_options(http_options)
    life = {"lifetime": "detached"} if detached else {}
    store = _checkpoint.start_store(ex, NAMESPACE, detached)
    store.load.remote().result(60)
    # every process holding a handle keeps one long-poll open here (a coroutine of
    # this async actor: max_concurrency bounds calls in flight, not threads); when
    # its process dies it is started again and recovers from the checkpoint store
    controller = ex.options(name=CONTROLLER_NAME, namespace=NAMESPACE, num_cpus=0,
                            max_concurrency=1000, max_restarts=-1, get_if_exists=True,
                            **life).actor(
        ServeController, opts, detached)
    controller.ping.remote().result(60)
    try:
        controller.start_proxies.remote(controller).result(90)
    except Exception as exc:
        try:
            controller.shutdown.remote().result(30)
        finally:
            ex.kill(controller)
            ex.kill(store)
        raise _unwrap(exc) from None


def _unwrap(error: BaseException) -> BaseException:
    return getattr(error, "cause", error)


def _version(d: Deployment, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    blob = cloudpickle.dumps((d.func_or_class, args, kwargs, d.config.get("actor_options"),
                              d.config.get("version")))
    return hashlib.sha1(blob).hexdigest()


def _specs(app: Application, app_name: str) -> tuple[list[dict[str, Any]], str]:
    """The deployments of an application graph (each nested application becomes a
    handle), and the name of the ingress one."""
    specs: dict[str, dict[str, Any]] = {}
    seen: dict[int, str] = {}

    def visit(node: Application) -> str:
        if id(node) in seen:
            return seen[id(node)]
        d = node.deployment
        name, i = d.name, 1
        while name in specs:
            name, i = f"{d.name}_{i}", i + 1
        seen[id(node)] = name
        specs[name] = {}  # reserve the name

        def conv(v: Any) -> Any:
            return DeploymentHandle(visit(v), app_name) if isinstance(v, Application) else v

        args = tuple(conv(a) for a in node.args)
        kwargs = {k: conv(v) for k, v in node.kwargs.items()}
        cfg = {k: d.config.get(k, default) for k, default in _DEFAULTS.items()}
        if cfg["num_replicas"] is None:
            cfg["num_replicas"] = 1
        specs[name] = {**cfg, "name": name, "target": Portable(d.func_or_class),
                       "init_args": args,
                       "init_kwargs": kwargs, "version": _version(d, args, kwargs)}
        return name

    if not isinstance(app, Application):
        raise TypeError(f"serve.run takes an application: Deployment.bind(...), got "
                        f"{type(app).__name__}" + (" (call .bind() on the deployment)"
                                                   if isinstance(app, Deployment) else ""))
    ingress = visit(app)
    return list(specs.values()), ingress


def run(target: Application, *, name: str = "default", route_prefix: str | None = _DEFAULT_PREFIX,
        blocking: bool = False, _wait_timeout_s: float | None = None) -> DeploymentHandle:
    """Deploy (or update) application ``name`` and wait until it runs; its ingress
    deployment's handle. Starts serve with default options if it is not running.

    Raises:
        DeploymentFailedError: a replica's constructor raised (the message has it).
    """
    specs, ingress = _specs(target, name)
    if route_prefix == _DEFAULT_PREFIX and target.deployment.config.get("route_prefix"):
        route_prefix = target.deployment.config["route_prefix"]
    if route_prefix is not None and not route_prefix.startswith("/"):
        raise ValueError(f"route_prefix must start with '/', got {route_prefix!r}")
    for spec in specs:
        spec["root_path"] = "" if route_prefix in (None, "/") else route_prefix
    start()
    controller = controller_handle()
    try:
        controller.deploy_app.remote(name, route_prefix, specs, ingress).result(60)
    except Exception as exc:
        raise _unwrap(exc) from None
    _wait_running(controller, name, _wait_timeout_s)
    handle = DeploymentHandle(ingress, name)
    if blocking:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            shutdown()
    return handle


def _wait_running(controller: Any, name: str, timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        app = controller.status.remote().result(30)["applications"].get(name)
        if app is None:
            raise DeploymentNotFoundError(f"application {name!r} was deleted while deploying")
        if app["status"] == "RUNNING":
            return
        if app["status"] == "DEPLOY_FAILED":
            raise DeploymentFailedError(
                f"application {name!r} failed to deploy: {app['message']}; fix the "
                "deployment and run it again")
        if deadline is not None and time.monotonic() > deadline:
            raise DeploymentFailedError(
                f"application {name!r} was not running after {timeout} s (status "
                f"{app['status']}: {app['message'] or 'replicas still starting'})")
        time.sleep(0.05)


def _run_classic(d: Deployment, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    run(d.bind(*args, **kwargs), name=d.name,
        route_prefix=d.config.get("route_prefix") or f"/{d.name}")


def status() -> ServeStatus:
    """Applications, their deployments and replicas (Ray's shape)."""
    return ServeStatus.from_dict(controller_handle().status.remote().result(30))


def delete(name: str, _blocking: bool = True) -> None:
    """Delete application ``name`` (its replicas drain and stop)."""
    found = controller_handle().delete_app.remote(name).result(30)
    if not found:
        raise DeploymentNotFoundError(f"no application {name!r} is running; "
                                      "serve.status() lists what is")


#: ``shutdown()`` waits this long at most for the controller to stop the replicas
#: and proxies and for the proxies' processes to exit; then it kills what is left.
SHUTDOWN_TIMEOUT_S = 15.0


def shutdown() -> None:
    """Stop every application, the proxy and the controller (within about
    ``SHUTDOWN_TIMEOUT_S``)."""
    ex = _context.executor()
    try:
        controller = controller_handle()
    except ServeNotRunningError:
        forget_client()
        _loop.stop()
        _context.forget_executor()
        return
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
    try:
        for pid in controller.shutdown.remote().result(SHUTDOWN_TIMEOUT_S):
            if pid != os.getpid():  # (actors as threads of this process: stopped)
                # its port is free once shutdown returns
                _wait_gone(pid, max(0.0, deadline - time.monotonic()))
    except Exception:
        pass
    forget_client()
    ex.kill(controller)
    try:
        ex.kill(ex.get_actor(_checkpoint.CHECKPOINT_NAME, namespace=NAMESPACE))
    except ValueError:
        pass
    _loop.stop()
    _context.forget_executor()


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    import psutil

    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)


def get_app_handle(name: str) -> DeploymentHandle:
    """The ingress handle of application ``name``."""
    app = controller_handle().status.remote().result(30)["applications"].get(name)
    if app is None:
        raise DeploymentNotFoundError(f"no application {name!r} is running; "
                                      "serve.status() lists what is")
    return DeploymentHandle(app["ingress"], name)


def get_deployment_handle(deployment_name: str, app_name: str = "default") -> DeploymentHandle:
    """The handle of one deployment of an application."""
    app = controller_handle().status.remote().result(30)["applications"].get(app_name)
    if app is None or deployment_name not in app["deployments"]:
        raise DeploymentNotFoundError(
            f"no deployment {deployment_name!r} in application {app_name!r}; "
            "serve.status() lists what runs")
    return DeploymentHandle(deployment_name, app_name)


def get_deployment(name: str) -> Deployment:
    """A classic deployment by name (as ``serve.list_deployments()`` holds it)."""
    found = list_deployments().get(name)
    if found is None:
        raise DeploymentNotFoundError(f"no deployment {name!r} is running; "
                                      "serve.list_deployments() lists them")
    return found


def list_deployments() -> dict[str, Deployment]:
    """Every running deployment by name (the classic API)."""
    specs = controller_handle().deployment_specs.remote().result(30)
    out = {}
    for spec in specs.values():
        config = {k: spec[k] for k in _DEFAULTS if k in spec}
        out[spec["name"]] = Deployment(spec["target"].value, spec["name"], config)
    return out


def _replica_pids(deployment_name: str, app_name: str = "default") -> list[int]:
    """The pids of a deployment's running replicas (for tests and tools)."""
    return list(controller_handle().replica_pids.remote(f"{app_name}#{deployment_name}")
                .result(30))


__all__ = ["delete", "get_app_handle", "get_client", "get_deployment", "get_deployment_handle",
           "list_deployments", "run", "shutdown", "start", "status"]
