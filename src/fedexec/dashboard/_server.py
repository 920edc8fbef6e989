"""The dashboard process: ``python -m fedexec.dashboard`` reads its configuration
(JSON, with the token) on stdin, listens, writes ``ready <url>`` (or
``error <why>``) to the ``ready_fd`` pipe, and serves until SIGTERM or until the
head process (``head_pid``) is gone."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from typing import Any

__all__ = ["main", "serve"]


def _watch(pid: int | None, server: Any) -> None:
    """Stop ``server`` once process ``pid`` is gone: exited, a zombie (its parent,
    e.g. a driver, has not reaped it yet) or its pid reused."""
    if not pid:
        return
    import psutil

    try:
        head = psutil.Process(pid)
        born = head.create_time()
    except psutil.Error:
        server.should_exit = True
        return
    while not server.should_exit:
        try:
            gone = head.status() == psutil.STATUS_ZOMBIE or head.create_time() != born
        except psutil.NoSuchProcess:
            gone = True
        except psutil.Error:
            gone = False
        if gone:
            server.should_exit = True
            return
        time.sleep(0.5)


def serve(config: dict[str, Any], ready: Any = None) -> None:
    """Serve the dashboard described by ``config`` (``host``, ``port``,
    ``head_address``, ``token``, optional ``job_address``, ``head_pid``,
    ``sample_interval``); ``ready(line)`` is told ``ready <url>`` or ``error <why>``."""
    try:
        import uvicorn

        from ._app import build_app
    except ImportError as exc:
        if ready:
            ready(f"error cannot run: {exc} (install it with pip install 'fedexec[dashboard]')")
        raise SystemExit(1) from None
    from ._libraries import LibrarySource
    from ._series import TimeSeries, sample_status
    from ._source import HeadSource

    host, port = config.get("host", "127.0.0.1"), int(config.get("port", 8265))
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        if ready:
            ready(f"error could not listen on {host}:{port} ({exc.strerror or exc})")
        raise SystemExit(1) from None
    bound = sock.getsockname()[1]
    source = HeadSource(config["head_address"], config["token"], config.get("job_address"),
                        ttl=float(config.get("cache_ttl", 1.0)))
    series = TimeSeries(lambda: sample_status(source.status()),
                        interval=float(config.get("sample_interval", 5.0)))
    libraries = LibrarySource(source.address, source.token, ttl=source.ttl)
    app = build_app(source, config["token"], series, libraries)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="off"))
    series.start()
    threading.Thread(target=_watch, args=(config.get("head_pid"), server), daemon=True,
                     name="fedexec-dashboard-watch").start()
    shown = f"[{host}]" if ":" in host else host
    if ready:
        ready(f"ready http://{shown}:{bound}")
    try:
        server.run(sockets=[sock])
    finally:
        series.stop()
        libraries.close()


def main() -> None:
    config = json.loads(sys.stdin.read())
    fd = config.pop("ready_fd", None)

    def ready(line: str) -> None:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, (line + "\n").encode())
                os.close(fd)

    serve(config, ready)
