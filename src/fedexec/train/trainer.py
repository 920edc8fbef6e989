"""``DataParallelTrainer``: run a loop on a gang of workers, with restarts.

``fit()``::

    RunStorage(<storage_path>/<name>)            checkpoints, result.json
    loop:  WorkerGroup(n) ─▶ backend.on_start (e.g. torch.distributed)
             ─▶ datasets: ds.streaming_split(n, equal=True, drop_remainder=False),
                one iterator per rank
             ─▶ every worker: start(loop, config, its context, latest checkpoint)
             ─▶ rounds: poll() every worker; when all n reported, rank 0's
                metrics become a result and its checkpoint is kept; the next
                poll releases them (the barrier of train.report)
           a worker raising, dying (its process or node), or a collective timing
           out ends the group; restart from the latest checkpoint while
           FailureConfig.max_failures allows, else TrainingFailedError.

The trainer itself holds no resources: it runs in the caller's process (or in
a tune trial actor, which asks for no CPU of its own).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import fedexec
from fedexec.tune.checkpoint import Checkpoint, pack
from fedexec.tune.result import Result
from fedexec.util import registry

from .config import FailureConfig, RunConfig, ScalingConfig
from .error import TrainingFailedError
from .storage import RunStorage, run_directory
from .worker_group import WorkerGroup, check_backend

__all__ = ["DataParallelTrainer"]

logger = logging.getLogger(__name__)

#: seconds the trainer waits between checks of its workers
_WAIT_S = 1.0


class _Failed(Exception):
    """The group failed; ``cause`` is why."""

    def __init__(self, cause: BaseException, rank: int | None) -> None:
        super().__init__(str(cause))
        self.cause, self.rank = cause, rank


class DataParallelTrainer:
    """Runs ``train_loop_per_worker`` on ``scaling_config.num_workers`` workers.

    Args:
        train_loop_per_worker: ``fn(config)`` or ``fn()``, run by every worker; it
            calls ``train.report`` the same number of times on every worker.
        train_loop_config: the ``config`` passed to it.
        backend_config: sets the group up (``on_start(group, scaling)``,
            ``on_shutdown(group)``), e.g. ``TorchConfig``.
        scaling_config: workers and their resources.
        run_config: name, storage, checkpoint and failure configs.
        datasets: ``name -> fedexec.data.Dataset``, split across the workers
            (``train.get_dataset_shard(name)``).
        resume_from_checkpoint: the checkpoint ``train.get_checkpoint()`` returns
            until the run reports one of its own.
        executor: the runtime to run on (default: the current one).
    """

    _default_name = "DataParallelTrainer"

    def __init__(self, train_loop_per_worker: Callable[..., Any], *,
                 train_loop_config: dict[str, Any] | None = None,
                 backend_config: Any = None,
                 scaling_config: ScalingConfig | None = None,
                 run_config: RunConfig | None = None,
                 datasets: Mapping[str, Any] | None = None,
                 resume_from_checkpoint: Checkpoint | None = None,
                 metadata: dict[str, Any] | None = None,
                 executor: fedexec.Executor | None = None) -> None:
        if not callable(train_loop_per_worker):
            raise TypeError("train_loop_per_worker must be a function fn(config) or fn()")
        for name, ds in (datasets or {}).items():
            if not hasattr(ds, "streaming_split"):
                raise TypeError(f"datasets[{name!r}] is a {type(ds).__name__}, not a "
                                "fedexec.data Dataset (make one with fedexec.data.from_items, "
                                "from_numpy, read_parquet ...)")
        self.train_loop_per_worker = train_loop_per_worker
        self.train_loop_config = train_loop_config
        self.backend_config = backend_config
        self.scaling_config = scaling_config or ScalingConfig()
        self.run_config = run_config or RunConfig()
        self.datasets = dict(datasets or {})
        self.resume_from_checkpoint = resume_from_checkpoint
        self.metadata = dict(metadata or {})
        self._executor = executor
        #: called with (metrics, Checkpoint | None) after each round (tune uses it)
        self._on_result: Callable[[dict[str, Any], Checkpoint | None], None] | None = None

    # ------------------------------------------------------------------ fit
    def fit(self) -> Result:
        """Train to the end of the loop and return its :class:`Result`.

        Raises:
            TrainingFailedError: more failures than ``FailureConfig.max_failures``;
                its cause is the last worker error.
            fedexec.UnsupportedOnBackendError: the backend cannot run the group.
        """
        executor = self._executor or fedexec.current_executor()
        check_backend(executor.backend, self.scaling_config.num_workers)
        rc = self.run_config
        path = run_directory(rc.storage_path or rc.local_dir, rc.name, self._default_name)
        storage = RunStorage(path, rc.checkpoint_config)
        failure = rc.failure_config or FailureConfig()
        history: list[dict[str, Any]] = []
        start = time.monotonic()
        failures = 0
        error: TrainingFailedError | None = None
        # the dashboard's /train page: updated each round (_rounds), finished below
        entry = registry.register("train", os.path.basename(path),
                                  self._board_info(history, 0, path), executor=executor)
        outcome = "ERRORED"
        try:
            while True:
                try:
                    self._run_group(executor, storage, history, start, entry)
                    outcome = "FINISHED"
                    break
                except _Failed as failed:
                    failures += 1
                    entry.update(self._board_info(history, failures, path),
                                 state="RESTARTING")
                    where = f"worker {failed.rank}" if failed.rank is not None else "the group"
                    if failure.max_failures != -1 and failures > failure.max_failures:
                        error = TrainingFailedError(
                            f"training failed: {where} raised {_describe(failed.cause)} "
                            f"({failures} failure(s), "
                            f"FailureConfig(max_failures={failure.max_failures})); see the "
                            "cause above; raise max_failures and report checkpoints to retry "
                            "from the latest one", failed.cause)
                        break
                    logger.warning("training failed (%s raised %s); restarting the %d workers "
                                   "from %s (failure %d of %s)", where, _describe(failed.cause),
                                   self.scaling_config.num_workers,
                                   storage.latest or self.resume_from_checkpoint or "scratch",
                                   failures, failure.max_failures)
        finally:
            storage.close()
            entry.finish(outcome, self._board_info(history, failures, path))
        if error is not None:
            raise error
        # metrics_dataframe is read from result.json when first asked for
        return Result(metrics=dict(history[-1]) if history else {},
                      config=dict(self.train_loop_config or {}), checkpoint=storage.latest,
                      best_checkpoints=storage.best_checkpoints(), path=path)

    def _run_group(self, executor: fedexec.Executor, storage: RunStorage,
                   history: list[dict[str, Any]], start: float,
                   entry: registry.Entry) -> None:
        """One gang from start to the end of the loop; raises :class:`_Failed`."""
        names = {"trial_name": _trial_name(self), "experiment_name": self.run_config.name,
                 "storage_path": self.run_config.storage_path, "trial_dir": storage.path,
                 "metadata": self.metadata}
        try:
            group = WorkerGroup(executor, self.scaling_config, storage.marker, names,
                                preload=tuple(getattr(self.backend_config, "preload", ())))
        except (fedexec.exceptions.ActorDiedError, fedexec.exceptions.WorkerCrashedError,
                fedexec.exceptions.NodeDiedError) as exc:
            raise _Failed(exc, None) from exc
        shards: dict[str, list[Any]] = {}
        try:
            try:
                if self.backend_config is not None:
                    self.backend_config.on_start(group, self.scaling_config)
                shards = self._split(group.size)
                runs = self._start_loops(group, storage, shards)
            except fedexec.UnsupportedOnBackendError:
                raise
            except Exception as exc:
                raise _Failed(exc, None) from exc
            self._rounds(executor, group, storage, history, start, entry)
            executor.wait(runs, num_returns=len(runs), timeout=_WAIT_S * 10)
        finally:
            group.shutdown()
            for parts in shards.values():  # each split's coordinator actor
                parts[0].shutdown()

    def _start_loops(self, group: WorkerGroup, storage: RunStorage,
                     shards: dict[str, list[Any]]) -> list[Any]:
        """Start every worker's loop; the refs of those calls (they end with it)."""
        latest = storage.latest or self.resume_from_checkpoint
        archive: bytes | None = None
        runs = []
        for rank, worker in enumerate(group.workers):
            where: Any = None
            if latest is not None and worker.shared_fs:
                where = ("path", latest.path)
            elif latest is not None:
                archive = archive if archive is not None else pack(latest.path)
                where = ("bytes", archive)
            runs.append(worker.actor.run.remote(
                self.train_loop_per_worker, copy.deepcopy(self.train_loop_config),
                context=worker.context, checkpoint=where,
                datasets={name: parts[rank] for name, parts in shards.items()},
                run_dir=storage.path, local=worker.shared_fs, next_index=storage.next_index))
        return runs

    def _split(self, n: int) -> dict[str, list[Any]]:
        """Each dataset as ``n`` streaming iterators on the trainer's executor:
        disjoint, together every row, their row counts within one of each other
        (so workers run the same number of steps, give or take the last batch)."""
        if not self.datasets:
            return {}
        from fedexec.data.context import DataContext

        context = DataContext.get_current()
        before = context.executor
        if self._executor is not None:
            context.executor = self._executor
        try:
            return {name: ds.streaming_split(n, equal=True, drop_remainder=False)
                    for name, ds in self.datasets.items()}
        finally:
            context.executor = before

    def _rounds(self, executor: fedexec.Executor, group: WorkerGroup, storage: RunStorage,
                history: list[dict[str, Any]], start: float, entry: registry.Entry) -> None:
        workers = group.workers
        while True:
            items: dict[int, tuple[str, Any]] = {}
            pending = {w.actor.poll.remote(): rank for rank, w in enumerate(workers)}
            while pending:
                ready, _ = executor.wait(list(pending), num_returns=1, timeout=_WAIT_S)
                for ref in ready:
                    rank = pending.pop(ref)
                    try:
                        item = executor.get(ref)
                    except Exception as exc:
                        raise _Failed(exc, rank) from exc
                    if item[0] == "wait":
                        pending[workers[rank].actor.poll.remote()] = rank
                    else:
                        items[rank] = item
            kinds = {kind for kind, _ in items.values()}
            if kinds == {"done"}:
                return
            if kinds != {"report"}:
                done = sorted(r for r, (k, _) in items.items() if k == "done")
                raise _Failed(RuntimeError(
                    f"worker(s) {done} returned while others called train.report: every worker "
                    "must call train.report the same number of times"), done[0])
            metrics, saved = items[0][1]
            row = {**metrics, "training_iteration": len(history) + 1,
                   "time_total_s": time.monotonic() - start, "timestamp": int(time.time())}
            checkpoint = storage.add_checkpoint(saved, row) if saved is not None else None
            history.append(row)
            storage.add_result(row)
            entry.update({**entry.info, **_progress(history)}, state="RUNNING")
            if self.run_config.verbose and sys.stdout.isatty():
                shown = ", ".join(f"{k}={_short(v)}" for k, v in metrics.items())
                print(f"[{os.path.basename(storage.path)}] iteration {len(history)}: {shown}"
                      + (f" (checkpoint {os.path.basename(checkpoint.path)})"
                         if checkpoint else ""), flush=True)
            if self._on_result is not None:
                self._on_result(dict(metrics), checkpoint)

    def _board_info(self, history: list[dict[str, Any]], failures: int,
                    path: str) -> dict[str, Any]:
        """What the dashboard shows of this run."""
        return {"workers": self.scaling_config.num_workers, **_progress(history),
                "failures": failures, "path": path}

    # ------------------------------------------------------------------ tune
    def as_trainable(self) -> Any:
        """This trainer as a tune trainable: each trial runs a copy of it with
        ``train_loop_config`` updated from the trial's ``config["train_loop_config"]``,
        its results and checkpoints reported to tune, and its workers counted as
        the trial's resources (the trial actor itself asks for no CPU)."""
        from fedexec import tune
        from fedexec.tune.resources import PlacementGroupFactory

        trainer = copy.copy(self)
        trainer._executor = None  # in the trial: the trial actor's runtime
        trainer._on_result = None

        def train_loop(config: dict[str, Any]) -> None:
            clone = copy.copy(trainer)
            clone.train_loop_config = {**(trainer.train_loop_config or {}),
                                       **dict(config.get("train_loop_config") or {})}
            context = tune.get_context()
            clone.run_config = copy.copy(trainer.run_config)
            clone.run_config.storage_path = context.get_trial_dir()
            clone.run_config.name = "train"
            resume = tune.get_checkpoint()
            if resume is not None:
                clone.resume_from_checkpoint = resume
            clone._on_result = lambda metrics, ckpt: tune.report(metrics, checkpoint=ckpt)
            clone.fit()

        train_loop.__name__ = type(self).__name__
        scaling = self.scaling_config
        bundles = [{"CPU": 0.0}, *scaling.bundles()]
        return tune.with_resources(train_loop, PlacementGroupFactory(
            bundles, strategy=scaling.placement_strategy))


def _progress(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest round's metrics, for the dashboard."""
    last = history[-1] if history else {}
    return {"iteration": len(history),
            "metrics": {k: v for k, v in last.items() if k != "timestamp"}}


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _trial_name(trainer: DataParallelTrainer) -> str:
    return trainer.run_config.name or type(trainer).__name__


def _cause(exc: BaseException) -> BaseException:
    """The user's exception inside a fedexec TaskError, else ``exc``."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message`` of the worker's own exception."""
    inner = _cause(exc)
    text = str(inner).strip()
    return f"{type(inner).__name__}: {text.splitlines()[0]}" if text else type(inner).__name__
