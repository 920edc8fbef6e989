"""The ``fedexec`` command (also ``python -m fedexec``).

For now it reports the version and the backends usable here with their
capabilities; cluster commands (start/stop/status/jobs) come with the native
multi-node runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

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
    args = parser.parse_args(argv)
    if args.command == "backends":
        if args.format == "json":
            print(json.dumps(backends._describe(), indent=2))
        else:
            print(_backends_table())
        return 0
    print(f"fedexec {__version__}")
    print("backends:")
    print(_backends_table())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
