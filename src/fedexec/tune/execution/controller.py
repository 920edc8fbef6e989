"""The controller: the experiment's loop, in the driver.

::

    searcher ──suggest──▶ Trial (PENDING) ──start──▶ ActorManager ──▶ TrialActor.step
                                   ▲                                      │ Batch
    scheduler ◀── each result ─────┴── decisions (CONTINUE/PAUSE/STOP) ◀──┘
        │                    Writer thread ◀── results, trial files, checkpoints, state
        └── choose_trial_to_run (PENDING / PAUSED)

Each running trial has exactly one ``step`` call in flight. The loop waits for any
of them, handles every result of the returned batch in order (stopper →
scheduler → searcher → loggers and callbacks), and answers with the next
``Command`` (the acknowledgement, a save, a stop). Results that arrive after a
trial was decided to stop are dropped, so the recorded history is the one a
step-by-step run would have produced. Trials start while their resources fit
in the cluster (counting idle reusable actors) and ``max_concurrent_trials``
allows.

Pipelining: when trials need no decision per result (FIFO, a dict ``stop``),
actors are reused and the searcher does not learn from results (the default),
up to ``QUEUE_DEPTH`` next trials' starts are queued on an actor right behind
the first call of the trial last sent to it, so the actor runs each the moment
the one ahead ends, without a round trip through the driver (what makes short
trials cheap). An actor counts as one running trial (and its resources once),
whatever is queued on it; if the trial ahead is still running when a queued
start reaches the actor, the start is refused and the trial goes back to the
queue. Its files and ``on_trial_start`` wait until the actor accepted it.

State (besides the trials): ``live`` (trial id → _Live: its actor, the call in
flight, results decided, the phase ``run | stop | pause | restart | error``),
``pending`` (a FIFO of PENDING trials for the default trial choice), the
searcher's progress (``next_index``, ``search_finished``).
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import re
import shutil
import signal
import threading
import time
import traceback
import uuid
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

import fedexec
from fedexec.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    FedexecError,
    NodeDiedError,
    WorkerCrashedError,
)
from fedexec.util import registry

from .._board import experiment_info
from ..analysis import STATE_FILE
from ..callback import Callback
from ..checkpoint import pack, unpack
from ..config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from ..error import TuneError
from ..experiment.trial import Trial
from ..logger.logger import DEFAULT_LOGGERS, LoggerCallback
from ..logger.writer import Writer
from ..progress import ProgressReporter, default_reporter
from ..schedulers.trial_scheduler import FIFOScheduler, TrialScheduler
from ..search.basic_variant import BasicVariantGenerator
from ..search.sample import Domain
from ..search.searcher import Searcher
from ..search.variant_generator import (
    format_vars,
    get_path,
    leaf_paths,
    resolve,
)
from ..stopper import DictStopper, Stopper, as_stopper
from ..trainable.registry import TrainableSpec
from .actor_manager import ActorManager, ActorRecord, shape_of
from .checkpoints import to_delete
from .messages import Batch, Command, StartSpec

__all__ = ["TuneController"]

WINDOW = 1024          # results a trial may run ahead when nobody decides per result
POLL_S = 0.5           # how long an actor waits for a result before answering
QUEUE_DEPTH = 2        # trials queued on an actor behind its current one
TICK_S = 0.2           # the loop's longest wait
RESOURCES_REFRESH_S = 10.0
_DEAD = (ActorDiedError, ActorUnavailableError, NodeDiedError, WorkerCrashedError)


@dataclass(eq=False)
class _Live:
    trial: Trial
    actor: ActorRecord
    ref: Any = None
    decided: int = 0
    phase: str = "run"
    save_next: bool = False
    restart: tuple[dict[str, Any], str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    queued: bool = False    # a queued start the actor has not accepted yet
    answered: bool = False  # its first call returned


class TuneController:
    """Runs one experiment to its end (see the module docstring)."""

    def __init__(self, *, spec: TrainableSpec, param_space: dict[str, Any],
                 tune_config: TuneConfig, run_config: RunConfig, executor: fedexec.Executor,
                 experiment_path: str, experiment_name: str,
                 restored: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.param_space = param_space
        self.tune_config = tune_config
        self.run_config = run_config
        self.experiment_path = experiment_path
        self.experiment_name = experiment_name
        self._ex = executor
        self._metric, self._mode = tune_config.metric, tune_config.mode
        self._checkpoint_config = run_config.checkpoint_config or CheckpointConfig()
        self._failure_config = run_config.failure_config or FailureConfig()
        self._stopper: Stopper | None = as_stopper(run_config.stop)
        self._scheduler: TrialScheduler = tune_config.scheduler or FIFOScheduler()
        self._searcher: Searcher = tune_config.search_alg or BasicVariantGenerator()
        self._trials: list[Trial] = []
        self._by_id: dict[str, Trial] = {}
        self._pending: deque[Trial] = deque()
        self._paused: dict[str, Trial] = {}  # in the order they paused
        self._blobs: dict[str, tuple[tuple[Any, ...], bytes]] = {}  # pickled trials, cached
        self._live: dict[str, _Live] = {}
        self._refs: dict[Any, _Live] = {}
        self._next_index = 0
        self._exp_id = uuid.uuid4().hex[:5]
        self.search_finished = False
        if restored is not None:
            self._restore(restored)
        self._fast_choice = (type(self._scheduler).choose_trial_to_run
                             is TrialScheduler.choose_trial_to_run)
        callbacks = list(run_config.callbacks or [])
        self._loggers = [c for c in callbacks if isinstance(c, LoggerCallback)]
        if not any(type(c) in DEFAULT_LOGGERS for c in self._loggers):
            self._loggers += [cls() for cls in DEFAULT_LOGGERS]
        self._callbacks: list[Callback] = [c for c in callbacks
                                           if not isinstance(c, LoggerCallback)]
        reporter = run_config.progress_reporter
        self._reporter: ProgressReporter | None = (
            reporter if reporter is not None else default_reporter(run_config.verbose))
        self._verbose = run_config.verbose
        self._iteration = 0
        self._interrupted = False
        self._stop_all = False
        self._raise: BaseException | None = None
        self._validate()

    # ------------------------------------------------------------------ for schedulers
    def get_trials(self) -> list[Trial]:
        return self._trials

    def get_trial(self, trial_id: str) -> Trial | None:
        return self._by_id.get(trial_id)

    def get_live_trials(self) -> list[Trial]:
        return [live.trial for live in self._live.values()]

    def request_checkpoint(self, trial: Trial) -> None:
        """Have a class trainable save a checkpoint at its current iteration."""
        live = self._live.get(trial.trial_id)
        if live is not None and self.spec.kind == "class":
            live.save_next = True

    def exploit(self, trial: Trial, new_config: dict[str, Any], donor: Trial) -> None:
        """Restart ``trial`` with ``new_config`` from ``donor``'s latest checkpoint (PBT)."""
        assert donor.latest_checkpoint is not None
        source, metrics = donor.latest_checkpoint
        iteration = int(metrics.get("training_iteration") or 0)
        dest = os.path.join(trial.local_path,
                            f"checkpoint_{iteration:06d}_from_{donor.trial_id}")
        shutil.copytree(source, dest, dirs_exist_ok=True)
        self._add_checkpoint(trial, dest, dict(metrics))
        live = self._live.get(trial.trial_id)
        if live is None:
            trial.config = new_config
            trial.restore_from = dest
            return
        live.phase = "restart"
        live.restart = (new_config, dest)

    def stop_trial(self, trial: Trial | str) -> None:
        """End a trial: a running one at its next answer (also one on its way to
        pausing: it ends TERMINATED, not PAUSED), another one now."""
        trial = self._by_id[trial] if isinstance(trial, str) else trial
        live = self._live.get(trial.trial_id)
        if live is not None:
            if live.phase in ("run", "pause"):
                live.phase = "stop"
            return
        if trial.is_finished():
            return
        with contextlib.suppress(ValueError):
            self._pending.remove(trial)
        trial.status = Trial.TERMINATED
        self._paused.pop(trial.trial_id, None)
        self._scheduler.on_trial_remove(self, trial)
        self._searcher.on_trial_complete(trial.trial_id, trial.last_result or None)
        self._each_callback("on_trial_complete", trial=trial)

    def pause_trial(self, trial: Trial) -> None:
        live = self._live.get(trial.trial_id)
        if live is not None and live.phase == "run":
            live.phase = "pause"

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[Trial]:
        """Run the experiment; returns every trial (also after Ctrl-C)."""
        self._actors = ActorManager(self._ex)
        self._writer = Writer(self._loggers)
        self._setup()
        self._entry = registry.register("tune", self.experiment_name, self._board_info(),
                                        executor=self._ex)
        previous = self._install_sigint()
        start = time.monotonic()
        self._last_save = time.monotonic()
        self._save_every = 5.0
        outcome = "ERRORED"
        try:
            self._loop(start)
            outcome = "FINISHED"
        except KeyboardInterrupt:
            self._interrupted = True
        finally:
            try:
                self._teardown(previous)
            finally:
                outcome = "STOPPED" if self._interrupted else outcome
                self._entry.finish(outcome if self._raise is None else "ERRORED",
                                   self._board_info())
        if self._raise is not None:
            raise self._raise
        return self._trials

    def _setup(self) -> None:
        space = self.param_space
        self._searcher.set_search_properties(self._metric, self._mode, copy.deepcopy(space),
                                             num_samples=self.tune_config.num_samples)
        self._scheduler.set_search_properties(self._metric, self._mode)
        self._total = self._ex.cluster_resources()
        self._total_at = time.monotonic()
        self._driver_node = self._ex.get_runtime_context().node_id
        self._blob = cloudpickle.dumps(self.spec.obj)
        self._key = uuid.uuid4().hex
        self._parameter_refs = {name: self._ex.put(value)
                                for name, value in self.spec.parameters.items()}
        reuse = self.tune_config.reuse_actors
        self._reuse = self.spec.supports_reset if reuse is None else bool(reuse)
        per_result = self._scheduler.decides_per_result or (
            self._stopper is not None and not isinstance(self._stopper, DictStopper))
        self._window = 1 if per_result else WINDOW
        self._local_stop = (self._stopper.criteria if isinstance(self._stopper, DictStopper)
                            else None)
        # queued trials are suggested before the results ahead of them arrive: only
        # for searchers whose suggestions do not depend on results
        self._pipelining = (self._reuse and self.spec.kind == "function" and self._window > 1
                            and self._fast_choice
                            and type(self._searcher) is BasicVariantGenerator)
        self._no_queue: set[str] = set()  # trials never to queue (a queued start died)
        os.makedirs(self.experiment_path, exist_ok=True)
        if self._reporter is not None:
            total = getattr(self._searcher, "total_samples", None)
            self._reporter.setup(start_time=time.time(), total_samples=total,
                                 metric=self._metric, mode=self._mode)
        for callback in self._callbacks:
            callback.setup(stop=self.run_config.stop, num_samples=self.tune_config.num_samples)
        for trial in self._trials:  # restored trials that will run again
            if trial.status == Trial.PENDING and trial not in self._pending:
                self._pending.append(trial)

    def _loop(self, start: float) -> None:
        budget = self.tune_config.time_budget_s
        while True:
            if self._interrupted:
                return
            self._each_callback("on_step_begin")
            if not self._stop_all:
                self._start_trials()
            if not self._live:
                if self._stop_all or not self._can_make_progress():
                    return
            self._wait_and_process()
            now = time.monotonic()
            if budget is not None and now - start >= budget and not self._stop_all:
                self._stop_everything()
            if self._stopper is not None and self._stopper.stop_all():
                self._stop_everything()
            self._each_callback("on_step_end")
            self._iteration += 1
            self._periodic(now)

    def _can_make_progress(self) -> bool:
        """Nothing runs: is there still a trial to start?"""
        if self._next_candidate(peek=True) is not None:
            return True
        if not self.search_finished:
            trial = self._create_trial()
            if trial is not None:
                return True
            if not self.search_finished:
                warnings.warn("the searcher suggests no new trial while none is running; "
                              "ending the experiment", stacklevel=2)
        return False

    def _wait_and_process(self) -> None:
        refs = list(self._refs)
        if not refs:
            return
        self._ex.wait(refs, num_returns=1, timeout=TICK_S)
        for ref in refs:
            if ref.done() and ref in self._refs:
                live = self._refs.pop(ref)
                self._on_answer(live, ref)
                if not self._stop_all and not self._interrupted:
                    self._start_trials()  # keep actors busy while answers are handled

    def _board_info(self) -> dict[str, Any]:
        return experiment_info(self._trials, self._metric, self._mode, self.experiment_path)

    def _periodic(self, now: float) -> None:
        if self._entry.due():
            self._entry.update(self._board_info())
        if self._reporter is not None and self._reporter.should_report(self._trials):
            self._reporter.report(self._trials, False)
        if now - self._last_save >= self._save_every:
            began = time.monotonic()
            self._save_state()
            self._save_every = max(5.0, 20 * (time.monotonic() - began))
            self._last_save = time.monotonic()
        if now - self._total_at >= RESOURCES_REFRESH_S:
            self._total, self._total_at = self._ex.cluster_resources(), now

    # ------------------------------------------------------------------ starting trials
    def _start_trials(self) -> None:
        limit = self.tune_config.max_concurrent_trials
        running = sum(1 for live in self._live.values() if live.actor.lives[0] is live)
        while limit is None or running < limit:
            trial = self._candidate()
            if trial is None:
                break
            request = trial.placement_group_factory
            if not self._fits(request.required_resources, request.head_bundle):
                break
            self._next_candidate(peek=False)
            self._launch(trial)
            running += 1
        if self._pipelining:
            self._queue_trials()

    def _candidate(self) -> Trial | None:
        """The next trial to start (asking the searcher for a new one if needed)."""
        while True:
            trial = self._next_candidate(peek=True)
            if trial is not None or self.search_finished:
                return trial
            if self._create_trial() is None:
                return None

    def _queue_trials(self) -> None:
        """Queue the next trials on actors whose last trial's first call is still out."""
        records = [live.actor for live in self._live.values() if live.actor.lives[0] is live]
        for record in records:
            while len(record.lives) <= QUEUE_DEPTH and not record.lives[-1].answered and all(
                    other.phase == "run" for other in record.lives):
                if not self._queue_one(record):
                    return

    def _queue_one(self, record: ActorRecord) -> bool:
        trial = self._candidate()
        if (trial is None or trial.status != Trial.PENDING or trial.restore_from
                or trial.trial_id in self._no_queue
                or shape_of(trial.placement_group_factory.head_bundle) != record.shape):
            return False
        self._next_candidate(peek=False)
        self._launch(trial, record, queued=True)
        return True

    def _next_candidate(self, peek: bool) -> Trial | None:
        if self._fast_choice:
            while self._pending and self._pending[0].status != Trial.PENDING:
                self._pending.popleft()
            if self._pending:
                return self._pending[0] if peek else self._pending.popleft()
            return next(iter(self._paused.values()), None)
        if peek:
            self._chosen = self._scheduler.choose_trial_to_run(self)
            return self._chosen
        chosen = getattr(self, "_chosen", None)
        with contextlib.suppress(ValueError):
            self._pending.remove(chosen)  # type: ignore[arg-type]
        return chosen

    def _fits(self, request: dict[str, float], head: dict[str, float]) -> bool:
        used = self._actors.idle_resources()
        reusable = self._reuse and self._actors.idle.get(tuple(sorted(head.items())))
        if reusable:  # the trial takes an idle actor: its head bundle is already counted
            for key, value in head.items():
                used[key] = used.get(key, 0.0) - value
        for live in self._live.values():
            if live.actor.lives[0] is not live:
                continue  # queued on an actor whose current trial is counted
            for key, value in live.trial.placement_group_factory.required_resources.items():
                used[key] = used.get(key, 0.0) + value
        for key, value in request.items():
            if value <= 0:
                continue
            total = self._total.get(key, 0.0)
            if value > total + 1e-9:
                raise ValueError(
                    f"a trial needs {request} but the cluster has only {self._total}: lower "
                    "the trial's resources (tune.with_resources / resources_per_trial) or add "
                    "nodes")
            if used.get(key, 0.0) + value > total + 1e-9:
                if self._actors.drop_idle(tuple(sorted(head.items()))):
                    return self._fits(request, head)
                return False
        return True

    def _create_trial(self) -> Trial | None:
        num_samples = self.tune_config.num_samples
        basic = isinstance(self._searcher, BasicVariantGenerator)
        if not basic and num_samples > 0 and self._next_index >= num_samples:
            self.search_finished = True
            return None
        index = self._next_index
        trial_id = f"{self._exp_id}_{index:05d}"
        suggestion = self._searcher.suggest(trial_id)
        if suggestion == Searcher.FINISHED:
            self.search_finished = True
            return None
        if suggestion is None:
            return None
        self._next_index += 1
        assert isinstance(suggestion, dict)
        config = suggestion if basic else self._merge(suggestion)
        varying = {path: get_path(config, path) for path, leaf in leaf_paths(self.param_space)
                   if isinstance(leaf, Domain) or _is_grid(leaf)}
        with contextlib.suppress(Exception):
            varying = varying or {(k,): v for k, v in suggestion.items()}
        tag = f"{index}_{format_vars(varying)}" if varying else str(index)
        trial = Trial(trial_id, self.spec.name, config, tag, "",
                      self.spec.resources_for(config), f"{self.spec.name}_{trial_id}")
        if self.tune_config.trial_name_creator is not None:
            trial.trial_name = str(self.tune_config.trial_name_creator(trial))
        dirname = (self.tune_config.trial_dirname_creator(trial)
                   if self.tune_config.trial_dirname_creator is not None
                   else f"{trial.trial_name}_{tag}")
        trial.local_path = os.path.join(self.experiment_path, _safe(dirname))
        self._trials.append(trial)
        self._by_id[trial_id] = trial
        self._pending.append(trial)
        self._scheduler.on_trial_add(self, trial)
        return trial

    def _merge(self, suggestion: dict[str, Any]) -> dict[str, Any]:
        config = copy.deepcopy(self.param_space)
        _deep_update(config, suggestion)
        _, resolved = resolve(config)  # sample_from functions and anything left
        return dict(resolved)

    def _launch(self, trial: Trial, record: ActorRecord | None = None,
                queued: bool = False) -> None:
        if record is None:
            record = self._actors.acquire(trial.placement_group_factory.head_bundle, self._reuse)
        blob = None
        if self._key not in record.trainables:
            blob = self._blob
            record.trainables.add(self._key)
        first_start = trial.start_time is None
        trial.start_time = trial.start_time or time.time()
        trial.status = Trial.RUNNING
        self._paused.pop(trial.trial_id, None)
        restore = trial.restore_from
        spec = StartSpec(
            trial_id=trial.trial_id, trial_name=trial.trial_name, trial_dir=trial.local_path,
            experiment_name=self.experiment_name, trainable_key=self._key, trainable_blob=blob,
            kind=self.spec.kind, call_style=self.spec.call_style, config=trial.config,
            checkpoint=self._where(restore, record) if restore else None,
            parameters=self._parameter_refs, resources=trial.resources, window=self._window,
            stop=self._local_stop,
            checkpoint_frequency=self._checkpoint_config.checkpoint_frequency,
            checkpoint_at_end=bool(self._checkpoint_config.checkpoint_at_end),
            driver_node=self._driver_node, reuse_instance=self._reuse)
        trial.restore_from = None
        live = _Live(trial, record, queued=queued)
        record.lives.append(live)
        self._live[trial.trial_id] = live
        self._send(live, Command(start=spec, timeout=POLL_S, queued=queued))
        if not queued:
            self._started(live, restored=bool(restore and not first_start))

    def _started(self, live: _Live, restored: bool = False) -> None:
        """The trial runs on its actor: open its files, tell the callbacks."""
        self._writer.trial_start(live.trial)
        self._each_callback("on_trial_start", trial=live.trial)
        if restored:
            self._each_callback("on_trial_restore", trial=live.trial)

    def _where(self, path: str, record: ActorRecord) -> tuple[str, Any]:
        """How a checkpoint on the driver's disk reaches ``record``'s node."""
        if record.node is None:
            record.node = self._ex.get(record.handle.node_id.remote(), timeout=300)
        return ("path", path) if record.node == self._driver_node else ("bytes", pack(path))

    def _send(self, live: _Live, command: Command) -> None:
        live.ref = live.actor.handle.step.remote(command)
        self._refs[live.ref] = live

    # ------------------------------------------------------------------ answers
    def _on_answer(self, live: _Live, ref: Any) -> None:
        try:
            answer = ref.result()
        except BaseException as exc:
            if isinstance(exc, Exception) and live.queued:
                # the actor died before the queued trial was known to run (most
                # likely the trial ahead of it): start it again later, unqueued
                self._no_queue.add(live.trial.trial_id)
                self._drop_actor(live)
                self._requeue(live)
                return
            if isinstance(exc, _DEAD) or (isinstance(exc, FedexecError)
                                          and live.phase != "error"):
                self._drop_actor(live)
            elif not isinstance(exc, Exception):
                raise
            # else: the trial's own error (raised by raise_error), or an error
            # class fedexec could not wrap
            self._trial_failed(live, exc)
            return
        live.answered = True
        if live.queued:
            if answer.refused:
                self._requeue(live)
                return
            live.queued = False
            self._started(live)
        if live.phase == "error":
            self._trial_failed(live, TuneError(f"trial {live.trial} failed"))
            return
        self._on_batch(live, answer)

    def _on_batch(self, live: _Live, batch: Batch) -> None:
        trial = live.trial
        for result in batch.results:
            if live.phase != "run":
                break  # decided already: later results are dropped
            where = result.pop("_checkpoint", None)
            live.decided += 1
            self._on_result(live, result, where)
        if batch.saved is not None:
            self._register_checkpoint(trial, batch.saved, trial.last_result)
        if self._stop_all and live.phase == "run":
            live.phase = "stop"
        if batch.finished:
            self._on_finished(live, batch)
            return
        if live.phase == "run":
            save, live.save_next = live.save_next, False
            self._send(live, Command(ack=live.decided, save=save, timeout=POLL_S))
        else:
            save = live.save_next or (live.phase == "pause" and self.spec.kind == "class")
            live.save_next = False
            self._send(live, Command(ack=live.decided, save=save, stop=True))

    def _on_result(self, live: _Live, result: dict[str, Any],
                   where: tuple[str, Any] | None) -> None:
        trial = live.trial
        trial.update_last_result(result)
        if where is not None:
            self._register_checkpoint(trial, where, result)
        self._searcher.on_trial_result(trial.trial_id, result)
        done = bool(result.get("done"))
        if not done and self._stopper is not None and self._stopper(trial.trial_id, result):
            done = True
        decision = TrialScheduler.CONTINUE
        if not done:
            decision = self._scheduler.on_trial_result(self, trial, result)
        if done or decision == TrialScheduler.STOP:
            result["done"] = True
            if live.phase == "run":
                live.phase = "stop"
        elif decision == TrialScheduler.PAUSE and live.phase == "run":
            live.phase = "pause"
        self._writer.trial_result(self._iteration, trial, result)
        self._each_callback("on_trial_result", trial=trial, result=result)
        if self._verbose >= 3:
            print(f"{trial.trial_name}: {_brief(result)}", flush=True)

    def _on_finished(self, live: _Live, batch: Batch) -> None:
        trial, record = live.trial, live.actor
        if batch.failed:
            live.phase = "error"
            live.ref = record.handle.raise_error.remote(trial.trial_id)
            self._refs[live.ref] = live
            return
        del self._live[trial.trial_id]
        if live.phase == "restart" and live.restart is not None:
            new_config, checkpoint = live.restart
            trial.config = new_config
            trial.restore_from = checkpoint
            self._writer.trial_end(trial)
            if batch.clean:
                record.lives.remove(live)
                self._launch(trial, record)
            else:
                self._drop_actor(live)
                self._launch(trial)
            return
        self._release(live, keep=batch.clean and self._reuse)
        if live.phase == "pause":
            trial.status = Trial.PAUSED
            self._paused[trial.trial_id] = trial
            trial.restore_from = trial.latest_checkpoint[0] if trial.latest_checkpoint else None
            self._writer.trial_end(trial)
            return
        if trial.last_result and not trial.last_result.get("done"):
            trial.last_result = {**trial.last_result, "done": True}
        self._complete(trial)

    def _complete(self, trial: Trial) -> None:
        trial.status = Trial.TERMINATED
        trial.error = None
        self._scheduler.on_trial_complete(self, trial, trial.last_result)
        self._searcher.on_trial_complete(trial.trial_id, trial.last_result or None)
        self._writer.trial_end(trial)
        self._each_callback("on_trial_complete", trial=trial)
        if self._verbose >= 2:
            print(f"Trial {trial.trial_name} completed: {_brief(trial.last_result)}", flush=True)

    def _trial_failed(self, live: _Live, error: BaseException) -> None:
        trial = live.trial
        self._live.pop(trial.trial_id, None)
        if live.ref is not None:
            self._refs.pop(live.ref, None)
        if live.actor is not None:
            self._release(live, keep=self._reuse)
        trial.num_failures += 1
        text = str(error) or repr(error)
        if not isinstance(error, FedexecError):
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        trial.error_msg, trial.error = text, error
        path = os.path.join(trial.local_path, "error.txt")
        self._writer.submit(_append, path, f"Failure # {trial.num_failures} "
                            f"(occurred at {time.strftime('%Y-%m-%d_%H-%M-%S')})\n{text}\n\n")
        limit = self._failure_config.max_failures
        self._writer.trial_end(trial, failed=True)
        if limit < 0 or trial.num_failures <= limit:
            trial.status = Trial.PENDING
            trial.restore_from = trial.latest_checkpoint[0] if trial.latest_checkpoint else None
            self._pending.append(trial)
            self._each_callback("on_trial_recover", trial=trial)
            return
        trial.status = Trial.ERROR
        self._scheduler.on_trial_error(self, trial)
        self._searcher.on_trial_complete(trial.trial_id, trial.last_result or None, error=True)
        self._each_callback("on_trial_error", trial=trial)
        if self._verbose >= 1:
            print(f"Trial {trial.trial_name} errored: {text.splitlines()[0] if text else ''}",
                  flush=True)
        fail_fast = self._failure_config.fail_fast
        if fail_fast:
            self._stop_everything()
            if fail_fast == "raise":
                self._raise = error

    # ------------------------------------------------------------------ actors
    def _release(self, live: _Live, keep: bool) -> None:
        """``live``'s trial left its actor: the trial queued behind it goes on there;
        with none, the actor becomes idle (``keep``) or ends."""
        record = live.actor
        record.lives.remove(live)
        if not record.lives:
            self._actors.release(record, keep=keep)
        elif not keep:
            self._drop_actor(None, record)

    def _drop_actor(self, live: _Live | None, record: ActorRecord | None = None) -> None:
        """End the actor of ``live`` (or ``record``); the trials queued on it go back
        to the front of the queue."""
        if live is not None:
            record = live.actor
            live.actor = None  # type: ignore[assignment]
            if live in record.lives:
                record.lives.remove(live)
        assert record is not None
        for other in list(record.lives):
            self._requeue(other)
        self._actors.kill(record)

    def _requeue(self, live: _Live) -> None:
        """A queued start that did not happen: the trial waits at the front again."""
        trial = live.trial
        self._live.pop(trial.trial_id, None)
        if live.ref is not None:
            self._refs.pop(live.ref, None)
        record = live.actor
        if record is not None and live in record.lives:
            record.lives.remove(live)
            if not record.lives:
                self._actors.release(record, keep=True)
        trial.status = Trial.PENDING
        at = 0  # back in creation order, near the front
        while at < len(self._pending) and self._pending[at].trial_id < trial.trial_id:
            at += 1
        self._pending.insert(at, trial)

    # ------------------------------------------------------------------ checkpoints
    def _register_checkpoint(self, trial: Trial, where: tuple[str, Any],
                             metrics: dict[str, Any]) -> None:
        kind, value = where
        if kind == "bytes":
            iteration = int(metrics.get("training_iteration") or 0)
            path = unpack(value, os.path.join(trial.local_path, f"checkpoint_{iteration:06d}"))
        else:
            path = str(value)
        self._add_checkpoint(trial, path, {k: v for k, v in metrics.items() if k != "config"})

    def _add_checkpoint(self, trial: Trial, path: str, metrics: dict[str, Any]) -> None:
        record = (path, metrics)
        trial.checkpoints = [r for r in trial.checkpoints if r[0] != path] + [record]
        trial.latest_checkpoint = record
        for old in to_delete(trial.checkpoints, self._checkpoint_config):
            trial.checkpoints.remove(old)
            self._writer.delete(old[0])
        self._each_callback("on_checkpoint", trial=trial, checkpoint=path)

    # ------------------------------------------------------------------ ending
    def _stop_everything(self) -> None:
        """End the experiment: no new trials, every running trial stopped. Trials
        that wait for a decision per result stop now (what they report later is
        dropped); trials that run ahead (FIFO) stop at their next answer, after the
        results in it are recorded (a queued trial that had not started stays
        PENDING)."""
        self._stop_all = True
        if self._window == 1:
            for live in self._live.values():
                if live.phase == "run":
                    live.phase = "stop"

    def _install_sigint(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum: int, frame: Any) -> None:
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True

        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:
            return None

    def _teardown(self, previous_handler: Any) -> None:
        try:
            if self._interrupted or self._live:
                for live in list(self._live.values()):
                    live.trial.status = Trial.PAUSED
                    live.trial.restore_from = (live.trial.latest_checkpoint[0]
                                               if live.trial.latest_checkpoint else None)
                    self._writer.trial_end(live.trial)
                self._live.clear()
                self._refs.clear()
            self._actors.shutdown(timeout=0 if self._interrupted else 5.0)
            self._save_state()
            self._writer.close()
            if self._reporter is not None:
                self._reporter.report(self._trials, True)
            self._each_callback("on_experiment_end", iteration=False)
            if self._interrupted:
                print(f"Experiment interrupted: its state is saved in {self.experiment_path}; "
                      "resume it with tune.Tuner.restore(path, trainable) (or tune.run(..., "
                      "resume=True))", flush=True)
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Everything ``Tuner.restore`` needs, except the trainable."""
        return {"version": 1, "trials": self._trials, "searcher": self._searcher,
                "scheduler": self._scheduler, "param_space": self.param_space,
                "tune_config": self.tune_config, "run_config": self.run_config,
                "next_index": self._next_index, "exp_id": self._exp_id,
                "search_finished": self.search_finished, "trainable_name": self.spec.name,
                "experiment_name": self.experiment_name}

    def _trial_blobs(self) -> list[bytes]:
        """Each trial pickled; a trial unchanged since the last save is not pickled
        again (a finished trial never is), so saving costs O(trials that changed)."""
        out = []
        for trial in self._trials:
            mark = (trial.status, trial.num_results, trial.num_failures,
                    len(trial.checkpoints), trial.restore_from, id(trial.config))
            cached = self._blobs.get(trial.trial_id)
            if cached is None or cached[0] != mark:
                cached = (mark, _state_bytes(trial))
                self._blobs[trial.trial_id] = cached
            out.append(cached[1])
        return out

    def _save_state(self) -> None:
        state = self.state()
        state["trials"] = self._trial_blobs()
        try:
            blob = cloudpickle.dumps(state)
        except Exception:  # callbacks or reporters that cannot be pickled
            run_config = copy.copy(self.run_config)
            run_config.callbacks, run_config.progress_reporter = None, None
            state["run_config"] = run_config
            blob = cloudpickle.dumps(state)
        self._writer.write_file(os.path.join(self.experiment_path, STATE_FILE), blob)

    def _restore(self, state: dict[str, Any]) -> None:
        self._trials = list(state["trials"])
        self._by_id = {t.trial_id: t for t in self._trials}
        self._paused = {t.trial_id: t for t in self._trials if t.status == Trial.PAUSED}
        self._searcher = state["searcher"]
        self._scheduler = state["scheduler"]
        self._next_index = state["next_index"]
        self._exp_id = state["exp_id"]
        self.search_finished = state["search_finished"]

    # ------------------------------------------------------------------ callbacks
    def _each_callback(self, hook: str, iteration: bool = True, **info: Any) -> None:
        if not self._callbacks:
            return
        for callback in self._callbacks:
            method = getattr(callback, hook, None)
            if method is None:
                continue
            if iteration:
                method(iteration=self._iteration, trials=self._trials, **info)
            else:
                method(trials=self._trials, **info)

    def _validate(self) -> None:
        cfg = self._checkpoint_config
        if self.spec.kind == "function" and (cfg.checkpoint_frequency or cfg.checkpoint_at_end):
            raise ValueError("checkpoint_frequency / checkpoint_at_end apply to class trainables: "
                             "a function trainable saves checkpoints with "
                             "tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))")
        if "actors" not in fedexec.backends.capabilities(self._ex.backend):
            raise fedexec.UnsupportedOnBackendError(
                f"fedexec.tune runs each trial in an actor, and the {self._ex.backend!r} backend "
                "has no actors: use the native, local or dask backend")


# ---------------------------------------------------------------------- helpers
def _is_grid(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "grid_search" in value


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and not _is_grid(
                base.get(key)):
            _deep_update(base[key], value)
        else:
            base[key] = value


def _safe(name: str) -> str:
    return re.sub(r"[^\w.,=+\-\[\]]", "_", name)[:120]


def _state_bytes(obj: Any) -> bytes:
    """``obj`` pickled for the experiment state: by the C pickler (several times
    faster), unless ``obj`` holds what only cloudpickle keeps loadable elsewhere
    (lambdas, local functions, anything of ``__main__`` or of a module pickled by
    value)."""
    try:
        blob = pickle.dumps(obj, protocol=5)
    except Exception:
        return cloudpickle.dumps(obj)
    by_value = ("__main__", *cloudpickle.list_registry_pickle_by_value())
    if any(name.encode() in blob for name in by_value):
        return cloudpickle.dumps(obj)
    return blob


def _append(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write(text)


def _brief(result: dict[str, Any]) -> str:
    keys = [k for k in result if k not in ("date", "hostname", "pid", "timestamp", "trial_id",
                                           "time_this_iter_s", "time_since_restore",
                                           "iterations_since_restore", "config")]
    return ", ".join(f"{k}={result[k]:.4g}" if isinstance(result[k], float) else
                     f"{k}={result[k]}" for k in keys[:8])
