"""Serve tests: a native default executor and serve on a free port, per module.

Serve needs actors in their own processes (the native backend); the modules
skip when starlette/uvicorn (the ``[serve]`` extra) or requests are missing.
"""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("requests")

import fedexec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def serve_url():
    """Serve running on a native default executor; its proxy's base URL."""
    from fedexec import serve

    with fedexec.Executor(backend="native", num_cpus=2) as ex:
        port = free_port()
        serve.start(http_options={"port": port, "request_timeout_s": 3}, executor=ex)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            serve.shutdown()
