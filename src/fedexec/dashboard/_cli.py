"""``fedexec dashboard``, ``fedexec summary tasks|actors`` and the dashboard options
of ``fedexec start`` (hooked into ``fedexec.cli``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from . import DEFAULT_PORT

__all__ = ["add_parser", "start_options", "summarize"]


def add_parser(sub: Any) -> None:
    """Add ``fedexec dashboard``, and ``--dashboard-host``, ``--dashboard-port`` and
    ``--no-dashboard`` to ``fedexec start``."""
    start = sub.choices.get("start")
    if start is not None:
        start.add_argument("--dashboard-host", default="127.0.0.1",
                           help="interface the head's dashboard listens on (default "
                                "127.0.0.1)")
        start.add_argument("--dashboard-port", type=int, default=DEFAULT_PORT,
                           help=f"the dashboard's port (default {DEFAULT_PORT}; 0: any free "
                                "port)")
        start.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                           help="start the head without its dashboard")
    d = sub.add_parser("dashboard", help="print the URL of this machine's cluster dashboard")
    d.add_argument("--with-token", action="store_true",
                   help="print a sign-in URL carrying the cluster token (keep it private)")
    d.set_defaults(func=main)
    sm = sub.add_parser("summary", help="tasks or actors counted by name and state")
    sm.add_argument("kind", choices=("tasks", "actors"))
    sm.add_argument("--address", default="auto")
    sm.add_argument("--format", choices=("table", "json"), default="table")
    sm.set_defaults(func=summary_main)


def summarize(rows: list[dict[str, Any]], kind: str,
              counted: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Rows counted by name (an actor's: its class) and state, most first, plus
    ``counted``: rows already counted (``name``, ``state``, ``count``)."""
    key = "class" if kind == "actors" else "name"
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        k = (str(r.get(key) or "-"), str(r.get("state", "")))
        counts[k] = counts.get(k, 0) + 1
    for r in counted:
        k = (str(r.get("name") or "-"), str(r.get("state", "")))
        counts[k] = counts.get(k, 0) + int(r["count"])
    return [{key: name, "state": st, "count": n}
            for (name, st), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def summary_main(args: argparse.Namespace) -> int:
    import json

    from ..backends.native import state
    from ..cli import format_table
    from ..exceptions import FedexecError

    try:
        rows = state.list_state(args.kind, args.address)
        # Ended tasks: the head's counts (every one, also those evicted from its list).
        counted = state.list_state("task_counts", args.address) if args.kind == "tasks" \
            else []
    except (FedexecError, ValueError) as exc:
        print(f"fedexec summary: {exc}", file=sys.stderr)
        return 1
    for node_id, why in rows.missing.items():
        print(f"fedexec summary: node {node_id} is not counted: {why}", file=sys.stderr)
    if args.kind == "tasks":
        rows = state.StateRows([r for r in rows if "end_time" not in r])
    table = summarize(list(rows), args.kind, list(counted))
    if args.format == "json":
        print(json.dumps(table, indent=2))
    else:
        print(format_table(table) if table else f"no {args.kind}")
        print(f"total: {sum(r['count'] for r in table)} {args.kind}")
    return 0


def start_options(args: argparse.Namespace) -> dict[str, Any]:
    """``cluster.start_head`` keywords from ``fedexec start``'s arguments."""
    return {"dashboard": getattr(args, "dashboard", True),
            "dashboard_host": getattr(args, "dashboard_host", "127.0.0.1"),
            "dashboard_port": getattr(args, "dashboard_port", DEFAULT_PORT)}


def describe(info: dict[str, Any]) -> str:
    """The line ``fedexec start --head`` prints about the dashboard."""
    if info.get("dashboard_url"):
        return (f"Dashboard: {info['dashboard_url']} (sign in with the cluster token; "
                "'fedexec dashboard --with-token' prints a sign-in URL).")
    if info.get("dashboard_error"):
        return f"No dashboard: {info['dashboard_error']}"
    return "No dashboard (--no-dashboard)."


def main(args: argparse.Namespace) -> int:
    from ..backends.native import cluster

    info = cluster.read_local_cluster()
    if info is None:
        print("fedexec dashboard: no fedexec cluster runs on this machine; start one with "
              "'fedexec start --head'", file=sys.stderr)
        return 1
    if not info.get("dashboard_url"):
        print(f"fedexec dashboard: {describe(info)}", file=sys.stderr)
        return 1
    url = info["dashboard_url"]
    if args.with_token:
        token = cluster.resolve("auto", None)["token"].hex()
        url = f"{url}/?token={token}"
    print(url)
    return 0
