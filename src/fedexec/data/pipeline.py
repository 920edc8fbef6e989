"""``DatasetPipeline``: the classic windowed API (``ds.window()``, ``ds.repeat()``).

A pipeline is a stream of **windows**, each a small ``Dataset``, passed through
per-window stages (``map``, ``filter``, ``map_batches``, ``foreach_window`` ...:
each stage is a function ``Dataset -> Dataset`` applied to every window), for
one or more passes (``repeat``: each pass is an epoch). It is a thin layer over
the streaming machinery: every window runs as an ordinary run of the streaming
executor::

    source windows ──stages──▶ window k   ─run─▶ bundles ──▶ consumer (batches, rows)
      (per pass)               window k+1 ─run─▶ (already running: the overlap)

Windows:

* ``ds.window(blocks_per_window=b)`` over a dataset that is a chain of
  row/batch transforms on a read (or on blocks in memory) cuts the *read tasks*
  (or the blocks) into groups of ``b``: each window reads only its group, and
  the transforms before ``window()`` are applied to it. Any other dataset
  (union, zip, limit, a shuffle ...) is run streaming once per pass and its
  output blocks are grouped by ``b``.
* ``ds.repeat(times)``: one window per pass, the whole dataset.

Stages that need to know where a window is (``random_shuffle_each_window``
with a seed, the writers) get its :class:`WindowIndex` (pass, window): a seed is
mixed with it, so each window of each pass has its own reproducible order, and
written files are named ``{write}_{pass:04d}_{window:06d}_{task:06d}.<ext>``,
sorted in the pipeline's order. ``write_*`` consume the pipeline (every window
is written by its own run's write tasks, overlapped like any consumer).

Overlap: windows run ahead of the consumer, each on a thread draining its run
into a queue of bundles: up to two run at once, and a new one starts as soon as
one of them is done, while at most three are started and not yet consumed (the
memory bound). So the next window's reading happens while this one is
transformed and consumed, and a slow window does not stall the reading after it. Actor pools (``map_batches`` with a class) are *lent* across the
windows' runs (``DataContext._actor_lender``, see ``actor_pool.py``): each
actor is constructed once per pipeline iteration, not per window, and killed
when the iteration ends.
"""

from __future__ import annotations

import builtins
import dataclasses
import itertools
import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import fedexec

from .bundle import RefBundle
from .context import DataContext
from .data_iterator import BlockStream, DataIterator
from .datasink import Datasink, run_write
from .datasource import Datasource, ReadTask
from .iterator import iter_blocks
from .plan import InputData, LogicalOperator, MapOp, Read
from .shuffle import check_seed
from .transforms import TaskContext, WriteStage
from .write_files import CSVDatasink, JSONDatasink, NumpyDatasink, ParquetDatasink

if TYPE_CHECKING:
    from .dataset import Dataset

__all__ = ["ActorLender", "DatasetPipeline", "WindowIndex", "repeat_pipeline",
           "window_pipeline"]


@dataclass(frozen=True)
class WindowIndex:
    """Where a window is in an iteration: its pass (``epoch``, counted from the
    pipeline's first, so ``iter_epochs()``' k-th pipeline has epoch k) and its
    place in that pass (``window``)."""

    epoch: int
    window: int


#: A pipeline stage: the window and its place -> the window transformed.
Stage = Callable[["Dataset", WindowIndex], "Dataset"]
_END = object()
#: Windows running at once, and started but not yet consumed (see ``_bundles``).
_COMPUTING = 2
_HELD = 3
_POLL_S = 0.05


class ActorLender:
    """Lends the actors of actor-pool operators to several runs (see
    ``actor_pool.py``): actor ``index`` for ``key`` is created once by ``create``
    and handed to every run asking for it."""

    def __init__(self) -> None:
        self._actors: dict[Any, list[Any]] = {}
        self._lock = threading.Lock()

    def lend(self, key: Any, index: int, create: Callable[[], Any]) -> Any:
        with self._lock:
            actors = self._actors.setdefault(key, [])
            while len(actors) <= index:
                actors.append(create())
            return actors[index]

    def shutdown(self, executor: fedexec.Executor) -> None:
        """Kill every actor lent."""
        with self._lock:
            actors = [a for group in self._actors.values() for a in group]
            self._actors.clear()
        for actor in actors:
            try:
                executor.kill(actor)
            except (fedexec.FedexecError, ValueError, RuntimeError):
                pass


