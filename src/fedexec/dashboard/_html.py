"""Server-rendered pages of the dashboard: plain HTML and CSS, no script, no
build step. Every value is escaped; byte counts are shown for people."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

__all__ = ["PAGES", "layout", "list_page", "table"]

#: The navigation: path → title.
PAGES = {"/": "Cluster", "/tasks": "Tasks", "/actors": "Actors", "/objects": "Objects",
         "/jobs": "Jobs", "/placement_groups": "Placement groups", "/serve": "Serve",
         "/tune": "Tune", "/train": "Train", "/charts": "Charts"}

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#111}
header{background:#1e293b;color:#fff;padding:.5em 1em}
header a{color:#cbd5e1;margin-right:1em;text-decoration:none}
header a.here{color:#fff;font-weight:bold}
main{padding:1em}
table{border-collapse:collapse;font-size:.9em}
th,td{border-bottom:1px solid #e2e8f0;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f1f5f9}
.note{color:#b45309}
.chart{border:1px solid #e2e8f0;margin:.5em .5em 0 0;font-size:12px}
form.filters input{width:9em}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def layout(title: str, body: str, nav: bool = True, here: str = "") -> str:
    """A whole page."""
    links = "".join(f'<a href="{p}"{" class=here" if p == here else ""}>{esc(t)}</a>'
                    for p, t in PAGES.items()) if nav else ""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{esc(title)} · fedexec</title><link rel=icon href=\"data:,\">"
            f"<style>{_CSS}</style></head>"
            f"<body><header><strong>fedexec</strong> &nbsp; {links}</header>"
            f"<main><h1>{esc(title)}</h1>{body}</main></body></html>")


def _cell(key: str, value: Any) -> str:
    from ..cli import _amount

    if isinstance(value, (list, tuple)):
        return esc(", ".join(_amount(key, v) for v in value))
    return esc(_amount(key, value))


def table(rows: list[dict[str, Any]], links: Mapping[str, str] | None = None) -> str:
    """Rows as a table, one column per key seen; ``links``: column → URL pattern
    with ``{}`` for the cell's value."""
    if not rows:
        return "<p>none</p>"
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for row in rows:
        cells = []
        for c in cols:
            text = _cell(c, row.get(c))
            if links and c in links and row.get(c):
                text = f'<a href="{esc(links[c].format(row[c]))}">{text}</a>'
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def missing_note(missing: Mapping[str, str]) -> str:
    return "".join(f'<p class="note">not shown: {esc(k)}: {esc(v)}</p>'
                   for k, v in missing.items())


def list_page(path: str, title: str, result: dict[str, Any], params: Mapping[str, str],
              missing: Mapping[str, str], links: Mapping[str, str] | None = None,
              filters: tuple[str, ...] = ("state", "name", "node_id", "job_id")) -> str:
    """A paged list (``result`` as ``_query.page`` returns it), filterable by
    ``filters``."""
    keep = {k: v for k, v in params.items() if k not in ("offset", "token") and v}
    inputs = "".join(
        f'<label>{key} <input name="{key}" value="{esc(params.get(key, ""))}"></label> '
        for key in filters)
    form = (f'<form class="filters" method="get" action="{esc(path)}">{inputs}'
            f'<input type="hidden" name="limit" value="{result["limit"]}">'
            '<button type="submit">Filter</button></form>')
    total, offset, limit = result["total"], result["offset"], result["limit"]
    shown = len(result["items"])
    nav = [f"<span>{offset + 1 if shown else 0}-{offset + shown} of {total}</span>"]
    if offset > 0:
        prev = urlencode({**keep, "offset": max(0, offset - limit)})
        nav.insert(0, f'<a rel="prev" href="{esc(path)}?{esc(prev)}">previous</a>')
    if offset + shown < total:
        nxt = urlencode({**keep, "offset": offset + limit})
        nav.append(f'<a rel="next" href="{esc(path)}?{esc(nxt)}">next</a>')
    pager = f'<p class="pager">{" · ".join(nav)}</p>'
    body = form + missing_note(missing) + pager + table(result["items"], links) + pager
    return layout(title, body, here=path)
