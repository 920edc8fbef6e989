"""Integration tests: each test leaves no default executor behind."""

from __future__ import annotations

import pytest

import fedexec


@pytest.fixture(autouse=True)
def _shutdown_default_executor():
    yield
    if fedexec.is_initialized():
        fedexec.shutdown()
