"""``fedexec serve run|status|shutdown|deploy`` (hooked into ``fedexec.cli``)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

from .api import SHUTDOWN_TIMEOUT_S


def add_parser(sub: Any) -> None:
    """Add the ``serve`` command group to the ``fedexec`` parser."""
    s = sub.add_parser("serve", help="run and manage fedexec.serve applications")
    ssub = s.add_subparsers(dest="serve_command", required=True)
    r = ssub.add_parser("run", help="run an application (module:app) until Ctrl-C")
    r.add_argument("import_path", help="module:variable holding Deployment.bind(...)")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=8000)
    r.add_argument("--address", default=None,
                   help="a cluster to run on (HOST:PORT or auto; default: an embedded one)")
    r.add_argument("--name", default="default", help="the application's name")
    r.add_argument("--route-prefix", default="/")
    for name, text in (("status", "applications, deployments and replicas"),
                       ("shutdown", "stop every application, the proxy and the controller")):
        p = ssub.add_parser(name, help=text)
        p.add_argument("--address", default="auto")
    d = ssub.add_parser("deploy", help="deploy the applications of a YAML config (detached)")
    d.add_argument("config", help="YAML with http_options and applications: name, "
                                  "route_prefix, import_path, deployments")
    d.add_argument("--address", default="auto")
    s.set_defaults(func=main)


def _import(path: str) -> Any:
    from .deployment import Deployment

    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"import path {path!r} must look like module:variable "
                         "(e.g. my_app:app)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    value = getattr(importlib.import_module(module_name), attr)
    return value.bind() if isinstance(value, Deployment) else value


def _apply(app: Any, overrides: dict[str, dict[str, Any]]) -> Any:
    """``app`` with the options of the deployments named in ``overrides`` changed."""
    from .deployment import Application

    if not isinstance(app, Application):
        return app
    args = tuple(_apply(a, overrides) for a in app.args)
    kwargs = {k: _apply(v, overrides) for k, v in app.kwargs.items()}
    d = app.deployment
    if d.name in overrides:
        d = d.options(**overrides[d.name])
    return Application(d, args, kwargs)


def _connect(address: str | None) -> None:
    import fedexec

    if address is None:
        fedexec.init()
    else:
        fedexec.init(address=address)


def main(args: argparse.Namespace) -> int:
    from fedexec.exceptions import FedexecError

    from . import api

    try:
        cmd = args.serve_command
        if cmd == "run":
            return _run(args)
        _connect(args.address)
        if cmd == "status":
            print(json.dumps(api.status().to_dict(), indent=2))
        elif cmd == "shutdown":
            api.shutdown()
            print("serve shut down")
        else:
            _deploy(args.config)
        return 0
    except (FedexecError, ValueError, TypeError, ImportError, AttributeError, OSError) as exc:
        print(f"fedexec serve {args.serve_command}: {exc}", file=sys.stderr)
        return 1


#: How long ``serve run`` may take to stop after Ctrl-C before it exits anyway:
#: ``api.shutdown()``'s own bound, and time for ``fedexec.shutdown()`` after it.
STOP_GRACE_S = SHUTDOWN_TIMEOUT_S + 5.0


def _run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C (or SIGTERM), then shut serve down. It exits within
    ``STOP_GRACE_S`` of the Ctrl-C whatever the cleanup does, or at once on a
    second Ctrl-C (see :func:`_stop_guard`)."""
    import signal
    import time

    from . import api

    app = _import(args.import_path)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        _connect(args.address)
        api.start(http_options={"host": args.host, "port": args.port})
        api.run(app, name=args.name, route_prefix=args.route_prefix)
        print(f"serving {args.import_path} at http://{args.host}:{args.port}"
              f"{args.route_prefix} (Ctrl-C stops)", flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_guard(STOP_GRACE_S)
        try:
            api.shutdown()
        except Exception as exc:
            print(f"fedexec serve run: shutting down: {exc}", file=sys.stderr)
        import fedexec

        fedexec.shutdown()
    return 0


def _stop_guard(grace_s: float) -> None:
    """From now on the process exits within ``grace_s`` (status 1, with every
    thread's stack on stderr, to show what held it) or at a second Ctrl-C or
    SIGTERM (status 130), whatever the cleanup still waits for."""
    import faulthandler
    import signal
    import threading

    def force(signum: int, frame: Any) -> None:
        print("fedexec serve run: stopping at once (second signal)", file=sys.stderr,
              flush=True)
        os._exit(130)

    def late() -> None:
        print(f"fedexec serve run: did not stop within {grace_s:.0f} s of Ctrl-C; exiting "
              "anyway. What it was waiting for:", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stdout.flush()
        os._exit(1)

    signal.signal(signal.SIGINT, force)
    signal.signal(signal.SIGTERM, force)
    print("fedexec serve run: stopping (Ctrl-C again to stop at once)", file=sys.stderr,
          flush=True)
    timer = threading.Timer(grace_s, late)
    timer.daemon = True  # runs on while the interpreter joins other threads at exit
    timer.name = "fedexec-serve-run-stop-guard"
    timer.start()


def _deploy(path: str) -> None:
    import yaml

    from . import api

    with open(path) as f:
        config = yaml.safe_load(f) or {}
    apps = config.get("applications")
    if not isinstance(apps, list) or not apps:
        raise ValueError(f"{path} has no applications: list; each needs name, import_path "
                         "and optionally route_prefix and deployments")
    api.start(detached=True, http_options=config.get("http_options"))
    for spec in apps:
        if "import_path" not in spec:
            raise ValueError(f"application {spec.get('name', '?')!r} in {path} has no "
                             "import_path (module:variable)")
        overrides = {}
        for d in spec.get("deployments") or []:
            d = dict(d)
            overrides[d.pop("name")] = d
        app = _apply(_import(spec["import_path"]), overrides)
        name = spec.get("name", "default")
        api.run(app, name=name, route_prefix=spec.get("route_prefix", "/"))
        print(f"deployed {name} ({spec['import_path']}) at {spec.get('route_prefix', '/')}")
