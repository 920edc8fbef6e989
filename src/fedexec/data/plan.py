"""The logical plan, its optimizer, and the physical plan.

A ``Dataset`` holds a tree of immutable logical operators::

    Read(datasource) | InputData(bundles)          leaves
    MapOp(stage, compute, options)                 row/batch/column transforms, writes
    Limit(n) · Union(*inputs) · Zip(left, right)   shape
    AllToAll(name, fn)                             barriers (shuffle, sort, ... in phase 2)

``optimize`` rewrites it (bottom-up, pure):

* limit pushdown: ``Limit(n)`` over row-preserving maps (and unions) down to a
  ``Read`` sets ``Read.limit`` (each read task stops after n rows); the
  ``Limit`` itself stays on top for the exact count. Consecutive limits merge.
* projection pushdown: ``select_columns`` directly over a ``Read`` (or over a
  ``Limit`` over one) becomes ``Read.columns``.

``plan_physical`` then turns it into operators for the streaming executor,
fusing as it goes: a read and the task-based transforms after it with the same
resources become one :class:`MapOperator` (one task per read task); so do
consecutive task-based transforms; task-based transforms directly before an
actor-pool transform run inside the pool's actors. A limit's ``n`` is handed up
through row-preserving operators as their ``row_limit`` (a read of a huge
dataset under ``take(10)`` starts only the read tasks those 10 rows need).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .all_to_all import AllToAllFn, AllToAllOperator
from .bundle import RefBundle
from .columns import SelectColumns
from .combine import LimitOperator, UnionOperator, ZipOperator
from .compute import ActorPoolStrategy, TaskPoolStrategy
from .context import DataContext
from .datasource import Datasource
from .operators import InputDataOperator, MapOperator, PhysicalOperator
from .transforms import MapBatches, MapChain, Stage

__all__ = ["AllToAll", "InputData", "Limit", "LogicalOperator", "MapOp", "Read", "Union",
           "Zip", "optimize", "plan_physical"]


@dataclass(frozen=True, eq=False)
class LogicalOperator:
    """A node of the logical plan; ``inputs`` are its children."""

    inputs: tuple[LogicalOperator, ...] = ()

    @property
    def name(self) -> str:
        return type(self).__name__

    def with_inputs(self, *inputs: LogicalOperator) -> LogicalOperator:
        """A copy with other children."""
        return dataclasses.replace(self, inputs=tuple(inputs))

    def describe(self) -> str:
        """The plan as ``Op <- Op <- ...`` (for ``repr``)."""
        below = [i.describe() for i in self.inputs]
        if not below:
            return self.name
        if len(below) == 1:
            return f"{self.name} <- {below[0]}"
        return f"{self.name}({', '.join(below)})"


@dataclass(frozen=True, eq=False)
class Read(LogicalOperator):
    """Read a :class:`Datasource` with ``parallelism`` tasks (-1: automatic)."""

    datasource: Datasource | None = None
    parallelism: int = -1
    limit: int | None = None
    columns: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        assert self.datasource is not None
        return f"Read{self.datasource.get_name()}"


@dataclass(frozen=True, eq=False)
class InputData(LogicalOperator):
    """Bundles already in the store."""

    bundles: tuple[RefBundle, ...] = ()


@dataclass(frozen=True, eq=False)
class MapOp(LogicalOperator):
    """A transform of each block: ``stage``, run as tasks or on an actor pool."""

    stage: Stage | None = None
    compute: TaskPoolStrategy | ActorPoolStrategy = field(default_factory=TaskPoolStrategy)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        assert self.stage is not None
        return self.stage.name


@dataclass(frozen=True, eq=False)
class Limit(LogicalOperator):
    """The first ``n`` rows."""

    n: int = 0

    @property
    def name(self) -> str:
        return f"Limit[{self.n}]"


@dataclass(frozen=True, eq=False)
class Union(LogicalOperator):
    """The rows of every input, one input after the other."""


@dataclass(frozen=True, eq=False)
class Zip(LogicalOperator):
    """Rows of two inputs side by side."""


@dataclass(frozen=True, eq=False)
class AllToAll(LogicalOperator):
    """A barrier transform: ``fn(bundles, ctx) -> bundles`` (see ``operators.py``)."""

    op_name: str = "AllToAll"
    fn: AllToAllFn | None = None

    @property
    def name(self) -> str:
        return self.op_name


# --------------------------------------------------------------------------- optimizer
def optimize(op: LogicalOperator) -> LogicalOperator:
    """The plan with limits and projections pushed into reads (see the module docstring)."""
    op = op.with_inputs(*(optimize(i) for i in op.inputs)) if op.inputs else op
    if isinstance(op, Limit):
        child = op.inputs[0]
        if isinstance(child, Limit):
            return optimize(Limit(child.inputs, n=min(op.n, child.n)))
        return op.with_inputs(_push_limit(child, op.n))
    if isinstance(op, MapOp) and isinstance(op.stage, SelectColumns):
        pushed = _push_columns(op.inputs[0], tuple(op.stage.columns))
        if pushed is not None:
            return pushed
    return op


def _push_limit(op: LogicalOperator, n: int) -> LogicalOperator:
    """``op`` with ``Read.limit`` set below it where only row-preserving operators
    separate them."""
    if isinstance(op, Read):
        return dataclasses.replace(op, limit=n if op.limit is None else min(op.limit, n))
    if isinstance(op, MapOp) and op.stage is not None and op.stage.preserves_rows:
        return op.with_inputs(_push_limit(op.inputs[0], n))
    if isinstance(op, Union):
        return op.with_inputs(*(_push_limit(i, n) for i in op.inputs))
    return op


def _push_columns(op: LogicalOperator, columns: tuple[str, ...]) -> LogicalOperator | None:
    """``op`` reading only ``columns``, or None when it cannot take them."""
    if isinstance(op, Read):
        if op.columns is not None and not set(columns) <= set(op.columns):
            return None  # asks for a column already projected away: let it fail clearly
        return dataclasses.replace(op, columns=columns)
    if isinstance(op, Limit):
        inner = _push_columns(op.inputs[0], columns)
        return None if inner is None else op.with_inputs(inner)
    return None


# --------------------------------------------------------------------------- physical
def plan_physical(root: LogicalOperator, context: DataContext,
                  resources: dict[str, float]) -> list[PhysicalOperator]:
    """The operators for ``root`` (optimized first), in topological order."""
    top = _Planner(context, resources).build(optimize(root))
    ops: list[PhysicalOperator] = []
    _postorder(top, ops)
    for op in ops:
        if isinstance(op, LimitOperator):
            _hand_up_limit(op.inputs[0], op.limit)
    return ops


def _postorder(op: PhysicalOperator, out: list[PhysicalOperator]) -> None:
    for up in op.inputs:
        _postorder(up, out)
    out.append(op)


def _hand_up_limit(op: PhysicalOperator, n: int) -> None:
    op.row_limit = n if op.row_limit is None else min(op.row_limit, n)
    if op.preserves_rows:
        for up in op.inputs:
            _hand_up_limit(up, n)


class _Planner:
    def __init__(self, context: DataContext, resources: dict[str, float]):
        self.context = context
        self.resources = resources

    def build(self, op: LogicalOperator) -> PhysicalOperator:
        if isinstance(op, Read):
            return self._read(op)
        if isinstance(op, InputData):
            return InputDataOperator(op.bundles)
        if isinstance(op, MapOp):
            return self._map(op, self.build(op.inputs[0]))
        if isinstance(op, Limit):
            return LimitOperator(op.n, self.build(op.inputs[0]))
        if isinstance(op, Union):
            return UnionOperator([self.build(i) for i in op.inputs])
        if isinstance(op, Zip):
            return ZipOperator(self.build(op.inputs[0]), self.build(op.inputs[1]))
        if isinstance(op, AllToAll):
            assert op.fn is not None
            return AllToAllOperator(op.name, op.fn, self.build(op.inputs[0]))
        raise TypeError(f"no physical operator for {op!r}")  # pragma: no cover

    def _read(self, op: Read) -> MapOperator:
        assert op.datasource is not None
        parallelism = op.parallelism if op.parallelism > 0 else self.context.default_parallelism(
            self.resources, op.datasource.estimate_inmemory_data_size())
        tasks = op.datasource.get_read_tasks(parallelism)
        if op.limit is not None:
            tasks = [t.with_limit(op.limit) for t in tasks]
        if op.columns is not None:
            tasks = [t.with_columns(op.columns) for t in tasks]
        return MapOperator(op.name, [], MapChain((), op.name), read_tasks=tasks,
                           preserves_rows=True)

    def _map(self, op: MapOp, up: PhysicalOperator) -> PhysicalOperator:
        from .actor_pool import ActorPoolMapOperator

        assert op.stage is not None
        stage = op.stage
        concurrency = op.compute.size if isinstance(op.compute, TaskPoolStrategy) else None
        fusable = (type(up) is MapOperator and up.options == op.options and
                   not (isinstance(op.compute, ActorPoolStrategy) and up.is_source))
        if fusable:
            assert isinstance(up, MapOperator)
            stages = (*up.chain.stages, stage)
            name = f"{up.name}->{stage.name}"
            inputs, reads = up.inputs, up.read_tasks() if up.is_source else None
            preserves = up.preserves_rows and stage.preserves_rows
            min_rows = up.min_rows_per_task
            if concurrency is None or (up.concurrency and up.concurrency < concurrency):
                concurrency = up.concurrency
        else:
            stages, name, inputs, reads = (stage,), stage.name, [up], None
            preserves = stage.preserves_rows
            min_rows = stage.batch_size if isinstance(stage, MapBatches) else None
        chain = MapChain(stages, name)
        if isinstance(op.compute, ActorPoolStrategy):
            return ActorPoolMapOperator(name, inputs, chain, op.compute, options=op.options,
                                        min_rows_per_task=min_rows, preserves_rows=preserves)
        return MapOperator(name, inputs, chain, read_tasks=reads, options=op.options,
                           concurrency=concurrency, min_rows_per_task=min_rows,
                           preserves_rows=preserves)
