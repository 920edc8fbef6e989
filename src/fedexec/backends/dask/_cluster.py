"""Starting or joining a Dask cluster, and reading its resources.

An executor-started cluster is a ``distributed.LocalCluster`` of worker processes
(each under a nanny that restarts it when it dies). Its layout follows fedexec's
resource model, not Dask's defaults:

* ``n_workers`` processes (backend option, default 1: one node, like the
  embedded runtimes of the other backends); the executor's ``num_cpus``,
  ``num_gpus`` and custom ``resources`` are split evenly between them and
  declared as Dask worker resources (``CPU``, ``GPU``, ``memory``, custom), so a
  task's demand is a Dask resource restriction and must fit one worker;
* more threads than CPUs per worker (``2 * ceil(cpus) + 2`` unless
  ``threads_per_worker`` is given): the ``CPU`` resource, not the thread count,
  bounds how many tasks run, so fractional and zero-CPU tasks run as they do on
  the other backends;
* ``allowed_failures=0``: a worker death fails its tasks at once, and fedexec
  retries them up to each task's own ``max_retries``;
* on Python 3.11, Dask's statistical profiler off in the workers: it calls
  ``sys._current_frames()`` every 10 ms, and on 3.11 a garbage collection inside
  that call can deadlock the whole worker process against a thread being started
  or ending (CPython gh-106883 / gh-116969, dask/distributed#8616). Actors start
  many threads (serve's controller hundreds), so workers hosting them froze: their
  event loop never answered again (``client.run`` hung in ``serve.shutdown()``).

A joined cluster (``address=`` or ``client=``) is used as it is: ``num_cpus``
maps to the ``CPU`` worker resource where workers declare one, else only to
Dask's thread slots.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import dask.config
import distributed
import psutil

from ._common import node_id_of

__all__ = ["ClusterView", "start_local_cluster"]

#: Whether Dask's worker profiler can deadlock this interpreter (see the module docstring).
PROFILER_DEADLOCKS = sys.version_info[:2] == (3, 11)
#: The worker config that turns it off.
NO_PROFILER = {"distributed.worker.profile.enabled": False}

#: The dask backend's options (``DaskBackend.options``).
OPTIONS = frozenset({"client", "n_workers", "threads_per_worker", "cluster_kwargs"})


def start_local_cluster(config: Any) -> distributed.LocalCluster:
    """A LocalCluster laid out for ``config`` (see the module docstring)."""
    opts = config.backend_options
    n = opts.get("n_workers", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_workers must be an int >= 1, got {n!r}")
    cpus = config.cpu_count(os.cpu_count() or 1) / n
    threads = opts.get("threads_per_worker") or 2 * math.ceil(cpus) + 2
    memory = psutil.virtual_memory().total // n
    resources: dict[str, float] = {"CPU": cpus, "memory": float(memory)}
    if config.num_gpus:
        resources["GPU"] = config.num_gpus / n
    for name, amount in config.resources.items():
        resources[name] = amount / n
    kwargs: dict[str, Any] = {
        "n_workers": n,
        "threads_per_worker": threads,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "silence_logs": logging.CRITICAL,
        "memory_limit": memory,
        "resources": resources,
        "scheduler_kwargs": {"allowed_failures": 0, "dashboard_address": "127.0.0.1:0"},
    }
    kwargs.update(opts.get("cluster_kwargs") or {})
    # the nannies pass the config current when they start to their workers
    with dask.config.set(NO_PROFILER if PROFILER_DEADLOCKS else {}):
        return distributed.LocalCluster(**kwargs)


class ClusterView:
    """The workers of a cluster, as fedexec resources and nodes (from the scheduler)."""

    def __init__(self, client: distributed.Client):
        self.client = client
        self.workers: dict[str, dict[str, Any]] = {}
        self._feasible: dict[tuple[tuple[str, float], ...], dict[str, float]] = {}
        self._warned: set[tuple[tuple[str, float], ...]] = set()
        self.refresh()

    def refresh(self) -> None:
        """Read the worker list again (a joined cluster may grow or shrink)."""
        info = self.client.scheduler_info(n_workers=-1)
        self.scheduler = info.get("address", "")
        self.workers = dict(info.get("workers", {}))

    def worker_resources(self, w: Mapping[str, Any]) -> dict[str, float]:
        """One worker's resources in fedexec's terms."""
        res = {k: float(v) for k, v in (w.get("resources") or {}).items()}
        res.setdefault("CPU", float(w.get("nthreads", 0)))
        if "memory" not in res and w.get("memory_limit"):
            res["memory"] = float(w["memory_limit"])
        return res

    def total(self) -> dict[str, float]:
        """The sum over workers."""
        out: dict[str, float] = {}
        for w in self.workers.values():
            for k, v in self.worker_resources(w).items():
                out[k] = out.get(k, 0.0) + v
        return out

    def fits_one_worker(self, demand: Mapping[str, float]) -> bool:
        """Could ``demand`` ever run on some worker (idle)?"""
        eps = 1e-9
        for w in self.workers.values():
            res = self.worker_resources(w)
            if all(res.get(k, 0.0) + eps >= v for k, v in demand.items()):
                return True
        return False

    def node_id(self, w: Mapping[str, Any]) -> str:
        """The fedexec node id of worker ``w``."""
        return node_id_of(self.scheduler, w.get("name"))

    def node_address(self, node_id: str) -> str | None:
        """The worker address of a node id, reading the worker list again if needed."""
        address = self.address_of(node_id)
        if address is None:
            self.refresh()
            address = self.address_of(node_id)
        return address

    def restrictions(self, demand: dict[str, float], what: str, fixed: bool
                     ) -> dict[str, float]:
        """The Dask resource restrictions of ``demand`` (``what`` names it).

        Raises:
            ValueError: no worker could ever run it and the cluster is ``fixed`` (an
                executor-started one); on a joined cluster, which may grow, a
                warning instead, and the task waits.
        """
        shape = tuple(sorted(demand.items()))
        known = self._feasible.get(shape)
        if known is not None:
            return known
        if not self.fits_one_worker(demand):
            if fixed:
                raise ValueError(
                    f"{what} asks for {demand} but no worker of this Dask cluster has that "
                    f"much (workers: {[n['resources'] for n in self.nodes()]}); it could "
                    "never run. Ask for less, or start the executor with more (num_cpus=..., "
                    "resources=...; a task must fit one worker: see n_workers)")
            self.refresh()
            if not self.fits_one_worker(demand):
                if shape not in self._warned:
                    self._warned.add(shape)
                    warnings.warn(
                        f"{what} asks for {demand}, more than any worker of the Dask "
                        "cluster has now; it waits until such a worker joins", stacklevel=5)
                return {k: v for k, v in demand.items()
                        if k not in ("CPU", "memory") or self.declares(k)}
        # CPU and memory without a matching worker resource are Dask's threads and
        # memory limits: nothing to restrict.
        out = {k: v for k, v in demand.items()
               if k not in ("CPU", "memory") or self.declares(k)}
        self._feasible[shape] = out
        return out

    def declares(self, resource: str) -> bool:
        """Does some worker declare ``resource`` as a Dask resource?"""
        return any(resource in (w.get("resources") or {}) for w in self.workers.values())

    def address_of(self, node_id: str) -> str | None:
        """The worker address of a node id (None if no such worker now)."""
        for addr, w in self.workers.items():
            if self.node_id(w) == node_id:
                return str(addr)
        return None

    def nodes(self) -> list[dict[str, Any]]:
        """``nodes()``: one entry per worker."""
        return [
            {
                "node_id": self.node_id(w),
                "address": str(addr),
                "alive": w.get("status", "running") in ("running", "paused"),
                "resources": self.worker_resources(w),
                "name": str(w.get("name")),
                "host": str(w.get("host", "")),
            }
            for addr, w in self.workers.items()
        ]