# --------------------------------------------------------------------------- sources
class _Windows:
    """Where the windows of one pass come from."""

    def windows(self, context: DataContext, epoch: int) -> Iterator[Dataset]:
        """The windows of pass ``epoch``."""
        raise NotImplementedError

    def count(self) -> int | None:
        """Windows per pass, when known without running anything."""
        return None


class _Whole(_Windows):
    """The whole dataset as one window (``Dataset.repeat``)."""

    def __init__(self, ds: Dataset):
        self.ds = ds

    def windows(self, context: DataContext, epoch: int) -> Iterator[Dataset]:
        yield self.ds

    def count(self) -> int:
        return 1


class _FixedTasks(Datasource):
    """A group of another source's read tasks (one window's reads)."""

    def __init__(self, name: str, tasks: Sequence[ReadTask]):
        self._name, self.tasks = name, list(tasks)

    def get_name(self) -> str:
        return self._name

    def estimate_inmemory_data_size(self) -> int | None:
        sizes = [t.metadata.size_bytes for t in self.tasks]
        return None if any(s is None for s in sizes) else builtins.sum(
            s for s in sizes if s is not None)

    def get_read_tasks(self, parallelism: int) -> list[ReadTask]:
        return list(self.tasks)


class _Split(_Windows):
    """``ds.window(blocks_per_window=b)`` (see the module docstring)."""

    def __init__(self, ds: Dataset, blocks_per_window: int):
        self.ds, self.per_window = ds, blocks_per_window
        self._cached: list[Dataset] | None = None

    def windows(self, context: DataContext, epoch: int) -> Iterator[Dataset]:
        if self._cached is None:
            self._cached = self._cut(context)
        if self._cached is not None:
            yield from self._cached
            return
        yield from self._grouped_outputs(context)

    def count(self) -> int | None:
        if self._cached is None:
            self._cached = self._cut(DataContext.get_current())
        return None if self._cached is None else len(self._cached)

    def _cut(self, context: DataContext) -> list[Dataset] | None:
        """Windows over the leaf's read tasks or blocks, the transforms above it
        re-applied to each; None when the plan is not such a chain."""
        from .dataset import Dataset

        chain: list[MapOp] = []
        op: LogicalOperator = self.ds._plan
        while isinstance(op, MapOp):
            chain.append(op)
            op = op.inputs[0]
        if isinstance(op, Read):
            leaves = self._read_windows(op, context)
        elif isinstance(op, InputData):
            blocks = [RefBundle((pair,)) for b in op.bundles for pair in b.blocks]
            leaves = [InputData(bundles=tuple(group)) for group in _groups(blocks,
                                                                          self.per_window)]
        else:
            return None
        windows = []
        for leaf in leaves:
            plan: LogicalOperator = leaf
            for mapop in reversed(chain):
                plan = mapop.with_inputs(plan)
            windows.append(Dataset(plan))
        return windows

    def _read_windows(self, read: Read, context: DataContext) -> list[LogicalOperator]:
        assert read.datasource is not None
        parallelism = read.parallelism
        if parallelism < 0:
            resources = context.resolve_executor().cluster_resources()
            parallelism = context.default_parallelism(
                resources, read.datasource.estimate_inmemory_data_size())
        tasks = read.datasource.get_read_tasks(parallelism)
        name = read.datasource.get_name()
        return [Read(datasource=_FixedTasks(name, group), parallelism=len(group),
                     limit=read.limit, columns=read.columns)
                for group in _groups(tasks, self.per_window)]

    def _grouped_outputs(self, context: DataContext) -> Iterator[Dataset]:
        """One streaming run of the dataset, its output blocks grouped into windows."""
        from .dataset import _Run

        return _grouped(_Run(self.ds, context).bundles, self.per_window)


class _Rewindowed(_Windows):
    """``pipe.rewindow(blocks_per_window=b)``: ``pipe``'s output blocks regrouped
    ``b`` per window, per pass of ``pipe`` (``per_pass``) or over its whole
    iteration (then the new pipeline has one pass)."""

    def __init__(self, pipe: DatasetPipeline, blocks_per_window: int, per_pass: bool):
        self.pipe, self.per_window, self.per_pass = pipe, blocks_per_window, per_pass

    def windows(self, context: DataContext, epoch: int) -> Iterator[Dataset]:
        pipe = self.pipe
        if self.per_pass:
            pipe = DatasetPipeline(pipe._source, 1, pipe._stages, epoch)
        # a context of its own: its iteration lends its own actors
        return _grouped(pipe._bundles(context.snapshot()), self.per_window)


