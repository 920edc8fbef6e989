"""``/metrics``: the cluster's state, and user metrics recorded in tasks on two
nodes, summed at the head's dashboard."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(180)


def _samples(board) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = board.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def _wait_for(board, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        samples = _samples(board)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.5)


def record(n: int, where: str) -> str:
    from fedexec.metrics import Counter, Gauge, Histogram

    Counter("test_items", "items seen", tag_keys=("kind",)).inc(n, tags={"kind": "a"})
    Gauge("test_level", "a level", tag_keys=("where",)).set(n, tags={"where": where})
    Histogram("test_seconds", "durations", boundaries=[0.1, 1.0]).observe(0.5)
    import os

    return str(os.getpid())


def test_a_driver_records_too(board):
    import fedexec
    from fedexec.metrics import Counter, flush

    fedexec.init(address=board.cluster.address, token=board.token)
    try:
        Counter("driver_hits", "hits counted by the driver").inc(4)
        assert flush()
    finally:
        fedexec.shutdown()
    key = ("driver_hits_total", ())
    assert _wait_for(board, lambda s: s.get(key) == 4.0).get(key) == 4.0


def test_cluster_state_metrics(board):
    samples = _samples(board)
    ids = {n.node_id for n in board.cluster.nodes}
    alive = {dict(k[1])["node_id"]: v for k, v in samples.items()
             if k[0] == "fedexec_node_alive"}
    assert alive == dict.fromkeys(ids, 1.0)
    for node_id in ids:
        assert samples[("fedexec_node_memory_total_bytes", (("node_id", node_id),))] > 0
        assert samples[("fedexec_object_store_capacity_bytes", (("node_id", node_id),))] > 0
        assert samples[("fedexec_node_resource_total",
                        (("node_id", node_id), ("resource", "CPU")))] == 1.0


def test_user_metrics_from_tasks_on_two_nodes_add_up_at_the_head(board):
    with board.cluster.connect() as ex:
        pids = {ex.options(resources={"second": 1}).submit(record, 5, "second").result(60),
                ex.options(resources={"first": 1}).submit(record, 2, "head").result(60)}
        pids.add(ex.options(resources={"second": 1}).submit(record, 3, "second").result(60))
    assert len(pids) >= 2  # worker processes of both nodes recorded
    key = ("test_items_total", (("kind", "a"),))
    samples = _wait_for(board, lambda s: s.get(key) == 10.0)
    assert samples.get(key) == 10.0
    assert samples[("test_level", (("where", "second"),))] == 3.0
    assert samples[("test_level", (("where", "head"),))] == 2.0
    assert samples[("test_seconds_count", ())] == 3.0
    assert samples[("test_seconds_bucket", (("le", "1.0"),))] == 3.0
    assert samples[("test_seconds_bucket", (("le", "0.1"),))] == 0.0
    assert samples[("test_seconds_sum", ())] == pytest.approx(1.5)
    # the nodes' own latency histograms count those tasks (and the fixture's others)
    assert samples[("fedexec_scheduling_latency_seconds_count", ())] >= 3
    assert samples[("fedexec_task_duration_seconds_count", ())] >= 3
    assert samples[("fedexec_task_duration_seconds_sum", ())] > 0
    assert samples[("fedexec_tasks_run_total", (("outcome", "FINISHED"),))] >= 3
    # fedexec_tasks counts unfinished tasks only: not the ended ones the head keeps
    assert not [k for k in samples if k[0] == "fedexec_tasks" and
                dict(k[1]).get("state") in ("FINISHED", "FAILED")]


def _fail() -> None:
    raise ValueError("on purpose")


def test_failed_tasks_are_counted(board):
    key = ("fedexec_tasks_run_total", (("outcome", "FAILED"),))
    before = _samples(board).get(key, 0.0)
    with board.cluster.connect() as ex:
        for _ in range(2):
            with pytest.raises(ValueError, match="on purpose"):
                ex.options(max_retries=0, resources={"second": 1}).submit(_fail).result(60)
    assert _wait_for(board, lambda s: s.get(key) == before + 2).get(key) == before + 2
