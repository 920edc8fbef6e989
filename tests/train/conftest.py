"""Executors shared by a module's train tests."""

from __future__ import annotations

import pytest

import fedexec

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def native_ex():
    with fedexec.Executor(backend="native", num_cpus=2) as ex:
        yield ex


@pytest.fixture(scope="module")
def local_ex():
    with fedexec.Executor(backend="local", num_cpus=2) as ex:
        yield ex
