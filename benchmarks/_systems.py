"""One small adapter per system, so that each case is written once.

Every adapter imports its library lazily (inside ``start``), so this module imports
with only the standard library installed. An adapter is used by exactly one
process (``_child.py`` or ``_cold.py``), between ``start()`` and ``shutdown()``.

Capabilities:
    object_store   put/get of a value, and passing its handle to tasks
    passes_refs    a task may take another task's pending result as an argument
    actors         stateful actors with sync methods
    async_actors   actors with ``async def`` methods
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

NUM_CPUS = 2

#: Every system the harness knows, in table order.
SYSTEMS = ("fedexec-native", "fedexec-local", "ray", "dask", "loky", "processpool")

#: The Python package each system needs (checked before a run; missing -> skipped).
REQUIRES = {
    "fedexec-native": "fedexec",
    "fedexec-local": "fedexec",
    "ray": "ray",
    "dask": "distributed",
    "loky": "loky",
    "processpool": None,
}

#: What ``import`` a user writes to use the system (timed by the ``startup`` case).
IMPORT_STATEMENT = {
    "fedexec-native": "import fedexec",
    "fedexec-local": "import fedexec",
    "ray": "import ray",
    "dask": "from distributed import Client, LocalCluster",
    "loky": "import loky",
    "processpool": "import concurrent.futures",
}


class System:
    """The operations the cases need; subclasses fill in what their system has."""

    name = ""
    object_store = False
    passes_refs = False
    actors = False
    async_actors = False
    #: notes that qualify this system's numbers (printed once, above the tables)
    notes: tuple[str, ...] = ()

    def start(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Start ``fn(*args)`` as a task; a handle for its result."""
        raise NotImplementedError

    def result(self, handle: Any, timeout: float | None = None) -> Any:
        """The value behind one handle (a task result, a put, an actor call)."""
        return handle.result(timeout=timeout)

    def gather(self, handles: Sequence[Any]) -> list[Any]:
        """The values behind many handles, in order."""
        return [h.result() for h in handles]

    def put(self, value: Any) -> Any:
        raise NotImplementedError

    def actor(self, cls: type) -> Any:
        raise NotImplementedError

    def call(self, actor: Any, method: str, *args: Any) -> Any:
        """Submit ``actor.method(*args)``; a handle for its result."""
        raise NotImplementedError

    def gather_calls(self, handles: Sequence[Any]) -> list[Any]:
        """The values of many actor calls, in order."""
        return self.gather(handles)


class Fedexec(System):
    object_store = passes_refs = actors = async_actors = True

    def __init__(self, backend: str):
        self.backend = backend
        self.name = f"fedexec-{backend}"
        self.ex: Any = None
        if backend == "local":
            self.notes = (
                "fedexec-local runs tasks on threads in the driver (no worker processes); "
                "get() returns a fresh unpickled copy of a put value",
            )

    def start(self) -> None:
        import fedexec

        self.ex = fedexec.Executor(backend=self.backend, num_cpus=NUM_CPUS)

    def shutdown(self) -> None:
        self.ex.shutdown(wait=True)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.ex.submit(fn, *args)

    def result(self, handle: Any, timeout: float | None = None) -> Any:
        return self.ex.get(handle, timeout=timeout)

    def gather(self, handles: Sequence[Any]) -> list[Any]:
        return self.ex.get(list(handles))  # type: ignore[no-any-return]

    def put(self, value: Any) -> Any:
        return self.ex.put(value)

    def actor(self, cls: type) -> Any:
        return self.ex.actor(cls)

    def call(self, actor: Any, method: str, *args: Any) -> Any:
        return getattr(actor, method).remote(*args)


