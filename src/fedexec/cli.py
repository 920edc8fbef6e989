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
import time
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
                                      object_store_memory=args.object_store_memory,
                                      worker_preload=args.worker_preload)
        except (FedexecError, RuntimeError, ValueError, TypeError, OSError) as exc:
            print(f"fedexec start: {exc}", file=sys.stderr)
            return 1
        print(f"fedexec node {info['node_id']} joined the head at {args.address} "
              f"(pid {info['pid']}, listening on {info['address']})")
        return 0
    from .dashboard._cli import describe, start_options

    try:
        info = cluster.start_head(host=args.host, port=args.port, num_cpus=args.num_cpus,
                                  num_gpus=args.num_gpus, resources=resources,
                                  object_store_memory=args.object_store_memory,
                                  job_port=args.job_port, worker_preload=args.worker_preload,
                                  **start_options(args))
    except (RuntimeError, ValueError, TypeError, OSError) as exc:
        print(f"fedexec start: {exc}", file=sys.stderr)
        return 1
    print(f"fedexec head started at {info['address']} (pid {info['pid']})")
    print("Connect from Python on this machine with fedexec.Executor(address='auto'),")
    print(f"or from elsewhere with address='{info['address']}' and the token in "
          f"{cluster.cluster_dir()}/token (or FEDEXEC_TOKEN).")
    print(f"Jobs: fedexec job submit -- python script.py (job agent at {info['job_address']}).")
    print(describe(info))
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


def format_bytes(n: float | None) -> str:
    """``n`` bytes for people: ``512 B``, ``1.5 KiB``, ``16.0 MiB``, ``2.0 GiB``
    (``-`` for None: not limited)."""
    if n is None:
        return "-"
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, i = float(n), 0
    while abs(value) >= 1024 and i < len(units) - 1:
        value, i = value / 1024, i + 1
    return f"{int(value)} B" if i == 0 else f"{value:.1f} {units[i]}"


_TIME_KEYS = frozenset({"end_time", "time"})
_BYTE_KEYS = frozenset({"memory", "object_store_memory", "size", "used_bytes", "capacity",
                        "spilled_bytes"})