def _grouped(bundles: Iterator[RefBundle], per_window: int) -> Iterator[Dataset]:
    """The blocks of ``bundles`` (a closeable generator), ``per_window`` a window."""
    from .dataset import Dataset

    try:
        group: list[RefBundle] = []
        for bundle in bundles:
            group.extend(RefBundle((pair,)) for pair in bundle.blocks)
            while len(group) >= per_window:
                yield Dataset(InputData(bundles=tuple(group[:per_window])))
                group = group[per_window:]
        if group:
            yield Dataset(InputData(bundles=tuple(group)))
    finally:
        bundles.close()  # type: ignore[attr-defined]


def _groups(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i:i + size]) for i in builtins.range(0, len(items), size)]


# --------------------------------------------------------------------------- running
class _WindowRun:
    """One window running on a thread: its output bundles queue up as they come."""

    def __init__(self, ds: Dataset, context: DataContext):
        self._ds, self._context = ds, context
        self._out: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self.finished = threading.Event()  # its run ended (all its bundles queued)
        self._thread = threading.Thread(target=self._body, name="fedexec-data-window",
                                        daemon=True)
        self._thread.start()

    def _body(self) -> None:
        from .dataset import _Run

        bundles: Any = None
        try:
            bundles = _Run(self._ds, self._context).bundles
            for bundle in bundles:
                if self._stop.is_set():
                    break
                self._out.put(bundle)
            self._out.put(_END)
        except BaseException as e:
            self._out.put(e)
        finally:
            self.finished.set()
            if bundles is not None:
                bundles.close()

    def next(self, timeout: float) -> Any:
        """The next bundle, ``_END``, or None if none came within ``timeout`` s
        (raises the run's error)."""
        try:
            item = self._out.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self._stop.set()


