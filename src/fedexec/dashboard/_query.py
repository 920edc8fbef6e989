"""Filtering and paging of the dashboard's lists (``/api/<kind>`` and the pages).

Filters: ``state``, ``name``, ``node_id``, ``job_id`` (exact match on the row's
field; ``name`` also matches a row's ``class`` or ``entrypoint``, as a substring,
case-insensitive). Paging: ``limit`` (default 100, at most 1000) and ``offset``;
the answer is ``{"total": rows after filtering, "items": that page, "limit",
"offset"}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["FILTERS", "MAX_LIMIT", "page", "parse_page"]

FILTERS = ("state", "name", "node_id", "job_id")
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


def parse_page(params: Mapping[str, str]) -> tuple[int, int]:
    """``(limit, offset)`` from query parameters; ``ValueError`` saying what is wrong."""
    out = []
    for key, default, top in (("limit", DEFAULT_LIMIT, MAX_LIMIT), ("offset", 0, None)):
        raw = params.get(key, "")
        try:
            value = int(raw) if raw != "" else default
        except ValueError:
            raise ValueError(f"{key} must be a whole number, got {raw!r}") from None
        if value < 0 or (top is not None and value > top):
            raise ValueError(f"{key} must be between 0 and {top if top else 'the total'}, "
                             f"got {value}")
        out.append(value)
    return out[0], out[1]


def _state_of(row: Mapping[str, Any]) -> str:
    return str(row.get("state", row.get("status", "")))


def _matches(row: Mapping[str, Any], key: str, want: str) -> bool:
    if key == "state":
        return _state_of(row).upper() == want.upper()
    if key == "name":
        text = " ".join(str(row.get(k) or "") for k in ("name", "class", "entrypoint"))
        return want.lower() in text.lower()
    return str(row.get(key, "")) == want


def page(rows: list[dict[str, Any]], params: Mapping[str, str]) -> dict[str, Any]:
    """One page of ``rows`` filtered by ``params`` (see the module docstring)."""
    limit, offset = parse_page(params)
    for key in FILTERS:
        want = params.get(key)
        if want:
            rows = [r for r in rows if _matches(r, key, want)]
    return {"total": len(rows), "items": rows[offset:offset + limit], "limit": limit,
            "offset": offset}
