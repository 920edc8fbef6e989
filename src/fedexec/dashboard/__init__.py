"""The cluster dashboard: pages, a paged JSON API and Prometheus ``/metrics``, read
from the head, behind the cluster token.

``fedexec start --head`` starts it next to the head (``127.0.0.1:8265``;
``--dashboard-host``, ``--dashboard-port``, ``--no-dashboard``); ``fedexec
dashboard`` prints its URL. It runs as a process of its own
(``python -m fedexec.dashboard``), a client of the head like ``fedexec status``:
every list is the cluster's (the head asks every node), cached for a second.

    GET /api/nodes|tasks|actors|objects|jobs|placement_groups
        ?limit=&offset=&state=&name=&node_id=&job_id=
        -> {"total": N, "items": [...], "limit", "offset", "missing": {node: why}}
    GET /api/serve|tune|train?limit=&offset=&state=&name=
        -> what the libraries registered (``fedexec.util.registry``), same shape
    GET /api/status      the cluster's status (as ``fedexec status --format json``)
    GET /metrics         Prometheus text
    GET /, /tasks, ...   pages; /charts: sampled time series

Access: ``Authorization: Bearer <token>``, ``?token=<token>`` (a page then sets a
login cookie and drops it from the URL), the cookie, or the login form.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from typing import Any

__all__ = ["DEFAULT_PORT", "launch", "stop"]

DEFAULT_PORT = 8265
_MODULE = "fedexec.dashboard"


def launch(*, head_address: str, token: str, host: str = "127.0.0.1",
           port: int = DEFAULT_PORT, job_address: str | None = None,
           head_pid: int | None = None, log_path: str | None = None,
           sample_interval: float = 5.0, cache_ttl: float = 1.0,
           timeout: float = 30.0) -> dict[str, Any]:
    """Start a dashboard process for the head at ``head_address`` (``host:port``);
    returns ``{"url", "pid"}`` once it listens (``port`` 0: any free port). It
    exits when ``head_pid`` does, or on SIGTERM (:func:`stop`). It samples its
    charts every ``sample_interval`` s and reads each list from the head at most
    once per ``cache_ttl`` s.

    Raises:
        RuntimeError: it could not start (the message says why, e.g. a busy port).
    """
    ready_r, ready_w = os.pipe()
    config = {"host": host, "port": port, "head_address": head_address, "token": token,
              "job_address": job_address, "head_pid": head_pid, "ready_fd": ready_w,
              "sample_interval": sample_interval, "cache_ttl": cache_ttl}
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen([sys.executable, "-m", _MODULE], stdin=subprocess.PIPE,
                                stdout=log, stderr=log, pass_fds=(ready_w,),
                                start_new_session=True)
    finally:
        os.close(ready_w)
        if log_path:
            log.close()  # type: ignore[union-attr]
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(config).encode())
        proc.stdin.close()
        line = _read_line(ready_r, proc, timeout)
    except BaseException:
        _kill(proc)
        raise
    finally:
        os.close(ready_r)
    if line.startswith("ready "):
        return {"url": line[6:].strip(), "pid": proc.pid}
    _kill(proc)
    where = f"; see {log_path}" if log_path else ""
    if line.startswith("error could not listen"):
        raise RuntimeError(f"the dashboard {line[6:]}: choose another port with "
                           f"--dashboard-port (0: any free port), or --no-dashboard{where}")
    if line.startswith("error "):
        raise RuntimeError(f"the dashboard {line[6:]}{where}")
    raise RuntimeError(f"the dashboard did not start within {timeout:g} s{where}")


def _read_line(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline, data = time.monotonic() + timeout, b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], min(left, 0.5))
        if r:
            chunk = os.read(fd, 512)
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    return data.decode(errors="replace").strip()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def stop(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM the dashboard process ``pid`` (SIGKILL after ``timeout``); does
    nothing if ``pid`` is not a dashboard."""
    if not pid:
        return
    import psutil

    try:
        proc = psutil.Process(pid)
        if _MODULE not in " ".join(proc.cmdline()):
            return
        proc.terminate()
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    except psutil.Error:
        return
