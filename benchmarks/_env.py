"""The environment of a benchmark's child processes."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child_env() -> dict[str, str]:
    """``os.environ`` with ``benchmarks/`` (the shared benchmark functions) and this
    checkout's ``src/`` first on ``PYTHONPATH``: children, and the workers they start,
    measure the fedexec of this checkout, whatever checkout the virtual environment
    was installed from. No usage reporting (there is no network here), no warnings."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE), str(HERE.parent / "src"), env.get("PYTHONPATH")]))
    # Compile each module once, as an installed package does: with
    # PYTHONDONTWRITEBYTECODE set (some shells and CI images set it), every process
    # started from this source checkout recompiles fedexec (~150 ms more per start-up),
    # while the other systems come compiled from site-packages.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env
