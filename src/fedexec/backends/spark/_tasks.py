"""A task as the spark backend's driver keeps it, from submit to its end.

States (changed under the backend's lock)::

    waiting ──direct ref args done──▶ queued ──resources fit──▶ unassigned
        (holds its resources) ──a lease takes it──▶ running ──Done──▶ ending ──▶ done
    running ──its Python worker died, retries left──▶ queued
    waiting/queued/unassigned ──cancel──▶ done
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import cloudpickle

from ...options import TaskOptions
from ...refs import ObjectRef
from ._leases import LeaseRecord
from ._values import Stored

__all__ = ["Task", "normalize_runtime_env"]


class Task:
    """One task (see the module docstring)."""

    __slots__ = (
        "big", "call", "cancel_requested", "children", "demand", "deps", "fn", "force", "holds",
        "id", "keep", "lease", "lend_depth", "name", "options", "refs", "retries_left",
        "retry", "runtime_env", "state",
    )

    def __init__(self, name: str, fn: bytes, call: bytes, deps: list[ObjectRef[Any]],
                 keep: list[Any], options: TaskOptions, refs: list[ObjectRef[Any]],
                 demand: dict[str, float], runtime_env: dict[str, Any] | None):
        self.id = refs[0].id
        self.name = name
        self.fn = fn
        self.call = call
        self.deps = deps
        self.keep = keep  # refs inside the arguments: alive while the task is
        self.options = options
        self.refs = refs
        self.demand = demand
        self.runtime_env = runtime_env
        self.retries_left = options.max_retries
        retry = options.retry_exceptions
        self.retry = retry if isinstance(retry, bool) else cloudpickle.dumps(retry)
        self.state = "waiting"  # waiting -> queued -> unassigned -> running -> done
        self.lease: LeaseRecord | None = None
        self.big: list[Stored] = []  # large argument values, read from broadcasts
        self.children: list[ObjectRef[Any]] = []  # tasks it submitted (for cancel)
        self.holds: list[ObjectRef[Any]] = []  # refs it made: alive while it runs
        self.cancel_requested = False
        self.force = False
        self.lend_depth = 0

    def holds_resources(self) -> bool:
        """Whether it holds its resources now (not while lent in a get)."""
        return self.state in ("unassigned", "running") and self.lend_depth == 0


def normalize_runtime_env(env: Any) -> dict[str, Any] | None:
    """A task's runtime_env as paths the executors can use (modules -> directories)."""
    if not env:
        return None
    out: dict[str, Any] = {}
    if env.get("env_vars"):
        out["env_vars"] = dict(env["env_vars"])
    if env.get("working_dir") is not None:
        out["working_dir"] = os.path.abspath(os.fspath(env["working_dir"]))
    modules = []
    for m in env.get("py_modules") or ():
        if isinstance(m, ModuleType):
            path = getattr(m, "__file__", None)
            if path is None:
                raise ValueError(f"runtime_env py_modules: module {m.__name__!r} has no file")
            path = os.path.dirname(path)
            if os.path.basename(m.__file__ or "") == "__init__.py":
                path = os.path.dirname(path)
            modules.append(path)
        else:
            modules.append(os.path.abspath(os.fspath(m)))
    if modules:
        out["py_modules"] = modules
    return out or None
