"""The trial actor: runs one trial at a time, in a thread of its own.

::

    controller ── step(Command) ──▶ TrialActor (one actor call at a time)
        ▲                            │ start: unpickle the trainable (cached), fetch the
        │                            │        with_parameters objects (cached), start the
        │                            │        trial thread
        │                            │ ack / save / stop → the trial's Outbox
        └──── Batch(results...) ◀────┘ take(): every result buffered since the last call

    trial thread: fn(config) → tune.report → Session → Outbox.put (waits while
                  `window` results are unacknowledged)
                  or, for a class: setup; loop { serve saves; train(); put }

A reused actor keeps the unpickled trainables and parameters, so a new trial on
it costs one round trip. Reporting never waits for the driver unless the
scheduler decides on every result (window 1).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import traceback
from typing import Any

import cloudpickle

import fedexec
from fedexec.util.serialization import loads as safe_loads

from ..checkpoint import Checkpoint, locate
from ..trainable.session import Outbox, Session, StopTrial, TrialContext, activate
from ..trainable.trainable import Trainable
from .messages import Batch, Command, StartSpec

__all__ = ["TrialActor"]

#: how long ``stop`` waits for the trial's thread to end before calling the actor unclean
STOP_GRACE_S = 10.0
#: how long ``shutdown`` waits for a running trial's thread to end
SHUTDOWN_GRACE_S = 2.0
#: how long an answer with results waits for more (or the trial's end) when
#: the trial runs ahead of the controller
LINGER_S = 0.002


def stop_reached(stop: dict[str, Any] | None, result: dict[str, Any]) -> bool:
    """Whether ``result`` meets any criterion of a stop dict (``result[k] >= v``)."""
    if not stop:
        return False
    for key, bound in stop.items():
        value = result.get(key)
        if value is not None and value >= bound:
            return True
    return False


class _Run:
    """One trial on this actor: its session, outbox and thread."""

    def __init__(self, spec: StartSpec, trainable: Any, parameters: dict[str, Any],
                 node_id: str, kept: Trainable | None) -> None:
        self.spec = spec
        self.outbox = Outbox(spec.window)
        local = spec.driver_node == node_id
        if local:
            os.makedirs(spec.trial_dir, exist_ok=True)
        self.scratch: str | None = None
        directory = locate(spec.checkpoint)
        if spec.checkpoint is not None and spec.checkpoint[0] == "bytes":
            self.scratch = directory
        context = TrialContext(spec.trial_id, spec.trial_name, spec.trial_dir,
                               spec.experiment_name, dict(spec.resources), dict(spec.config))
        self.session = Session(context, self.outbox, local_storage=local,
                               checkpoint=Checkpoint(directory) if directory else None)
        if directory:
            from ..trainable.session import read_metadata

            self.session.restore_counters(*read_metadata(directory))
        self.instance: Trainable | None = None
        self.error: BaseException | None = None
        self.error_tb = ""
        target = self._function if spec.kind == "function" else self._class
        self.thread = threading.Thread(target=target, args=(trainable, parameters, kept),
                                       name=f"tune-trial-{spec.trial_id}", daemon=True)
        self.thread.start()

    # -- the trial's thread ---------------------------------------------------
    def _function(self, fn: Any, parameters: dict[str, Any], kept: Any) -> None:
        spec, session = self.spec, self.session
        activate(session)
        returned = False
        try:
            config = dict(spec.config)
            if spec.call_style == "reporter":
                out = fn(config, _Reporter(self))
            elif spec.call_style == "checkpoint_dir":
                ckpt = session.checkpoint.path if session.checkpoint else None
                out = fn(config, checkpoint_dir=ckpt, **parameters)
            else:
                out = fn(config, **parameters)
            if isinstance(out, dict) and not self.outbox.stopping:
                result = session.next_result(out)
                result["done"] = True
                self.outbox.put(result)
            returned = True
        except StopTrial:
            pass
        except BaseException as exc:
            self.error, self.error_tb = exc, traceback.format_exc()
        finally:
            activate(None)
            self.outbox.finish(returned=returned)

    def _class(self, cls: Any, parameters: dict[str, Any], kept: Trainable | None) -> None:
        spec, session, outbox = self.spec, self.session, self.outbox
        activate(session)
        instance = None
        try:
            if kept is not None and spec.reuse_instance and type(kept) is cls and \
                    kept.reset(spec.config):
                instance = kept
                instance._session = session
            else:
                if kept is not None:
                    kept.stop()
                instance = cls(spec.config, _tune_session=session, **parameters)
            self.instance = instance
            if session.checkpoint is not None:
                instance.restore(session.checkpoint.path)
            while not outbox.stopping:
                outbox.serve()
                result = instance.train()
                end = bool(result.get("done")) or stop_reached(spec.stop, result)
                freq = spec.checkpoint_frequency
                if (freq and result["training_iteration"] % freq == 0) or (
                        end and spec.checkpoint_at_end):
                    result["_checkpoint"] = self.save()
                if end:
                    result["done"] = True
                outbox.put(result)
                if end:
                    break
        except StopTrial:
            pass
        except BaseException as exc:
            self.error, self.error_tb = exc, traceback.format_exc()
        finally:
            activate(None)
            if instance is not None and (self.error is not None or not spec.reuse_instance):
                with contextlib.suppress(Exception):
                    instance.stop()
                self.instance = None
            outbox.finish(returned=self.error is None)

    # -- called from the actor's thread ----------------------------------------
    def save(self) -> tuple[str, Any] | None:
        """A checkpoint of the class trainable now (None for functions)."""
        instance = self.instance
        if instance is None:
            return None
        directory = instance.save()
        if self.session._local_storage:
            return ("path", directory)
        try:
            return self.session.persist(directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def close(self) -> None:
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


class _Reporter:
    """The ``reporter`` of classic ``fn(config, reporter)`` trainables."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    def __call__(self, **metrics: Any) -> None:
        self._run.session.report(metrics)


