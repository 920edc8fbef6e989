"""Row and batch transforms, as they run inside a task (or an actor).

Each logical map operator compiles to a :class:`Stage`: a function from a stream
of blocks to a stream of blocks. Fusion is composition: a :class:`MapChain` is
the stages of consecutive operators run one after the other in one task, block
by block (generators, so one block of each stage is alive at a time), starting
from the task's inputs (blocks, or :class:`~.datasource.ReadTask` objects that
are read there). The chain runs as::

    inputs ──read──▶ blocks ──stage 1──▶ ... ──stage n──▶ output blocks
                                                          │ concatenated, split in k
                                                          ▼
                           task result [[metadata]*k, block_1, ..., block_k]

An exception in a user function is tagged with the name of the stage it came
from (attribute ``_fedexec_data_operator``, kept when the error travels back),
so the driver can say "in operator Map(parse)" even in a fused task.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import pyarrow as pa

from fedexec.util.serialization import loads as safe_loads

from .batcher import batch_blocks
from .block import (
    Block,
    BlockAccessor,
    BlockExecStats,
    BlockMetadata,
    check_batch_format,
    compact,
)
from .datasource import ReadTask

__all__ = ["MapBatches", "MapChain", "MapRows", "Stage", "TaskContext", "WriteStage",
           "dump_chain", "load_chain", "operator_of", "run_chain", "run_map_task"]

#: The attribute an exception from user code is tagged with (the stage's name).
OPERATOR_ATTR = "_fedexec_data_operator"


@dataclass(frozen=True)
class TaskContext:
    """What a stage knows about the task running it.

    Attributes:
        task_index: the task's number within its operator in this run (0, 1, ...).
        op_name: the (fused) operator's name.
        run_id: an id unique to this run (e.g. for names of written files).
        row_limit: the operator's outputs are needed only up to this many rows
            (a limit downstream): the task stops once it has made that many, so
            the rest of its input is never read.
    """

    task_index: int
    op_name: str
    run_id: str = ""
    row_limit: int | None = None


def fn_name(fn: Any) -> str:
    """A short name of a user function or class, for operator names."""
    return getattr(fn, "__name__", None) or type(fn).__name__


def _tag(error: BaseException, name: str) -> None:
    if getattr(error, OPERATOR_ATTR, None) is None:
        try:
            setattr(error, OPERATOR_ATTR, name)
        except (AttributeError, TypeError):  # pragma: no cover - exotic exceptions
            pass


def operator_of(error: BaseException) -> str | None:
    """The stage an exception from user code was tagged with (see the module docstring)."""
    return getattr(error, OPERATOR_ATTR, None)


class Stage:
    """One transform inside a task.

    Attributes:
        name: the operator's name, e.g. ``"Map(parse)"``.
        preserves_rows: one output row per input row, in order (so a ``limit``
            may move before it).
    """

    name: str = "Stage"
    preserves_rows: bool = False

    def init(self) -> None:
        """Prepare once per process that runs the stage (an actor constructs the
        user's callable class here)."""

    def apply(self, blocks: Iterator[Block], ctx: TaskContext) -> Iterator[Block]:
        """Transform ``blocks``."""
        raise NotImplementedError

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            _tag(e, self.name)
            raise


class MapRows(Stage):
    """``map``, ``filter`` or ``flat_map``: ``fn`` on every row.

    Rows that are all dicts make a tabular block; other values make plain rows.
    """

    _NAMES = {"map": "Map", "filter": "Filter", "flat_map": "FlatMap"}

    def __init__(self, fn: Callable[[Any], Any], kind: str):
        if kind not in self._NAMES:
            raise ValueError(f"unknown row transform {kind!r}")
        self.fn, self.kind = fn, kind
        self.name = f"{self._NAMES[kind]}({fn_name(fn)})"
        self.preserves_rows = kind == "map"

    def apply(self, blocks: Iterator[Block], ctx: TaskContext) -> Iterator[Block]:
        fn = self.fn
        for block in blocks:
            acc = BlockAccessor.for_block(block)
            try:  # one try per block, not per row: the per-row loop stays tight
                if self.kind == "filter":
                    keep = [bool(fn(row)) for row in acc.iter_rows()]
                elif self.kind == "map":
                    out = [fn(row) for row in acc.iter_rows()]
                else:
                    out = [x for row in acc.iter_rows() for x in fn(row)]
            except Exception as e:
                _tag(e, self.name)
                raise
            if self.kind == "filter":
                yield acc.block.filter(pa.array(keep, type=pa.bool_())) if acc.is_tabular \
                    else [row for row, k in zip(acc.block, keep) if k]
            else:
                yield BlockAccessor.from_rows(out)


class MapBatches(Stage):
    """``map_batches``: ``fn`` on batches of ``batch_size`` rows (None: whole blocks).

    ``fn`` may be a class: it is constructed once per process by :meth:`init`
    (an actor of the pool) and its instance is called.
    """

    def __init__(self, fn: Any, *, batch_size: int | None, batch_format: str,
                 fn_args: Sequence[Any] = (), fn_kwargs: dict[str, Any] | None = None,
                 fn_constructor_args: Sequence[Any] = (),
                 fn_constructor_kwargs: dict[str, Any] | None = None,
                 name: str | None = None):
        self.fn = fn
        self.batch_size = batch_size
        self.batch_format = check_batch_format(batch_format)
        self.fn_args, self.fn_kwargs = tuple(fn_args), dict(fn_kwargs or {})
        self.ctor_args = tuple(fn_constructor_args)
        self.ctor_kwargs = dict(fn_constructor_kwargs or {})
        self.is_class = isinstance(fn, type)
        self.name = name or f"MapBatches({fn_name(fn)})"
        self._callable: Any = None if self.is_class else fn

    def init(self) -> None:
        if self.is_class and self._callable is None:
            self._callable = self._call(self.fn, *self.ctor_args, **self.ctor_kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.is_class:
            state["_callable"] = None  # constructed where it runs, never shipped
        return state

    def apply(self, blocks: Iterator[Block], ctx: TaskContext) -> Iterator[Block]:
        self.init()
        for batch_block in batch_blocks(blocks, self.batch_size):
            acc = BlockAccessor.for_block(batch_block)
            batch = acc.to_batch(self.batch_format)
            result = self._call(self._callable, batch, *self.fn_args, **self.fn_kwargs)
            if not isinstance(result, Iterator):
                yield BlockAccessor.from_batch(result, plain=not acc.is_tabular)
                continue
            while True:  # a generator function: each yielded batch is a block
                try:
                    out = next(result)
                except StopIteration:
                    break
                except Exception as e:
                    _tag(e, self.name)
                    raise
                yield BlockAccessor.from_batch(out, plain=not acc.is_tabular)


class WriteStage(Stage):
    """Writes its blocks with a :class:`~.datasink.Datasink`; outputs one plain row,
    the sink's write result."""

    def __init__(self, sink: Any):
        self.sink = sink
        self.name = f"Write{sink.get_name()}"

    def apply(self, blocks: Iterator[Block], ctx: TaskContext) -> Iterator[Block]:
        yield [self._call(self.sink.write, blocks, ctx)]


@dataclass
class MapChain:
    """Fused stages, run one after the other on a task's inputs.

    Attributes:
        stages: the transforms, in order.
        name: the fused operator's name (e.g. ``"ReadRange->Map(f)"``).
    """

    stages: tuple[Stage, ...]
    name: str
    _initialized: bool = field(default=False, repr=False)

    def init(self) -> None:
        """Prepare every stage (once per process; see :meth:`Stage.init`)."""
        if not self._initialized:
            for stage in self.stages:
                stage.init()
            self._initialized = True

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_initialized": False}

    def run(self, inputs: Iterable[Any], ctx: TaskContext) -> Iterator[Block]:
        """The output blocks for ``inputs`` (blocks or read tasks)."""
        self.init()
        blocks: Iterator[Block] = _read(inputs)
        for stage in self.stages:
            blocks = stage.apply(blocks, ctx)
        return blocks


def _read(inputs: Iterable[Any]) -> Iterator[Block]:
    for item in inputs:
        if isinstance(item, ReadTask):
            try:
                yield from item()
            except Exception as e:
                _tag(e, "Read")
                raise
        else:
            yield item


def input_files(inputs: Iterable[Any]) -> tuple[str, ...]:
    """The files the read tasks among ``inputs`` read."""
    return tuple(f for item in inputs if isinstance(item, ReadTask)
                 for f in item.metadata.input_files)


def split_block(block: Block, k: int) -> list[Block]:
    """``block`` cut into ``k`` blocks of nearly equal row counts (some may be empty)."""
    if k <= 1:
        return [block]
    acc = BlockAccessor.for_block(block)
    n = acc.num_rows()
    bounds = [n * i // k for i in range(k + 1)]
    return [acc.slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def finish_task(blocks: Iterable[Block], num_outputs: int, files: tuple[str, ...],
                start: float, cpu_start: float) -> list[Any]:
    """The result of a block-producing task: ``[[metadata, ...], block, ...]``,
    ``num_outputs`` blocks with the task's exec stats in each metadata."""
    out = [compact(b) for b in split_block(BlockAccessor.concat(blocks), num_outputs)]
    end = time.time()
    stats = BlockExecStats(wall_s=end - start, cpu_s=time.thread_time() - cpu_start,
                           start=start, end=end)
    metas: list[BlockMetadata] = [BlockAccessor.for_block(b).get_metadata(files, stats)
                                  for b in out]
    return [metas, *out]


def dump_chain(chain: MapChain) -> bytes:
    """``chain`` pickled once per run: it travels with every task as bytes (a
    ``put`` value could be lost with a worker on some backends; bytes cannot)."""
    return cloudpickle.dumps(chain)


_chains: collections.OrderedDict[bytes, MapChain] = collections.OrderedDict()
_chains_lock = threading.Lock()
_CHAINS_KEPT = 16


def load_chain(blob: bytes, *, cached: bool = True) -> MapChain:
    """The chain pickled in ``blob``; with ``cached``, unpickled once per process
    (a few recent chains are kept; their stages hold no per-task state)."""
    if not cached:
        return safe_loads(blob)
    key = hashlib.blake2b(blob, digest_size=16).digest()
    with _chains_lock:
        chain = _chains.get(key)
        if chain is not None:
            _chains.move_to_end(key)
            return chain
    chain = safe_loads(blob)
    with _chains_lock:
        _chains[key] = chain
        while len(_chains) > _CHAINS_KEPT:
            _chains.popitem(last=False)
    return chain


def run_map_task(chain_blob: bytes, ctx: TaskContext, num_outputs: int,
                 *inputs: Any) -> list[Any]:
    """The body of every map task: run the pickled chain on ``inputs`` (blocks,
    resolved from refs by the runtime, or read tasks); returns ``1 + num_outputs``
    values (see the module docstring)."""
    return run_chain(load_chain(chain_blob), ctx, num_outputs, *inputs)


def run_chain(chain: MapChain, ctx: TaskContext, num_outputs: int, *inputs: Any) -> list[Any]:
    """Run ``chain`` on ``inputs``; the task result (see :func:`run_map_task`)."""
    start, cpu_start = time.time(), time.thread_time()
    blocks = chain.run(inputs, ctx)
    if ctx.row_limit is not None:
        blocks = _first_rows(blocks, ctx.row_limit)
    return finish_task(blocks, num_outputs, input_files(inputs), start, cpu_start)


def _first_rows(blocks: Iterator[Block], n: int) -> Iterator[Block]:
    """The first ``n`` rows of ``blocks``; the stream is closed after them (so the
    stages and the read before it stop early)."""
    try:
        for block in blocks:
            acc = BlockAccessor.for_block(block)
            rows = acc.num_rows()
            if rows >= n:
                yield acc.slice(0, n)
                return
            n -= rows
            yield block
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
