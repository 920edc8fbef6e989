"""Executors shared by a test module, one per backend (module-scoped fixtures used by
the library tests: tune, train)."""

from __future__ import annotations

import pytest

import fedexec


def _executor(backend: str):
    with fedexec.Executor(backend=backend, num_cpus=2) as ex:
        yield ex


@pytest.fixture(scope="module")
def local_ex():
    yield from _executor("local")


@pytest.fixture(scope="module")
def native_ex():
    yield from _executor("native")


@pytest.fixture(scope="module", params=["native", "local"])
def native_or_local_ex(request):
    yield from _executor(request.param)


@pytest.fixture(scope="module", params=["native", "local", "dask"])
def any_ex(request):
    if request.param == "dask":
        pytest.importorskip("distributed")
    yield from _executor(request.param)
