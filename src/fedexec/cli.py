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

    if args.head == bool(args.address):
        print("fedexec start: give either --head (start a cluster) or --address HOST:PORT "
              "(join one)", file=sys.stderr)
        return 2
    resources = json.loads(args.resources) if args.resources else None
    if args.address:
        from .exceptions import FedexecError

        try:
            info = cluster.start_node(args.address, token=args.token, host=args.host,
                                      port=args.node_port, num_cpus=args.num_cpus,
                                      num_gpus=args.num_gpus, resources=resources,
                                      object_store_memory=args.object_store_memory)
        except (FedexecError, RuntimeError, ValueError, TypeError, OSError) as exc:
            print(f"fedexec start: {exc}", file=sys.stderr)
            return 1
        print(f"fedexec node {info['node_id']} joined the head at {args.address} "
              f"(pid {info['pid']}, listening on {info['address']})")
        return 0
    try:
        info = cluster.start_head(host=args.host, port=args.port, num_cpus=args.num_cpus,
                                  num_gpus=args.num_gpus, resources=resources,
                                  object_store_memory=args.object_store_memory,
                                  job_port=args.job_port)
    except (RuntimeError, ValueError, TypeError, OSError) as exc:
        print(f"fedexec start: {exc}", file=sys.stderr)
        return 1
    print(f"fedexec head started at {info['address']} (pid {info['pid']})")
    print("Connect from Python on this machine with fedexec.Executor(address='auto'),")
    print(f"or from elsewhere with address='{info['address']}' and the token in "
          f"{cluster.cluster_dir()}/token (or FEDEXEC_TOKEN).")
    print(f"Jobs: fedexec job submit -- python script.py (job agent at {info['job_address']}).")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from .backends.native import cluster

    nodes = cluster.stop_nodes()
    if nodes:
        print(f"stopped {nodes} fedexec node(s)")
    if cluster.stop_head():
        print("fedexec head stopped")
    elif not nodes:
        print("no fedexec head or node was running on this machine")
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


def _cmd_job(args: argparse.Namespace) -> int:
    from .backends.native import jobs

    return jobs.run_cli(args)


def _add_job_parser(sub: Any) -> None:
    j = sub.add_parser("job", help="run a command on the cluster as a job")
    jsub = j.add_subparsers(dest="job_command", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--address", default="auto",
                       help="the job agent's HOST:PORT (default: the cluster on this machine)")
    js = jsub.add_parser("submit", parents=[where], help="run a command as a job",
                         usage="fedexec job submit [--address A] [--working-dir DIR] "
                               "[--no-wait] -- CMD [ARGS...]")
    js.add_argument("--working-dir", default=None,
                    help="directory copied to the job (<= 100 MiB zipped; .git, __pycache__ "
                         "and .venv left out); the command runs in the copy")
    js.add_argument("--no-wait", action="store_true",
                    help="print the job id and return instead of following its output")
    js.add_argument("entrypoint", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    for name, text in (("status", "a job's status"), ("logs", "a job's output"),
                       ("stop", "stop a job (SIGTERM, then SIGKILL)")):
        p = jsub.add_parser(name, parents=[where], help=text)
        p.add_argument("job_id")
        if name == "status":
            p.add_argument("--format", choices=("table", "json"), default="table")
        elif name == "logs":
            p.add_argument("--follow", "-f", action="store_true",
                           help="keep printing until the job ends")
        else:
            p.add_argument("--grace", type=float, default=10.0,
                           help="seconds between SIGTERM and SIGKILL (default 10)")
    jl = jsub.add_parser("list", parents=[where], help="list the cluster's jobs")
    jl.add_argument("--format", choices=("table", "json"), default="table")
    j.set_defaults(func=_cmd_job)


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
    s = sub.add_parser("start", help="start a cluster head, or a node joining one")
    s.add_argument("--head", action="store_true", help="start the head node")
    s.add_argument("--address", default=None,
                   help="HOST:PORT of a head to join (starts a worker node)")
    s.add_argument("--token", default=None,
                   help="cluster token for --address (default: FEDEXEC_TOKEN, or the token "
                        "file on this machine)")
    s.add_argument("--node-port", type=int, default=0,
                   help="TCP port a joining node listens on for its peers (default: any)")
    s.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=None, help="TCP port (default 6390)")
    s.add_argument("--num-cpus", type=float, default=None)
    s.add_argument("--num-gpus", type=float, default=None)
    s.add_argument("--resources", default=None, help='custom resources as JSON: {"disk": 2}')
    s.add_argument("--object-store-memory", type=int, default=None, help="bytes")
    s.add_argument("--job-port", type=int, default=None,
                   help="port of the job agent (default: --port + 1; 0: any free port)")
    s.set_defaults(func=_cmd_start)
    t = sub.add_parser("stop", help="stop this machine's head, nodes and their workers")
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
    _add_job_parser(sub)
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
