"""The actor-pool map operator: ``map_batches`` with a callable class.

The pool's actors are created when the run starts and live for the whole run —
the user's class is constructed **once per actor** (load a model once), never
per batch, block or window — and are killed when the run ends (normally, on an
error, or when the consumer stops early). State on the driver::

    actors      list[_Actor]   handle, calls in flight, ready (its __init__ finished)
    queue, active, reorder     as every map operator (see ``operators.py``)

Faults: an actor whose process dies is restarted (its class constructed again)
and the calls it had are retried on it, up to 3 times each; an error raised by
the class's ``__init__`` or ``__call__`` fails the run (naming the operator).

Dispatch: the next input goes to the ready-or-not actor with the fewest calls in
flight, up to ``max_tasks_in_flight_per_actor`` each (calls queue in the actor,
so it never idles between batches). Scaling between ``min_size`` and
``max_size``: when every actor is at its cap and inputs are queued, one more
actor is started — only when every actor started so far is ready, so a burst
does not start ``max_size`` at once; when the inputs are exhausted, idle actors
are let go. A backend without actors (spark) is refused before the run starts.

Lending (``DataContext._actor_lender``, set by ``DatasetPipeline`` on the runs
of its windows): actor number ``i`` of an operator comes from
``lender.lend(key, i, create)`` — the same actor for every run with the same
fused chain and options — and is never killed by the run; the lender kills
them when the pipeline ends. So a pool lives across windows, not per window.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fedexec
from fedexec.backends import capabilities

from .bundle import RefBundle
from .compute import ActorPoolStrategy
from .operators import MapOperator, PhysicalOperator, _Task
from .transforms import MapChain, TaskContext, load_chain, run_chain

__all__ = ["ActorPoolMapOperator"]

_ACTOR_OPTIONS = ("num_cpus", "num_gpus", "resources", "memory")
#: A dead actor is restarted, and its calls retried this many times each.
_RESTARTS = {"max_restarts": -1, "max_task_retries": 3}


class _PoolWorker:
    """The actor: holds the fused chain, whose callable classes it constructs once."""

    def __init__(self, chain_blob: bytes):
        self.chain = load_chain(chain_blob, cached=False)  # its own: it holds the instance
        self.chain.init()

    def ready(self) -> bool:
        return True

    def run(self, ctx: TaskContext, num_outputs: int, *blocks: Any) -> list[Any]:
        return run_chain(self.chain, ctx, num_outputs, *blocks)


@dataclass
class _Actor:
    handle: Any
    ready_ref: Any
    in_flight: int = 0

    @property
    def ready(self) -> bool:
        return bool(self.ready_ref.done())


class ActorPoolMapOperator(MapOperator):
    """Runs its chain on a pool of actors (see the module docstring)."""

    def __init__(self, name: str, inputs: Sequence[PhysicalOperator], chain: MapChain,
                 strategy: ActorPoolStrategy, *, options: dict[str, Any] | None = None,
                 min_rows_per_task: int | None = None, preserves_rows: bool = False):
        super().__init__(name, inputs, chain, options=options,
                         min_rows_per_task=min_rows_per_task, preserves_rows=preserves_rows)
        self.strategy = strategy
        self._actors: list[_Actor] = []
        self._per_actor = 1
        self._max = strategy.min_size

    def check(self, executor: fedexec.Executor) -> None:
        if "actors" in capabilities(executor.backend):
            return
        have = [n for n in fedexec.backends.available() if "actors" in capabilities(n)]
        raise fedexec.UnsupportedOnBackendError(
            f"{self.name} runs a callable class on a pool of actors, and the "
            f"{executor.backend!r} backend has no actors; use a function instead of a class, "
            f"or a backend with actors: {', '.join(have)}")

    def start(self, run: Any) -> None:
        super().start(run)
        ctx = run.context
        self._per_actor = max(1, self.strategy.max_tasks_in_flight_per_actor or
                              ctx.max_tasks_in_flight_per_actor)
        cpus = int(run.resources.get("CPU", 1) or 1)
        self._max = self.strategy.max_size or max(self.strategy.min_size, cpus)
        held = self.strategy.min_size * float(self.options.get("num_cpus") or 0)
        if held >= float(run.resources.get("CPU", 0) or 0) > 0:
            warnings.warn(
                f"{self.name}: {self.strategy.min_size} actors with num_cpus="
                f"{self.options['num_cpus']} hold all {cpus} CPUs of the cluster, so the "
                "run's other tasks (reads) may never run; give the actors fewer CPUs or "
                "a smaller pool", RuntimeWarning, stacklevel=2)
        for _ in range(self.strategy.min_size):
            self._add_actor()

    def _add_actor(self) -> None:
        assert self.run is not None
        options = {k: v for k, v in self.options.items() if k in _ACTOR_OPTIONS}
        executor, blob = self.run.executor, self._chain_blob

        def create() -> Any:
            return executor.options(**options, **_RESTARTS).actor(_PoolWorker, blob)

        lender = self.run.context._actor_lender
        handle = create() if lender is None else lender.lend(
            (self.name, blob, tuple(sorted(options.items()))), len(self._actors), create)
        ready = handle.ready.remote()
        wake = self.run.wake  # not self: the ref's callbacks must not hold the operator
        ready.add_done_callback(lambda _ref: wake())
        self._actors.append(_Actor(handle, ready))
        self.stats.actors = max(self.stats.actors, len(self._actors))

    # -- launching -------------------------------------------------------------------------
    def ready_to_launch(self) -> bool:
        if not super().ready_to_launch_inputs():
            return False
        if any(a.in_flight < self._per_actor for a in self._actors):
            return True
        if len(self._actors) < self._max and all(a.ready for a in self._actors):
            self._add_actor()  # scale up: everyone is busy and inputs wait
            return True
        return False

    def _dispatch(self, ctx: TaskContext, bundles: list[RefBundle], base: int,
                  est_rows: int | None) -> None:
        actor = min(self._actors, key=lambda a: (a.in_flight, not a.ready))
        refs = [ref for b in bundles for ref in b.block_refs]
        returned = actor.handle.run.options(num_returns=2, name=self.name).remote(ctx, 1, *refs)
        task = _Task(seq=self._reorder.reserve(), refs=list(returned), held=bundles,
                     held_bytes=base, est_bytes=int(base * self._ratio()), est_rows=est_rows,
                     base_bytes=base, actor=actor)
        actor.in_flight += 1
        self._track(task)

    def on_task_done(self, task: _Task) -> None:
        task.actor.in_flight -= 1
        super().on_task_done(task)
        self._release_idle()

    def _release_idle(self) -> None:
        """Scale down once the inputs are exhausted: idle actors are let go."""
        if not (self.all_inputs_done() and not self._queue):
            return
        for actor in [a for a in self._actors if a.in_flight == 0]:
            self._kill(actor)

    def _kill(self, actor: _Actor) -> None:
        assert self.run is not None
        self._actors.remove(actor)
        if self.run.context._actor_lender is not None:
            return  # lent: the lender kills it when its runs are over
        try:
            self.run.executor.kill(actor.handle)
        except (fedexec.FedexecError, ValueError, RuntimeError):
            pass

    def halt(self) -> None:
        super().halt()
        self.shutdown()

    def shutdown(self) -> None:
        for actor in list(self._actors):
            self._kill(actor)

    def describe(self) -> str:
        ready = sum(a.ready for a in self._actors)
        return (f"{super().describe()}; actor pool: {len(self._actors)} actors "
                f"({ready} ready), at most {self._per_actor} calls each")
