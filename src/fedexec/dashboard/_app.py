"""The dashboard's starlette application: the JSON API, ``/metrics`` and the pages
(all behind :class:`~._auth.TokenGuard`)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..exceptions import FedexecError
from . import _html, _libraries, _prom, _query
from ._auth import TokenGuard
from ._series import SERIES, TimeSeries, svg_chart
from ._source import KINDS, HeadSource

__all__ = ["build_app"]

_TITLES = {"tasks": "Tasks", "actors": "Actors", "objects": "Objects", "jobs": "Jobs",
           "placement_groups": "Placement groups", "nodes": "Nodes"}
_LINKS = {"jobs": {"job_id": "/jobs/{}/logs"}}


def _kind(request: Request) -> str:
    kind = str(request.path_params["kind"]).replace("-", "_")
    if kind not in KINDS:
        raise ValueError(f"no such list {kind!r}; choose one of {', '.join(KINDS)}")
    return kind


def _unavailable(exc: Exception) -> JSONResponse:
    return JSONResponse({"error": f"cannot read the cluster's state: {exc}"}, status_code=503)


def build_app(source: HeadSource, token: str, series: TimeSeries | None = None,
              libraries: _libraries.LibrarySource | None = None) -> Starlette:
    """The application reading ``source``, guarded by ``token``; ``series``: the
    sampled time series the charts draw (None: no charts); ``libraries``: where
    the serve/tune/train pages read (default: the registry of ``source``'s head)."""
    guard = TokenGuard(token)
    if libraries is None:
        libraries = _libraries.LibrarySource(source.address, source.token, ttl=source.ttl,
                                             timeout=source.timeout)
    registry = _prom.make_registry(source)

    def api_list(request: Request) -> Response:
        try:
            kind = _kind(request)
            rows, missing = source.rows(kind)
            result = _query.page(rows, request.query_params)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except (FedexecError, OSError) as exc:
            return _unavailable(exc)
        return JSONResponse({**result, "missing": missing})

    def api_status(request: Request) -> Response:
        try:
            return JSONResponse(source.status())
        except (FedexecError, OSError) as exc:
            return _unavailable(exc)

    def api_series(request: Request) -> Response:
        samples = list(series.samples) if series is not None else []
        return JSONResponse({"series": SERIES, "samples": [[t, v] for t, v in samples]})

    def metrics(request: Request) -> Response:
        try:
            text = _prom.render(registry)
        except (FedexecError, OSError) as exc:
            return PlainTextResponse(f"# cannot read the cluster's state: {exc}\n",
                                     status_code=503)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def page_list(request: Request) -> Response:
        kind = _kind(request)
        try:
            rows, missing = source.rows(kind)
            result = _query.page(rows, request.query_params)
        except ValueError as exc:
            return HTMLResponse(_html.layout("Bad request", f"<p>{_html.esc(exc)}</p>"),
                                status_code=400)
        except (FedexecError, OSError) as exc:
            return HTMLResponse(_html.layout("Unavailable",
                                             f"<p>cannot read the cluster: {_html.esc(exc)}</p>"),
                                status_code=503)
        return HTMLResponse(_html.list_page(f"/{kind}", _TITLES[kind], result,
                                            request.query_params, missing, _LINKS.get(kind)))

    def page_cluster(request: Request) -> Response:
        try:
            status = source.status()
        except (FedexecError, OSError) as exc:
            return HTMLResponse(_html.layout("Unavailable",
                                             f"<p>cannot read the cluster: {_html.esc(exc)}</p>"),
                                status_code=503)
        return HTMLResponse(_html.layout("Cluster", _cluster_body(status, series), here="/"))

    def page_charts(request: Request) -> Response:
        return HTMLResponse(_html.layout("Charts", _charts(series), here="/charts"))

    def job_logs(request: Request) -> Response:
        from ..backends.native.jobs import JobClient

        job_id = str(request.path_params["job_id"])
        if not source.job_address:
            return PlainTextResponse("this cluster runs no job agent\n", status_code=404)
        try:
            with JobClient(source.job_address, source.token, timeout=source.timeout) as c:
                data, _, status = c.logs(job_id, 0, 1 << 20)
        except ValueError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=404)
        except (FedexecError, OSError) as exc:
            return PlainTextResponse(f"cannot read the job's logs: {exc}\n", status_code=503)
        body = (f"<p>status: {_html.esc(status.value)} (first MiB of the output)</p>"
                f"<pre>{_html.esc(data.decode(errors='replace'))}</pre>")
        return HTMLResponse(_html.layout(f"Job {job_id}", body, here="/jobs"))

    routes = [
        Route("/login", guard.login, methods=["POST"]),
        Route("/api/status", api_status),
        Route("/api/series", api_series),
        *_libraries.routes(libraries),
        Route("/api/{kind}", api_list),
        Route("/metrics", metrics),
        Route("/", page_cluster),
        Route("/charts", page_charts),
        Route("/jobs/{job_id}/logs", job_logs),
        Route("/{kind}", page_list),
    ]
    app = Starlette(routes=routes,
                    middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)],
                    exception_handlers={ValueError: _not_found})
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(exc)}, status_code=404)
    return HTMLResponse(_html.layout("Not found", f"<p>{_html.esc(exc)}</p>"), status_code=404)


