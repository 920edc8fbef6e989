"""The dashboard's library pages: serve applications, tune experiments and train
runs, as the libraries registered them with :mod:`fedexec.util.registry`.

    GET /api/serve|tune|train?limit=&offset=&state=&name=
        -> {"total", "items": [registry entries], "limit", "offset", "missing"}
    GET /serve, /tune, /train   the same as pages (one row per entry, its info
                                as columns)

The entries are read from the registry actor through a driver connection to the
head, made on first use (a dashboard nobody opens these pages on never makes
it) and remade after a failure, and cached for ``ttl`` seconds."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..exceptions import FedexecError
from . import _html, _query

__all__ = ["KINDS", "LibrarySource", "routes"]

#: Each library page: kind → title.
KINDS = {"serve": "Serve applications", "tune": "Tune experiments", "train": "Train runs"}


class LibrarySource:
    """The registry of the cluster whose head is at ``address`` (``host:port``)."""

    def __init__(self, address: str, token: str, ttl: float = 1.0,
                 timeout: float = 5.0) -> None:
        self.address, self.token, self.ttl, self.timeout = address, token, ttl, timeout
        self._lock = threading.Lock()
        self._ex: Any = None
        self._cache: dict[str, tuple[float, list[dict[str, Any]], dict[str, str]]] = {}

    def _connect(self) -> Any:
        if self._ex is None:
            import fedexec

            self._ex = fedexec.Executor(backend="native", address=self.address,
                                        token=self.token)
        return self._ex

    def rows(self, kind: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Entries of ``kind`` and ``{"registry": why}`` if they could not be read."""
        from ..util import registry

        with self._lock:
            hit = self._cache.get(kind)
            if hit is None or time.monotonic() - hit[0] >= self.ttl:
                try:
                    entries = registry.list_entries(kind, executor=self._connect(),
                                                    timeout=self.timeout)
                    hit = (time.monotonic(), entries, {})
                except (FedexecError, OSError, TimeoutError, RuntimeError) as exc:
                    self._close()
                    hit = (time.monotonic(), [],
                           {"registry": f"cannot read what the libraries registered: {exc}"})
                self._cache[kind] = hit
        return hit[1], dict(hit[2])

    def _close(self) -> None:
        ex, self._ex = self._ex, None
        if ex is not None:
            with contextlib.suppress(Exception):
                ex.shutdown(wait=False)

    def close(self) -> None:
        with self._lock:
            self._close()


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def flatten(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as a table row: name, state, its info's keys, then its times."""
    info = entry.get("info") or {}
    row = {"name": entry.get("name"), "state": entry.get("state")}
    row.update({k: v for k, v in info.items() if k not in row})
    row.update(started=_when(entry.get("started")), updated=_when(entry.get("updated")),
               finished=_when(entry.get("finished")))
    return row


def routes(source: LibrarySource) -> list[Route]:
    """``/api/<kind>`` and ``/<kind>`` for every library kind."""

    def read(request: Request) -> tuple[str, dict[str, Any]]:
        kind = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        rows, missing = source.rows(kind)
        return kind, {**_query.page(rows, request.query_params), "missing": missing}

    def api(request: Request) -> Response:
        try:
            return JSONResponse(read(request)[1])
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    def page(request: Request) -> Response:
        try:
            kind, result = read(request)
        except ValueError as exc:
            return HTMLResponse(_html.layout("Bad request", f"<p>{_html.esc(exc)}</p>"),
                                status_code=400)
        missing = result.pop("missing")
        result["items"] = [flatten(e) for e in result["items"]]
        return HTMLResponse(_html.list_page(f"/{kind}", KINDS[kind], result,
                                            request.query_params, missing,
                                            filters=("state", "name")))

    return ([Route(f"/api/{kind}", api) for kind in KINDS]
            + [Route(f"/{kind}", page) for kind in KINDS])
