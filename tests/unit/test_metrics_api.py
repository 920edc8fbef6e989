"""``fedexec.metrics``' argument checks and the merge rules of its rows."""

from __future__ import annotations

import pytest

from fedexec._metric_table import MetricTable
from fedexec.metrics import Counter, Gauge, Histogram


def test_bad_names_tags_and_values_are_refused():
    with pytest.raises(ValueError, match="not valid"):
        Counter("9lives")
    with pytest.raises(TypeError, match="write"):
        Counter("c", tag_keys="kind")  # type: ignore[arg-type]
    c = Counter("c_checked", tag_keys=("kind",))
    with pytest.raises(ValueError, match="needs a value for tag key"):
        c.inc()
    with pytest.raises(ValueError, match="has no tag key"):
        c.inc(tags={"kind": "a", "other": "b"})
    with pytest.raises(ValueError, match="positive"):
        c.inc(-1, tags={"kind": "a"})
    with pytest.raises(TypeError, match="number"):
        Gauge("g_checked").set("high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram("h_checked", boundaries=[1.0, 0.5])
    with pytest.raises(ValueError, match="has no tag key"):
        c.set_default_tags({"other": "a"})


def _row(kind, value=None, tags=None, updated=1.0, **extra):
    row = {"name": "m", "kind": kind, "description": "", "tags": tags or {},
           "updated": updated, **extra}
    if value is not None:
        row["value"] = value
    return row


def test_counters_add_gauges_keep_the_newest_histograms_add_per_bucket():
    t = MetricTable()
    t.merge([_row("counter", 2), _row("counter", 3), _row("counter", 1, tags={"k": "v"})])
    assert sorted(r["value"] for r in t.rows()) == [1.0, 5.0]
    g = MetricTable()
    g.merge([_row("gauge", 7, updated=5.0), _row("gauge", 1, updated=2.0)])
    assert [r["value"] for r in g.rows()] == [7.0]
    h = MetricTable()
    hist = {"boundaries": [1.0], "buckets": [1, 0], "sum": 0.5, "count": 1}
    h.merge([_row("histogram", **hist), _row("histogram", **{**hist, "buckets": [0, 1],
                                                             "sum": 3.0})])
    (row,) = h.rows()
    assert row["buckets"] == [1, 1] and row["count"] == 2 and row["sum"] == 3.5


def test_conflicting_or_too_many_series_are_dropped_and_counted():
    t = MetricTable(max_series=2)
    t.merge([_row("counter", 1), _row("gauge", 1), _row("counter", 1, tags={"a": "1"}),
             _row("counter", 1, tags={"a": "2"}), {"name": "broken"}])
    assert len(t) == 2 and t.dropped == 3


def test_histogram_takes_the_contract_order_and_rays_positional_order():
    contract = Histogram("h_contract", "d", ("route",), [0.1, 1.0])
    ray_order = Histogram("h_ray", "d", [0.1, 1.0], ("route",))
    for h in (contract, ray_order):
        assert h.boundaries == [0.1, 1.0]
        with pytest.raises(ValueError, match="needs a value for tag key"):
            h.observe(0.5)
        h.observe(0.5, tags={"route": "/"})