class TrialActor:
    """Hosts trials, one at a time (see the module docstring)."""

    def __init__(self) -> None:
        self._trainables: dict[str, Any] = {}
        self._parameters: dict[str, Any] = {}
        self._run: _Run | None = None
        self._kept: Trainable | None = None
        self._node = fedexec.get_runtime_context().node_id
        self._errors: dict[str, BaseException] = {}  # trial id -> the error it ended with

    def step(self, cmd: Command) -> Batch:
        """Apply ``cmd`` and return what the trial reported since the last call."""
        if cmd.start is not None:
            if cmd.queued and self._run is not None:
                return Batch([], refused=True)
            self._start(cmd.start)
        run = self._run
        if run is None:
            return Batch([], finished=True)
        if cmd.ack:
            run.outbox.ack(cmd.ack)
        saved = None
        if cmd.save and run.spec.kind == "class":
            saved = run.outbox.call(run.save)
        if cmd.stop:
            run.outbox.stop()
            run.thread.join(STOP_GRACE_S)
            results = run.outbox.take(0)
            return Batch(results, finished=True, failed=run.error is not None, saved=saved,
                         clean=self._finish(run))
        results = run.outbox.take(0 if saved else cmd.timeout)
        if results and run.spec.window > 1 and not run.outbox.finished:
            results += run.outbox.take(LINGER_S)  # a trial about to end answers in one trip
        if not run.outbox.finished:
            return Batch(results, saved=saved)
        run.thread.join(STOP_GRACE_S)
        return Batch(results + run.outbox.take(0), finished=True, failed=run.error is not None,
                     saved=saved, clean=self._finish(run))

    def raise_error(self, trial_id: str) -> None:
        """Raise the error trial ``trial_id`` ended with (so it reaches the
        controller as a ``TaskError`` with the trial's traceback)."""
        error = self._errors.pop(trial_id, None)
        if error is not None:
            raise error

    def shutdown(self) -> None:
        """Before the actor is killed: stop a trial still running here (its thread
        would otherwise wait for the controller forever where the actor is a thread,
        as on the local backend) and clean up a trainable kept for reuse."""
        run = self._run
        if run is not None:
            run.outbox.stop()
            run.thread.join(SHUTDOWN_GRACE_S)
        if self._kept is not None:
            with contextlib.suppress(Exception):
                self._kept.stop()
            self._kept = None

    def node_id(self) -> str:
        return self._node

    # -- helpers ------------------------------------------------------------------
    def _start(self, spec: StartSpec) -> None:
        if self._run is not None:
            raise RuntimeError(f"trial actor is still running trial {self._run.spec.trial_id}")
        if spec.trainable_blob is not None:
            self._trainables[spec.trainable_key] = safe_loads(spec.trainable_blob)
        trainable = self._trainables[spec.trainable_key]
        parameters = {}
        for name, ref in spec.parameters.items():
            if ref.id not in self._parameters:
                self._parameters[ref.id] = fedexec.get(ref)
            parameters[name] = self._parameters[ref.id]
        kept, self._kept = self._kept, None
        self._run = _Run(spec, trainable, parameters, self._node, kept)

    def _finish(self, run: _Run) -> bool:
        """Forget the ended trial; True if the actor is fit for another one."""
        clean = not run.thread.is_alive()
        if run.error is not None:
            error = run.error
            if not _picklable(error):
                error = RuntimeError(f"{type(error).__name__}: {error}\n\n{run.error_tb}")
            self._errors[run.spec.trial_id] = error
        if clean and run.instance is not None and run.spec.reuse_instance:
            self._kept = run.instance
        run.close()
        self._run = None
        return clean


def _picklable(exc: BaseException) -> bool:
    try:
        cloudpickle.dumps(exc)
        return True
    except Exception:
        return False