class DatasetPipeline(DataIterator):
    """A stream of windows (small datasets) through per-window stages, for one
    or more passes (see the module docstring). Made by ``Dataset.window()`` or
    ``Dataset.repeat()``; transforms return a new pipeline; ``iter_batches``,
    ``iter_rows``, ``iter_torch_batches``, ``take`` ... run it."""

    def __init__(self, source: _Windows, times: int | None = 1, stages: tuple[Stage, ...] = (),
                 first_epoch: int = 0):
        self._source = source
        self._times = times
        self._stages = stages
        self._first_epoch = first_epoch
        #: The windows of the last iteration started, for ``stats()``.
        self._last_windows: list[tuple[WindowIndex, Dataset]] = []

    # -- building --------------------------------------------------------------------
    def _with_stage(self, stage: Stage) -> DatasetPipeline:
        return DatasetPipeline(self._source, self._times, (*self._stages, stage),
                               self._first_epoch)

    def _each(self, method: str, *args: Any, **kwargs: Any) -> DatasetPipeline:
        """``Dataset.<method>(*args, **kwargs)`` on every window (the arguments are
        checked now, on an empty dataset: building a plan runs nothing)."""
        from .dataset import Dataset

        getattr(Dataset(InputData(bundles=())), method)(*args, **kwargs)
        return self._with_stage(lambda w, _: getattr(w, method)(*args, **kwargs))

    def foreach_window(self, fn: Callable[[Dataset], Dataset]) -> DatasetPipeline:
        """Apply ``fn(window: Dataset) -> Dataset`` to every window."""
        if not callable(fn):
            raise TypeError(f"foreach_window() takes a function Dataset -> Dataset, got {fn!r}")
        return self._with_stage(lambda w, _: fn(w))

    def map(self, fn: Callable[[Any], Any], **kwargs: Any) -> DatasetPipeline:
        """``Dataset.map`` on every window."""
        return self._each("map", fn, **kwargs)

    def filter(self, fn: Callable[[Any], bool], **kwargs: Any) -> DatasetPipeline:
        """``Dataset.filter`` on every window."""
        return self._each("filter", fn, **kwargs)

    def flat_map(self, fn: Callable[[Any], Any], **kwargs: Any) -> DatasetPipeline:
        """``Dataset.flat_map`` on every window."""
        return self._each("flat_map", fn, **kwargs)

    def map_batches(self, fn: Any, **kwargs: Any) -> DatasetPipeline:
        """``Dataset.map_batches`` (same arguments) on every window; a callable
        class runs on one actor pool kept for the whole iteration."""
        return self._each("map_batches", fn, **kwargs)

    def add_column(self, col: str, fn: Callable[[Any], Any], **kwargs: Any) -> DatasetPipeline:
        """``Dataset.add_column`` on every window."""
        return self._each("add_column", col, fn, **kwargs)

    def drop_columns(self, cols: Sequence[str]) -> DatasetPipeline:
        """``Dataset.drop_columns`` on every window."""
        return self._each("drop_columns", cols)

    def select_columns(self, cols: Sequence[str]) -> DatasetPipeline:
        """``Dataset.select_columns`` on every window."""
        return self._each("select_columns", cols)

    def rename_columns(self, mapping: Any) -> DatasetPipeline:
        """``Dataset.rename_columns`` on every window."""
        return self._each("rename_columns", mapping)

    def random_shuffle_each_window(self, *, seed: int | None = None) -> DatasetPipeline:
        """Shuffle the rows of each window (``Dataset.random_shuffle``: a
        distributed shuffle within the window). With ``seed``, window ``w`` of
        pass ``e`` is shuffled with a seed made from ``(seed, e, w)``: every
        window and pass has its own order, the same on every iteration."""
        seed = check_seed(seed)
        return self._with_stage(
            lambda w, index: w.random_shuffle(seed=_window_seed(seed, index)))

    def randomize_block_order_each_window(self, *, seed: int | None = None
                                          ) -> DatasetPipeline:
        """``Dataset.randomize_block_order`` on every window (``seed`` as in
        :meth:`random_shuffle_each_window`)."""
        seed = check_seed(seed)
        return self._with_stage(
            lambda w, index: w.randomize_block_order(seed=_window_seed(seed, index)))

    def sort_each_window(self, key: Any = None,
                         descending: bool | Sequence[bool] = False) -> DatasetPipeline:
        """``Dataset.sort`` on every window (each window sorted on its own)."""
        return self._each("sort", key, descending)

    def repartition_each_window(self, num_blocks: int, *, shuffle: bool = False
                                ) -> DatasetPipeline:
        """``Dataset.repartition`` on every window."""
        return self._each("repartition", num_blocks, shuffle=shuffle)

    def repeat(self, times: int | None = None) -> DatasetPipeline:
        """This pipeline's passes ``times`` times over (None: forever)."""
        _check_times(times)
        total = None if times is None or self._times is None else self._times * times
        return DatasetPipeline(self._source, total, self._stages, self._first_epoch)

    def rewindow(self, *, blocks_per_window: int, preserve_epoch: bool = True
                 ) -> DatasetPipeline:
        """A pipeline of this one's output blocks regrouped ``blocks_per_window`` a
        window (each runs this pipeline's windows ahead, then its own stages).
        ``preserve_epoch``: no window spans two passes (the passes stay);
        otherwise one pass over this pipeline's whole iteration.

        Raises:
            ValueError: ``blocks_per_window`` is not an int >= 1.
        """
        _check_blocks_per_window(blocks_per_window)
        if preserve_epoch:
            return DatasetPipeline(_Rewindowed(self, blocks_per_window, True), self._times,
                                   first_epoch=self._first_epoch)
        return DatasetPipeline(_Rewindowed(self, blocks_per_window, False))

    def iter_epochs(self) -> Iterator[DatasetPipeline]:
        """One pipeline per pass (epoch), in order (forever if repeated forever)."""
        passes = itertools.count() if self._times is None else builtins.range(self._times)
        for epoch in passes:
            yield DatasetPipeline(self._source, 1, self._stages, self._first_epoch + epoch)

    def iter_datasets(self) -> Iterator[Dataset]:
        """The windows, each a ``Dataset`` with the pipeline's stages applied (lazy:
        consuming one runs it)."""
        return (window for _, window in self._windows(self._context()))

    # -- running ---------------------------------------------------------------------
    def _windows(self, context: DataContext
                 ) -> Generator[tuple[WindowIndex, Dataset], None, None]:
        from .dataset import Dataset

        passes = itertools.count() if self._times is None else builtins.range(self._times)
        for epoch in passes:
            source = self._source.windows(context, self._first_epoch + epoch)
            try:
                for k, window in enumerate(source):
                    index = WindowIndex(self._first_epoch + epoch, k)
                    for stage in self._stages:
                        window = stage(window, index)
                        if not isinstance(window, Dataset):
                            raise TypeError("a pipeline stage (foreach_window) must return "
                                            f"a Dataset, got {type(window).__name__}")
                    yield index, window
            finally:
                close = getattr(source, "close", None)
                if close is not None:
                    close()  # a source running a pipeline stops it now

    def _bundles(self, context: DataContext) -> Generator[RefBundle, None, None]:
        """Every window's bundles in order, later windows running ahead: at most
        ``_COMPUTING`` windows run at once, and at most ``_HELD`` are started and
        not yet consumed (``context`` has the executor resolved: the runs happen
        on threads)."""
        lender = ActorLender()
        context._actor_lender = lender
        windows = self._windows(context)
        started = self._last_windows = []
        running: deque[_WindowRun] = deque()
        exhausted = False

        def fill() -> None:
            nonlocal exhausted
            while not exhausted and len(running) < _HELD and \
                    builtins.sum(not r.finished.is_set() for r in running) < _COMPUTING:
                item = next(windows, None)
                if item is None:
                    exhausted = True
                else:
                    started.append(item)
                    running.append(_WindowRun(item[1], context))

        try:
            fill()
            while running:
                item = running[0].next(_POLL_S)
                if item is _END:
                    running.popleft()
                elif item is not None:
                    yield item
                fill()
        finally:
            for run in running:
                run.stop()
            windows.close()
            lender.shutdown(context.resolve_executor())

    def _context(self, base: DataContext | None = None) -> DataContext:
        """The settings of an iteration (``base``, else the current ones), its
        executor resolved in the caller's thread."""
        context = (base or DataContext.get_current()).snapshot()
        context.executor = context.resolve_executor()
        return context

    def _stream(self, context: DataContext) -> Generator[RefBundle, None, None]:
        """The bundles of one iteration with ``context``'s settings (closeable)."""
        return self._bundles(self._context(context))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_last_windows": []}

    def _block_stream(self) -> BlockStream:
        context = self._context()
        bundles = self._bundles(context)
        executor = context.resolve_executor()
        return (lambda: iter_blocks(bundles, executor)), bundles.close

    # -- consuming -------------------------------------------------------------------
    def take(self, n: int = 20) -> list[Any]:
        """The first ``n`` rows (windows after them are not run)."""
        return list(itertools.islice(self.iter_rows(), n))

    def take_all(self, limit: int | None = None) -> list[Any]:
        """Every row; with ``limit``, ``ValueError`` if there are more than that.

        Raises:
            ValueError: the pipeline repeats forever.
        """
        self._check_finite("take_all")
        rows = []
        for row in self.iter_rows():
            rows.append(row)
            if limit is not None and len(rows) > limit:
                raise ValueError(f"the pipeline has more than the given limit of {limit} rows")
        return rows

    def show(self, n: int = 20) -> None:
        """Print the first ``n`` rows, one per line."""
        for row in self.take(n):
            print(row)

    def count(self) -> int:
        """The number of rows over every window and pass (from metadata).

        Raises:
            ValueError: the pipeline repeats forever.
        """
        self._check_finite("count")
        bundles = self._bundles(self._context())
        try:
            return builtins.sum(b.num_rows() or 0 for b in bundles)
        finally:
            bundles.close()

    def schema(self) -> Any:
        """The schema of the first window that has one (``Dataset.schema``; runs
        windows of the first pass only until one has rows); None if none has."""
        context = self._context()
        first = DatasetPipeline(self._source, 1, self._stages, self._first_epoch)
        windows = first._windows(context)
        try:
            for _, window in windows:
                schema = window.schema()
                if schema is not None:
                    return schema
            return None
        finally:
            windows.close()

    def stats(self) -> str:
        """A report of the last iteration (or write, or count ...): each window's
        run as ``Dataset.stats()`` reports it, in order (``""`` before one ran)."""
        return "\n\n".join(f"== Pass {index.epoch}, window {index.window} ==\n{window.stats()}"
                           for index, window in self._last_windows if window.stats())

    def split(self, n: int, *, equal: bool = False) -> list[DataIterator]:
        """``n`` picklable iterators over disjoint parts of the pipeline's rows
        that together cover them, fed by one iteration of it in a coordinator
        actor (``Dataset.streaming_split``): hand one to each training worker and
        consume them concurrently. Each pass over them (``iter_batches`` ...) is
        one iteration of the pipeline: all its windows, and all its passes if it
        repeats. ``equal=True``: exactly ``total // n`` rows each per iteration.

        Raises:
            ValueError: ``n`` is not an int >= 1.
            fedexec.UnsupportedOnBackendError: the backend has no actors.
        """
        from .streaming_split import streaming_split

        return streaming_split(self, n, equal=equal, what="split")

    # -- writing ---------------------------------------------------------------------
    def write_datasink(self, datasink: Datasink) -> None:
        """Write every window's blocks with ``datasink`` (its write tasks run in
        each window's run; ``on_write_start``/``on_write_complete`` once for the
        whole pipeline); ``ctx.run_id`` is ``{write}_{pass:04d}_{window:06d}``.

        Raises:
            ValueError: the pipeline repeats forever.
        """
        if not isinstance(datasink, Datasink):
            raise TypeError(f"write_datasink() takes a Datasink, got {type(datasink).__name__}")
        self._check_finite(getattr(datasink, "writer", "write_datasink"))
        write = uuid.uuid4().hex[:12]

        def stage(window: Dataset, index: WindowIndex) -> Dataset:
            run_id = f"{write}_{index.epoch:04d}_{index.window:06d}"
            return window._map(WriteStage(_WindowSink(datasink, run_id)))

        writing = self._with_stage(stage)
        try:
            run_write(datasink, lambda: list(writing.iter_rows()))
        finally:
            self._last_windows = writing._last_windows

    def write_parquet(self, path: str, *, try_create_dir: bool = True,
                      **arrow_parquet_args: Any) -> None:
        """Write every window as Parquet files into the directory ``path``, one
        file per block (``Dataset.write_parquet``), named in the pipeline's order."""
        self.write_datasink(ParquetDatasink(path, try_create_dir=try_create_dir,
                                            **arrow_parquet_args))

    def write_csv(self, path: str, *, try_create_dir: bool = True,
                  **arrow_csv_args: Any) -> None:
        """Write every window as CSV files (as :meth:`write_parquet`)."""
        self.write_datasink(CSVDatasink(path, try_create_dir=try_create_dir, **arrow_csv_args))

    def write_json(self, path: str, *, try_create_dir: bool = True,
                   **pandas_json_args: Any) -> None:
        """Write every window as JSON lines files (as :meth:`write_parquet`)."""
        self.write_datasink(JSONDatasink(path, try_create_dir=try_create_dir,
                                         **pandas_json_args))

    def write_numpy(self, path: str, *, column: str, try_create_dir: bool = True) -> None:
        """Write the column ``column`` of every window as ``.npy`` files (as
        :meth:`write_parquet`)."""
        self.write_datasink(NumpyDatasink(path, column=column, try_create_dir=try_create_dir))

    def _check_finite(self, what: str) -> None:
        if self._times is None:
            raise ValueError(f"{what}() of a pipeline repeated forever would never end; "
                             "use take(n), or repeat(times) with a number")

    def __repr__(self) -> str:
        windows = self._source.count()
        passes = "forever" if self._times is None else self._times
        return (f"DatasetPipeline(num_windows={'?' if windows is None else windows}, "
                f"passes={passes}, num_stages={len(self._stages)})")


