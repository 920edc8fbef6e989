"""The conformance suite: every test runs on every backend CI must have.

The backends are listed in ``REQUIRED`` (all of them, with the extras
``scripts/test.sh`` installs); a missing one fails the run at collection instead of
silently dropping out. ``FEDEXEC_TEST_BACKENDS=local,native`` narrows the list for
a quick run on a machine without the dask/spark extras.

Fixtures:
    backend_name  the backend under test
    ex            a shared Executor for that backend (module scope; do not shut it down)
    make_executor a factory for fresh executors (shut down after the test)

Mark a test ``@pytest.mark.requires("actors", ...)`` to skip it on backends that
do not declare those capabilities: skipping is by capability, never by name.
"""

from __future__ import annotations

import os

import pytest
from _cluster_backend import register as _register_cluster

import fedexec
from fedexec import backends

_register_cluster()  # the native backend on a 3-node cluster (see _cluster_backend.py)

#: Every backend the suite must run on (``native-cluster``: native on 3 nodes).
REQUIRED = ("dask", "local", "native", "native-cluster", "spark")


def _backends_under_test() -> list[str]:
    wanted = os.environ.get("FEDEXEC_TEST_BACKENDS")
    names = [n.strip() for n in wanted.split(",") if n.strip()] if wanted else list(REQUIRED)
    usable = backends.available()
    missing = [n for n in names if n not in usable]
    if missing:
        raise pytest.UsageError(
            f"the conformance suite must run on {names}, but {missing} cannot be used here "
            "(a missing extra): run scripts/test.sh, which installs them, or set "
            "FEDEXEC_TEST_BACKENDS to the ones you have"
        )
    return names


BACKENDS = _backends_under_test()


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
