"""Serve tests: serve on a default executor per module and backend, on a free port.

Tests that take ``serve_url`` run on the backends in ``SERVE_BACKENDS`` (``native``,
``local``, ``dask``; ``FEDEXEC_TEST_BACKENDS`` narrows the list).
Mark a test ``@pytest.mark.requires("worker_processes", ...)`` to skip it, with
the missing capability named, on a backend that lacks one. Besides the declared
capabilities there is one probed here: ``actor_processes``, each actor in a
process of its own (native; Dask hosts several actors in one worker process, the
local backend runs them as threads), which tests that tell replicas apart by pid
or kill a replica's process need. The modules skip when starlette/uvicorn (the
``[serve]`` extra) or requests are missing.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("requests")

import fedexec
from _backend_support import free_port
from fedexec import backends

SERVE_BACKENDS = ("native", "local", "dask")


def _backends() -> list[str]:
    wanted = os.environ.get("FEDEXEC_TEST_BACKENDS")
    names = [n.strip() for n in wanted.split(",")] if wanted else list(SERVE_BACKENDS)
    return [n for n in names if n in SERVE_BACKENDS and n in backends.available()]


@pytest.fixture(scope="module", params=_backends())
def serve_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def serve_executor(serve_backend: str):
    with fedexec.Executor(backend=serve_backend, num_cpus=2) as ex:
        yield ex


def _actor_processes(ex: fedexec.Executor) -> bool:
    """Whether two actors of ``ex`` run in two processes, neither this one."""
    class Where:
        def pid(self) -> int:
            return os.getpid()

    actors = [ex.options(num_cpus=0).actor(Where) for _ in range(2)]
    try:
        pids = {a.pid.remote().result(60) for a in actors}
    finally:
        for a in actors:
            ex.kill(a)
    return len(pids) == 2 and os.getpid() not in pids


@pytest.fixture(scope="module")
def serve_capabilities(serve_backend: str, serve_executor: fedexec.Executor) -> frozenset[str]:
    """The backend's declared capabilities, and ``actor_processes`` if probed true."""
    probed = {"actor_processes"} if _actor_processes(serve_executor) else set()
    return backends.capabilities(serve_backend) | probed


@pytest.fixture(autouse=True)
def _skip_by_capability(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("requires")
    if marker is None or "serve_backend" not in request.fixturenames:
        return
    name = request.getfixturevalue("serve_backend")
    missing = set(marker.args) - request.getfixturevalue("serve_capabilities")
    if missing:
        pytest.skip(f"needs the capabilities {sorted(missing)}, which the {name!r} backend "
                    "lacks")


@pytest.fixture(scope="module")
def serve_url(serve_executor: fedexec.Executor):
    """Serve running on ``serve_executor``; its proxy's base URL."""
    from fedexec import serve

    port = free_port()
    serve.start(http_options={"port": port, "request_timeout_s": 3}, executor=serve_executor)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
