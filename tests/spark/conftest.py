"""Fixtures of the spark backend tests: an executor on the process's shared
SparkContext, and a runner for scripts that need a SparkContext of their own (Spark
allows one per process). Leaks are checked after every test (tests/_leaks.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

pyspark = pytest.importorskip("pyspark")

import fedexec  # noqa: E402

#: A fresh interpreter starting its own SparkContext needs ~10 s on a small machine.
SCRIPT_TIMEOUT = 240


@pytest.fixture(scope="module")
def ex():
    """An executor with 2 CPUs on the shared SparkContext (started on first use)."""
    executor = fedexec.Executor(backend="spark", num_cpus=2)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def make_executor():
    made: list[fedexec.Executor] = []

    def make(**kwargs: Any) -> fedexec.Executor:
        kwargs.setdefault("num_cpus", 2)
        executor = fedexec.Executor(backend="spark", **kwargs)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def run_script():
    """``run_script(body, env=None)``: run ``body`` in a fresh interpreter (its own
    SparkContext); it prints a JSON line last, which is returned."""
    return _run_script


def _run_script(body: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    code = textwrap.dedent(body)
    full_env = {**os.environ, **(env or {})}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=SCRIPT_TIMEOUT, env=full_env)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result printed; stdout: {out.stdout[-2000:]}"
    return json.loads(lines[-1])  # type: ignore[no-any-return]
