"""The conformance suite: every test runs on every available backend.

Fixtures:
    backend_name  the backend under test (parametrised over fedexec.backends.available())
    ex            a shared Executor for that backend (module scope; do not shut it down)
    make_executor a factory for fresh executors (shut down after the test)

Mark a test ``@pytest.mark.requires("actors", ...)`` to skip it on backends that
do not declare those capabilities: skipping is by capability, never by name.
"""

from __future__ import annotations

import threading

import pytest

import fedexec
from fedexec import backends

if "native" in backends.available():
    from _cluster_backend import register as _register_cluster

    _register_cluster()  # the native backend on a 3-node cluster (see _cluster_backend.py)

BACKENDS = backends.available()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", BACKENDS, scope="module")


@pytest.fixture(autouse=True)
def _skip_by_capability(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("requires")
    if marker is None or "backend_name" not in request.fixturenames:
        return
    name = request.getfixturevalue("backend_name")
    missing = set(marker.args) - backends.capabilities(name)
    if missing:
        pytest.skip(f"backend {name!r} lacks capabilities {sorted(missing)}")


@pytest.fixture(scope="module")
def ex(backend_name: str):
    executor = fedexec.Executor(backend=backend_name, num_cpus=4)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def make_executor(backend_name: str):
    made: list[fedexec.Executor] = []

    def make(**kwargs):
        kwargs.setdefault("num_cpus", 2)
        executor = fedexec.Executor(backend=backend_name, **kwargs)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(autouse=True)
def _no_default_executor_leak():
    yield
    if fedexec.is_initialized():
        fedexec.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _no_thread_leak():
    before = {t.ident for t in threading.enumerate()}
    yield
    # Runtimes started by the suite must have stopped their threads.
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        extra = [
            t for t in threading.enumerate()
            if t.ident not in before and t.name.startswith("fedexec")
        ]
        if not extra:
            return
        time.sleep(0.05)
    raise AssertionError(f"threads left running after the suite: {[t.name for t in extra]}")