class _WindowSink(Datasink):
    """``sink`` writing one window: its tasks see ``run_id`` (the window's place)."""

    def __init__(self, sink: Datasink, run_id: str):
        self.sink, self.run_id = sink, run_id

    def get_name(self) -> str:
        return self.sink.get_name()

    def write(self, blocks: Any, ctx: TaskContext) -> Any:
        return self.sink.write(blocks, dataclasses.replace(ctx, run_id=self.run_id))


def _window_seed(seed: int | None, index: WindowIndex) -> int | None:
    """The seed of one window's shuffle, from the pipeline's ``seed`` (None: a new
    random order each time)."""
    if seed is None:
        return None
    state = np.random.SeedSequence([seed, index.epoch, index.window]).generate_state(
        1, np.uint64)
    return int(state[0] >> np.uint64(1))


def _check_times(times: Any) -> None:
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or
                              times < 1):
        raise ValueError(f"repeat() takes None (forever) or an int >= 1, got {times!r}")


def _check_blocks_per_window(blocks_per_window: Any) -> None:
    if isinstance(blocks_per_window, bool) or not isinstance(blocks_per_window, int) or \
            blocks_per_window < 1:
        raise ValueError(f"blocks_per_window must be an int >= 1, got {blocks_per_window!r}")


def window_pipeline(ds: Dataset, blocks_per_window: int) -> DatasetPipeline:
    """``ds.window(blocks_per_window=...)``."""
    _check_blocks_per_window(blocks_per_window)
    return DatasetPipeline(_Split(ds, blocks_per_window))


def repeat_pipeline(ds: Dataset, times: int | None) -> DatasetPipeline:
    """``ds.repeat(times)``: the whole dataset as the window of each pass."""
    _check_times(times)
    return DatasetPipeline(_Whole(ds), times)