def _amount(key: str, value: Any) -> str:
    """A resource or counter value: bytes for people where ``key`` is in bytes, a
    local date and time where it is a time (seconds since the epoch)."""
    if key in _BYTE_KEYS and isinstance(value, (int, float)):
        return format_bytes(value)
    if key in _TIME_KEYS and isinstance(value, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={_amount(k, v)}" for k, v in sorted(value.items()))
    return "" if value is None else str(value)


def format_table(rows: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> str:
    """Rows as an aligned text table, one column per key of the first row (less
    ``skip``), byte counts for people."""
    cols = [c for c in rows[0] if c not in skip]
    cells = [[_amount(c, r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _store_line(store: dict[str, Any]) -> str:
    return f"{format_bytes(store['used_bytes'])} / {format_bytes(store['capacity'])}"


def format_status(status: dict[str, Any]) -> str:
    """``fedexec status`` as text: every node (its state, work and store), the
    resources used / total, and the cluster's totals."""
    nodes = status["nodes"]
    alive = sum(1 for n in nodes if n["state"] == "alive")
    lines = [f"nodes: {len(nodes)} ({alive} alive)"]
    rows = []
    for n in nodes:
        answered = "store" in n
        rows.append({
            "node_id": n["node_id"] + (" (head)" if n.get("is_head") else ""),
            "address": n["address"], "state": n["state"],
            **{k: n[k] if answered else "-"
               for k in ("tasks", "queued_tasks", "actors", "objects", "workers")},
            "store": _store_line(n["store"]) if answered else "-",
        })
    lines += ["  " + line for line in format_table(rows).splitlines()]
    for node_id, why in status.get("missing", {}).items():
        lines.append(f"  node {node_id} is not counted below: {why}")
    lines.append("resources (used / total):")
    width = max((len(k) for k in status["total"]), default=0)
    for key, total in sorted(status["total"].items()):
        used = total - status["available"].get(key, 0.0)
        lines.append(f"  {key:<{width}} {_amount(key, used)} / {_amount(key, total)}")
    lines.append(f"tasks: {status['tasks']} unfinished, {status['queued_tasks']} queued for "
                 f"resources; actors: {status['actors']}; workers: {status['workers']}")
    lines += _pending_lines(nodes)
    store = status["store"]
    lines.append(f"object store: {_store_line(store)} in {store['num_objects']} objects "
                 f"({store['num_spilled']} spilled, {format_bytes(store['spilled_bytes'])}) "
                 f"on {alive} node(s); {status['objects']} object references tracked")
    return "\n".join(lines)


def _pending_lines(nodes: list[dict[str, Any]]) -> list[str]:
    """``pending demand: 7 x {CPU: 2}, ...``: the shapes queued for resources; then
    one line per actor waiting for a node, with why."""
    shapes: dict[str, int] = {}
    for n in nodes:
        for demand, count in n.get("queued_shapes", []):
            key = "{" + ", ".join(f"{k}: {_amount(k, v)}" for k, v in sorted(demand.items())) + "}"
            shapes[key] = shapes.get(key, 0) + int(count)
    waiting = [f"  {row['reason']}" for n in nodes for row in n.get("pending_actors", [])]
    lines = ["pending demand: " + ", ".join(f"{n} x {k}" for k, n in sorted(shapes.items()))
             ] if shapes else []
    return lines + ([f"pending actors: {len(waiting)}", *waiting] if waiting else [])


def _cmd_status(args: argparse.Namespace) -> int:
    from .backends.native import state
    from .exceptions import FedexecError

    try:
        status = state.cluster_status(args.address)
    except (FedexecError, ValueError) as exc:
        print(f"fedexec status: {exc}", file=sys.stderr)
        return 1
    from .autoscaler._cli import status_lines

    if args.format == "json":
        print(json.dumps({**status, "autoscaler": status_lines(status)}, indent=2))
    else:
        print("\n".join([format_status(status), *status_lines(status)]))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .backends.native import state
    from .exceptions import FedexecError

    try:
        rows = state.list_state(args.kind.replace("-", "_"), args.address)
    except (FedexecError, ValueError) as exc:
        print(f"fedexec list: {exc}", file=sys.stderr)
        return 1
    for node_id, why in rows.missing.items():
        print(f"fedexec list: node {node_id} is not listed: {why}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(list(rows), indent=2))
    elif not rows:
        print(f"no {args.kind}")
    else:
        print(format_table(rows, skip=("resources",)))
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
    s.add_argument("--worker-preload", action="append", default=None, metavar="MODULE",
                   help="a module the node's workers start with already imported (repeat "
                        "for more; e.g. torch, to save each training worker its import)")
    s.add_argument("--job-port", type=int, default=None,
                   help="port of the job agent (default: --port + 1; 0: any free port)")
    s.set_defaults(func=_cmd_start)
    t = sub.add_parser("stop", help="stop this machine's head, nodes and their workers")
    t.set_defaults(func=_cmd_stop)
    st = sub.add_parser("status", help="nodes, resources used/total, pending work")
    st.add_argument("--address", default="auto")
    st.add_argument("--format", choices=("table", "json"), default="table")
    st.set_defaults(func=_cmd_status)
    ls = sub.add_parser("list", help="list nodes, tasks, actors, objects or placement groups")
    ls.add_argument("kind", choices=("nodes", "tasks", "actors", "objects", "placement-groups"))
    ls.add_argument("--address", default="auto")
    ls.add_argument("--format", choices=("table", "json"), default="table")
    ls.set_defaults(func=_cmd_list)
    _add_job_parser(sub)
    sub.add_parser("rl", help="reinforcement learning: train, evaluate, tuned examples")
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["rl"]:  # fedexec.rl parses the rest (imported only when used)
        from .rl._cli import main as rl_main

        return rl_main(args_list[1:])
    from .serve._cli import add_parser as add_serve_parser

    add_serve_parser(sub)
    from .dashboard._cli import add_parser as add_dashboard_parser

    add_dashboard_parser(sub)
    from .autoscaler._cli import add_parser as add_autoscaler_parser

    add_autoscaler_parser(sub)
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
