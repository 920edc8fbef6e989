"""``fedexec status`` text: the pending demand by resource shape."""

from __future__ import annotations


def test_status_lists_the_pending_demand_by_shape():
    from fedexec.cli import format_status

    node = {"node_id": "n1", "address": "a", "state": "alive", "tasks": 9, "queued_tasks": 8,
            "actors": 0, "objects": 0, "workers": 1,
            "store": {"used_bytes": 0, "capacity": 1}, "is_head": True,
            "queued_shapes": [[{"CPU": 2.0}, 7], [{"CPU": 1.0, "GPU": 1.0}, 1]]}
    status = {"nodes": [node, {**node, "node_id": "n2", "is_head": False,
                               "queued_shapes": [[{"CPU": 2.0}, 3]]}],
              "total": {"CPU": 1.0}, "available": {"CPU": 0.0}, "tasks": 9,
              "queued_tasks": 8, "actors": 0, "workers": 1, "objects": 0,
              "store": {"used_bytes": 0, "capacity": 1, "num_objects": 0, "num_spilled": 0,
                        "spilled_bytes": 0}}
    assert "pending demand: 1 x {CPU: 1, GPU: 1}, 10 x {CPU: 2}" in format_status(status)
