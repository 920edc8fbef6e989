"""The ``fedexec`` command (also ``python -m fedexec``).

``fedexec start --head`` starts a cluster head on this machine, ``fedexec stop``
stops it, ``fedexec status`` shows its nodes, resources and pending work,
``fedexec list nodes|tasks|actors|objects`` lists them, and ``fedexec backends``
lists the backends usable here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__, backends


def _backends_table() -> str:
    rows = []
    for name in backends.names():
        try:
            caps = ", ".join(sorted(backends.capabilities(name))) or "-"
            status = "available"
        except Exception as exc:  # unavailable: say why
            caps, status = str(exc), "unavailable"
        rows.append(f"  {name:<8} {status:<12} {caps}")
    return "\n".join(rows)


def _cmd_backends(args: argparse.Namespace) -> int:
    if args.format == "json":
        print(json.dumps(backends._describe(), indent=2))
    else:
        print(_backends_table())
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    from .backends.native import cluster

    if not args.head:
        print("fedexec start: joining a head (--address) comes with multi-node clusters; "
              "for now start a head with 'fedexec start --head'", file=sys.stderr)
        return 2
    resources = json.loads(args.resources) if args.resources else None
    try:
        info = cluster.start_head(host=args.host, port=args.port, num_cpus=args.num_cpus,
                                  num_gpus=args.num_gpus, resources=resources,
                                  object_store_memory=args.object_store_memory)
    except (RuntimeError, ValueError, TypeError, OSError) as exc:
        print(f"fedexec start: {exc}", file=sys.stderr)
        return 1
    print(f"fedexec head started at {info['address']} (pid {info['pid']})")
    print("Connect from Python on this machine with fedexec.Executor(address='auto'),")
    print(f"or from elsewhere with address='{info['address']}' and the token in "
          f"{cluster.cluster_dir()}/token (or FEDEXEC_TOKEN).")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from .backends.native import cluster

    if cluster.stop_head():
        print("fedexec head stopped")
    else:
        print("no fedexec head was running on this machine")
    return 0


def _status(address: str) -> dict[str, Any]:
    from .executor import Executor

    with Executor(address=address) as ex:
        stats = ex._backend.stats()  # type: ignore[attr-defined]
        return {
            "nodes": ex.nodes(),
            "total": ex.cluster_resources(),
            "available": ex.available_resources(),
            "queued_tasks": stats["queued"],
            "tasks": stats["tasks"],
            "objects": stats["objects"],
            "store": stats["store"],
            "workers": len(stats["workers"]),
        }


def _cmd_status(args: argparse.Namespace) -> int:
    from .exceptions import FedexecError

    try:
        status = _status(args.address)
    except FedexecError as exc:
        print(f"fedexec status: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(status, indent=2))
        return 0
    print(f"nodes: {len(status['nodes'])}")
    for node in status["nodes"]:
        state = "alive" if node["alive"] else "dead"
        print(f"  {node['node_id']}  {node['address']}  {state}")
    print("resources (used / total):")
    for key, total in sorted(status["total"].items()):
        used = total - status["available"].get(key, 0.0)
        print(f"  {key:<10} {used:g} / {total:g}")
    print(f"tasks: {status['tasks']} unfinished, {status['queued_tasks']} queued for "
          f"resources; workers: {status['workers']}")
    store = status["store"]
    print(f"object store: {store['used_bytes']} / {store['capacity']} bytes in "
          f"{status['objects']} objects ({store['num_spilled']} spilled)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .backends.native.protocol import Call
    from .exceptions import FedexecError
    from .executor import Executor

    try:
        with Executor(address=args.address) as ex:
            rows = ex._backend._request(Call.LIST, args.kind)  # type: ignore[attr-defined]
    except (FedexecError, ValueError) as exc:
        print(f"fedexec list: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no {args.kind}")
        return 0
    cols = [c for c in rows[0] if c != "resources"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedexec`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="fedexec",
        description="fedexec: parallel and distributed Python on concurrent.futures.",
    )
    parser.add_argument("--version", action="version", version=f"fedexec {__version__}")
    sub = parser.add_subparsers(dest="command")
    b = sub.add_parser("backends", help="list the backends and their capabilities")
    b.add_argument("--format", choices=("table", "json"), default="table")
    b.set_defaults(func=_cmd_backends)
    s = sub.add_parser("start", help="start a cluster head on this machine")
    s.add_argument("--head", action="store_true", help="start the head node")
    s.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=None, help="TCP port (default 6390)")
    s.add_argument("--num-cpus", type=float, default=None)
    s.add_argument("--num-gpus", type=float, default=None)
    s.add_argument("--resources", default=None, help='custom resources as JSON: {"disk": 2}')
    s.add_argument("--object-store-memory", type=int, default=None, help="bytes")
    s.set_defaults(func=_cmd_start)
    t = sub.add_parser("stop", help="stop this machine's head and its workers")
    t.set_defaults(func=_cmd_stop)
    st = sub.add_parser("status", help="nodes, resources used/total, pending work")
    st.add_argument("--address", default="auto")
    st.add_argument("--format", choices=("table", "json"), default="table")
    st.set_defaults(func=_cmd_status)
    ls = sub.add_parser("list", help="list nodes, tasks, actors or objects")
    ls.add_argument("kind", choices=("nodes", "tasks", "actors", "objects"))
    ls.add_argument("--address", default="auto")
    ls.add_argument("--format", choices=("table", "json"), default="table")
    ls.set_defaults(func=_cmd_list)
    args = parser.parse_args(argv)
    if getattr(args, "port", 0) is None:
        from .backends.native.cluster import DEFAULT_PORT

        args.port = DEFAULT_PORT
    if args.command is None:
        print(f"fedexec {__version__}")
        print("backends:")
        print(_backends_table())
        return 0
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
