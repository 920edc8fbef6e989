"""A gang of training workers: ``num_workers`` actors in one placement group.

Starting a group::

    placement group (one bundle per worker, ScalingConfig.placement_strategy)
      └─ TrainWorker actor per bundle ──info()──▶ node, ip, GPU ids, shared fs?
    ranks: contiguous per node (nodes in order of first appearance)
    env per worker: RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE NODE_RANK
                    MASTER_ADDR MASTER_PORT (rank 0's node, a free port there)
                    OMP_NUM_THREADS (its CPUs, unless already set)
                    CUDA_VISIBLE_DEVICES (with GPUs: the GPU ids of the node's workers)

Ending it kills the actors and frees the placement group; a group is never
reused after a failure (the trainer starts a fresh one).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fedexec
from fedexec.backends import capabilities

from .config import ScalingConfig
from .context import TrainContext
from .worker import TrainWorker

__all__ = ["WorkerGroup", "WorkerInfo"]

#: seconds to wait for the group's resources before failing
PLACEMENT_TIMEOUT_S = 600.0
#: seconds after which the wait for resources is logged
WARN_AFTER_S = 10.0

logger = logging.getLogger(__name__)


@dataclass
class WorkerInfo:
    """One started worker: its actor and where it runs."""

    actor: Any
    node_id: str
    ip: str
    gpu_ids: list[str]
    pid: int
    shared_fs: bool
    context: TrainContext
    env: dict[str, str]


class WorkerGroup:
    """Starts, addresses and ends one gang of workers.

    Args:
        executor: the runtime the workers run on.
        scaling: how many workers, with which resources and placement.
        marker: ``(file, token)`` written in the run directory (see
            ``TrainWorker.info``).
        names: ``trial_name``/``experiment_name``/``storage_path``/``trial_dir`` for
            each worker's ``TrainContext``.
        preload: modules the workers start importing as they start (``torch``).

    Raises:
        fedexec.UnsupportedOnBackendError: the backend has no actors, or more
            than one worker on a backend without worker processes.
        fedexec.exceptions.FedexecError: the placement group was not ready in
            ``PLACEMENT_TIMEOUT_S`` seconds.
    """

    def __init__(self, executor: fedexec.Executor, scaling: ScalingConfig,
                 marker: tuple[str, str], names: dict[str, Any],
                 preload: tuple[str, ...] = ()) -> None:
        self._ex = executor
        self.pg: Any = None
        self.workers: list[WorkerInfo] = []
        check_backend(executor.backend, scaling.num_workers)
        options = {**scaling.actor_options(), "max_restarts": 0, "max_concurrency": 3}
        env_defaults: dict[str, str] = {}
        if "worker_processes" in capabilities(executor.backend):
            # one math thread per reserved CPU, as torchrun does (unless the user set it)
            env_defaults["OMP_NUM_THREADS"] = str(max(1, int(scaling.worker_bundle()["CPU"])))
        actors = []
        try:
            if "placement_groups" in capabilities(executor.backend):
                self.pg = executor.placement_group(scaling.bundles(),
                                                   strategy=scaling.placement_strategy)
                if not _wait_ready(executor, self.pg, scaling):
                    raise fedexec.exceptions.FedexecError(
                        f"the {scaling.num_workers} training workers' resources "
                        f"({scaling.worker_bundle()} each, {scaling.placement_strategy}) were "
                        f"not available within {PLACEMENT_TIMEOUT_S:.0f} s: free resources or "
                        "add nodes, or ask for fewer workers")
            for index in range(scaling.num_workers):
                opts = dict(options)
                if self.pg is not None:
                    opts["scheduling_strategy"] = fedexec.PlacementGroupStrategy(self.pg, index)
                actors.append(executor.options(**opts).actor(TrainWorker, env_defaults, preload))
            infos = executor.get([a.info.remote(marker) for a in actors])
            if len({(i["hostname"], i["pid"]) for i in infos}) < len(infos):
                raise fedexec.UnsupportedOnBackendError(
                    f"the {executor.backend!r} backend ran two training workers in one "
                    "process; each torch.distributed rank needs a process of its own: use "
                    "the native backend")
            self.workers = _assign(actors, infos, names, scaling.use_gpu)
            master = self.workers[0]
            port = executor.get(master.actor.free_port.remote())
            for worker in self.workers:
                worker.env.update(MASTER_ADDR=master.ip, MASTER_PORT=str(port))
            if "worker_processes" in capabilities(executor.backend):
                executor.get([w.actor.set_env.remote(w.env) for w in self.workers])
        except BaseException:
            self._end(actors)
            raise

    @property
    def backend(self) -> str:
        return self._ex.backend

    @property
    def size(self) -> int:
        return len(self.workers)

    def run_all(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """``fn(*args)`` in every worker, at once; their results in rank order."""
        return self._ex.get([w.actor.execute.remote(fn, *args) for w in self.workers])

    def shutdown(self) -> None:
        """Kill the workers and free their placement group."""
        self._end([w.actor for w in self.workers])
        self.workers = []

    def _end(self, actors: list[Any]) -> None:
        for actor in actors:
            with contextlib.suppress(Exception):
                self._ex.kill(actor)
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self._ex.remove_placement_group(self.pg)
            self.pg = None


def _wait_ready(executor: fedexec.Executor, pg: Any, scaling: ScalingConfig) -> bool:
    """Wait for the placement group, saying after a while what it waits for."""
    if pg.ready(timeout=WARN_AFTER_S):
        return True
    logger.warning(
        "the %d training workers wait for their resources (%s each, %s); available now: %s. "
        "Free resources or add nodes (a dataset's tasks need CPUs beyond the workers')",
        scaling.num_workers, scaling.worker_bundle(), scaling.placement_strategy,
        executor.available_resources())
    return bool(pg.ready(timeout=PLACEMENT_TIMEOUT_S - WARN_AFTER_S))


def check_backend(backend: str, num_workers: int) -> None:
    """Raise ``UnsupportedOnBackendError`` unless ``backend`` can run the group."""
    from fedexec.backends import available

    caps = capabilities(backend)
    need = {"actors"} | ({"worker_processes"} if num_workers > 1 else set())
    if not need <= caps:
        able = [b for b in available() if need <= capabilities(b)]
        raise fedexec.UnsupportedOnBackendError(
            f"fedexec.train with {num_workers} worker(s) needs {sorted(need)} (each worker is "
            f"its own process in one torch.distributed group), which the {backend!r} backend "
            f"lacks; use one of: {', '.join(able)}" + (
                " (or num_workers=1)" if "actors" in caps else ""))


def _assign(actors: list[Any], infos: list[dict[str, Any]], names: dict[str, Any],
            use_gpu: bool) -> list[WorkerInfo]:
    """Ranks contiguous per node, and each worker's environment."""
    nodes: dict[str, list[int]] = {}
    for index, info in enumerate(infos):
        nodes.setdefault(info["node_id"], []).append(index)
    order = [i for members in nodes.values() for i in members]
    workers = []
    for rank, index in enumerate(order):
        info = infos[index]
        node_rank = list(nodes).index(info["node_id"])
        members = nodes[info["node_id"]]
        local_rank = members.index(index)
        context = TrainContext(world_rank=rank, world_size=len(actors), local_rank=local_rank,
                               local_world_size=len(members), node_rank=node_rank, **names)
        env = {"RANK": str(rank), "WORLD_SIZE": str(len(actors)),
               "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(len(members)),
               "NODE_RANK": str(node_rank), "GROUP_RANK": str(node_rank)}
        if use_gpu:
            node_gpus = sorted({g for i in members for g in infos[i]["gpu_ids"]},
                               key=lambda g: (len(g), g))
            env["CUDA_VISIBLE_DEVICES"] = ",".join(node_gpus)
        workers.append(WorkerInfo(actor=actors[index], node_id=info["node_id"], ip=info["ip"],
                                  gpu_ids=list(info["gpu_ids"]), pid=int(info["pid"]),
                                  shared_fs=bool(info["shared_fs"]), context=context, env=env))
    return workers