class Ray(System):
    name = "ray"
    object_store = passes_refs = actors = async_actors = True
    notes = (
        "ray: ray.init(num_cpus=2, include_dashboard=False), usage stats off; "
        "get() of a numpy array is a zero-copy read-only view of the object store",
    )

    def __init__(self) -> None:
        self._remote: dict[Callable[..., Any], Any] = {}

    def start(self) -> None:
        import logging

        import ray

        self.ray = ray
        ray.init(
            num_cpus=NUM_CPUS,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )

    def shutdown(self) -> None:
        self.ray.shutdown()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        rf = self._remote.get(fn)
        if rf is None:
            rf = self._remote[fn] = self.ray.remote(fn)
        return rf.remote(*args)

    def result(self, handle: Any, timeout: float | None = None) -> Any:
        return self.ray.get(handle, timeout=timeout)

    def gather(self, handles: Sequence[Any]) -> list[Any]:
        return self.ray.get(list(handles))  # type: ignore[no-any-return]

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def actor(self, cls: type) -> Any:
        return self.ray.remote(cls).remote()

    def call(self, actor: Any, method: str, *args: Any) -> Any:
        return getattr(actor, method).remote(*args)


class Dask(System):
    name = "dask"
    object_store = passes_refs = actors = async_actors = True
    notes = (
        "dask: distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True); "
        "submit(pure=False); put = client.scatter(hash=False), get = future.result() "
        "(copies the array back from the worker); actors = submit(cls, actor=True)",
    )

    def start(self) -> None:
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=NUM_CPUS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        self.client = Client(self.cluster)

    def shutdown(self) -> None:
        self.client.close()
        self.cluster.close()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def gather(self, handles: Sequence[Any]) -> list[Any]:
        return self.client.gather(list(handles))  # type: ignore[no-any-return]

    def put(self, value: Any) -> Any:
        return self.client.scatter(value, hash=False)

    def actor(self, cls: type) -> Any:
        return self.client.submit(cls, actor=True).result()

    def call(self, actor: Any, method: str, *args: Any) -> Any:
        return getattr(actor, method)(*args)

    def gather_calls(self, handles: Sequence[Any]) -> list[Any]:
        return [h.result() for h in handles]  # ActorFutures: client.gather does not take them


class _Pool(System):
    """A ``concurrent.futures`` pool of processes: tasks only, arguments by value."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.submit(fn, *args)


class Loky(_Pool):
    name = "loky"
    notes = ("loky: loky.get_reusable_executor(max_workers=2)",)

    def start(self) -> None:
        import loky

        self.pool = loky.get_reusable_executor(max_workers=NUM_CPUS)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, kill_workers=True)


class ProcessPool(_Pool):
    name = "processpool"

    @property
    def notes(self) -> tuple[str, ...]:  # type: ignore[override]
        import multiprocessing

        method = multiprocessing.get_context().get_start_method()
        return (f"processpool: concurrent.futures.ProcessPoolExecutor(2), start method "
                f"{method!r} (this platform's default)",)

    def start(self) -> None:
        import concurrent.futures as cf

        self.pool = cf.ProcessPoolExecutor(NUM_CPUS)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)


def make(name: str) -> System:
    """The adapter for system ``name`` (one of :data:`SYSTEMS`)."""
    if name.startswith("fedexec-"):
        return Fedexec(name.removeprefix("fedexec-"))
    factories: dict[str, Callable[[], System]] = {
        "ray": Ray,
        "dask": Dask,
        "loky": Loky,
        "processpool": ProcessPool,
    }
    return factories[name]()


def unavailable_reason(name: str) -> str | None:
    """Why system ``name`` cannot run in this interpreter, or None if it can."""
    package = REQUIRES[name]
    if package is not None and importlib.util.find_spec(package) is None:
        return f"package {package!r} is not installed (pip install -e '.[bench]')"
    if name.startswith("fedexec-"):
        import fedexec

        backend = name.removeprefix("fedexec-")
        if backend not in fedexec.backends.available():
            return (
                f"backend {backend!r} is not in fedexec.backends.available() "
                f"({', '.join(fedexec.backends.available())})"
            )
    return None