def _cluster_body(status: dict[str, Any], series: TimeSeries | None) -> str:
    from ..cli import format_bytes

    rows = []
    for n in status["nodes"]:
        host = n.get("host") or {}
        used = {k: v - (n.get("available") or {}).get(k, 0.0)
                for k, v in (n.get("resources") or {}).items()}
        rows.append({
            "node_id": n["node_id"] + (" (head)" if n.get("is_head") else ""),
            "address": n.get("address"), "state": n.get("state"),
            "CPU": f"{used.get('CPU', 0):g} / {(n.get('resources') or {}).get('CPU', 0):g}",
            "GPU": f"{used.get('GPU', 0):g} / {(n.get('resources') or {}).get('GPU', 0):g}",
            "host CPU %": f"{host['cpu_percent']:.0f}" if "cpu_percent" in host else "-",
            "host memory": (f"{format_bytes(host['memory_used'])} / "
                            f"{format_bytes(host['memory_total'])}") if host else "-",
            "object store": (f"{format_bytes(n['store']['used_bytes'])} / "
                             f"{format_bytes(n['store']['capacity'])}") if "store" in n else "-",
            "tasks": n.get("tasks", "-"), "actors": n.get("actors", "-"),
            "workers": n.get("workers", "-"),
        })
    store = status["store"]
    totals = (f"<p>{len(status['nodes'])} node(s); tasks: {status['tasks']} unfinished, "
              f"{status['queued_tasks']} queued; actors: {status['actors']}; object store: "
              f"{_html.esc(format_bytes(store['used_bytes']))} / "
              f"{_html.esc(format_bytes(store['capacity']))} in {store['num_objects']} "
              f"objects ({store['num_spilled']} spilled)</p>")
    res = "".join(
        f"<li>{_html.esc(k)}: {_html.esc(_amount(k, v - status['available'].get(k, 0.0)))}"
        f" / {_html.esc(_amount(k, v))}</li>" for k, v in sorted(status["total"].items()))
    return (totals + _html.missing_note(status.get("missing", {})) + _html.table(rows)
            + f"<h2>Resources (used / total)</h2><ul>{res}</ul>" + _charts(series, few=True))


def _amount(key: str, value: Any) -> str:
    from ..cli import _amount as amount

    return amount(key, value)


def _charts(series: TimeSeries | None, few: bool = False) -> str:
    if series is None:
        return "<p>charts are off</p>"
    names = list(SERIES)[:2] if few else list(SERIES)
    svgs = "".join(svg_chart(series.points(n), *SERIES[n]) for n in names)
    note = f'<p class="note">{_html.esc(series.last_error)}</p>' if series.last_error else ""
    return f"<h2>Charts (every {series.interval:g} s)</h2>{note}<div>{svgs}</div>"
