"""Executors shared by a module's tune tests (one per backend)."""

from __future__ import annotations

import pytest

import fedexec


@pytest.fixture(scope="module")
def local_ex():
    with fedexec.Executor(backend="local", num_cpus=2) as ex:
        yield ex


@pytest.fixture(scope="module")
def native_ex():
    with fedexec.Executor(backend="native", num_cpus=2) as ex:
        yield ex


@pytest.fixture(scope="module", params=["native", "local"])
def native_or_local_ex(request):
    with fedexec.Executor(backend=request.param, num_cpus=2) as ex:
        yield ex


@pytest.fixture(scope="module", params=["native", "local", "dask"])
def any_ex(request):
    if request.param == "dask":
        pytest.importorskip("distributed")
    with fedexec.Executor(backend=request.param, num_cpus=2) as ex:
        yield ex
