"""The scaling policy on scripted demand: launches, limits, placement groups,
request_resources, infeasible demand and idle terminations (pure: no processes)."""

from __future__ import annotations

from fedexec.autoscaler import (
    ClusterConfig,
    Demand,
    NodeState,
    NodeTypeConfig,
    PlacementGroupDemand,
    plan,
)


def config(max_workers: int = 10, idle: float = 1.0, speed: float = 100.0,
           **types: dict) -> ClusterConfig:
    node_types = {"head": NodeTypeConfig("head", {"CPU": 1}, 0, 0)}
    for name, spec in (types or {"cpu4": {"resources": {"CPU": 4}}}).items():
        node_types[name] = NodeTypeConfig(name, spec["resources"], spec.get("min", 0),
                                          spec.get("max", max_workers))
    return ClusterConfig(node_types=node_types, head_node_type="head",
                         max_workers=max_workers, idle_timeout_minutes=idle,
                         upscaling_speed=speed)


HEAD = NodeState("h", "head", {"CPU": 1}, {"CPU": 0}, is_head=True)


def cpu(n: float) -> dict:
    return {"CPU": n}


def test_no_demand_no_launch():
    p = plan(Demand(), [HEAD], config(), now=0.0)
    assert p.launches == () and p.terminations == () and p.waiting == ()


def test_queued_tasks_launch_enough_nodes_with_reason():
    p = plan(Demand(tasks=[cpu(2)] * 7), [HEAD], config(), now=0.0)
    assert p.launch_counts() == {"cpu4": 4}  # 2 per node: 7 tasks -> 4 nodes
    assert p.launches[0].reason == "launching 4 x cpu4 for 7 queued {CPU: 2} tasks"


def test_free_capacity_is_used_before_launching():
    idle_node = NodeState("n1", "cpu4", cpu(4), cpu(4), idle_since=0.0)
    p = plan(Demand(tasks=[cpu(1)] * 5), [HEAD, idle_node], config(), now=0.0)
    assert p.launch_counts() == {"cpu4": 1}  # 4 fit on n1, 1 more node


def test_launching_nodes_count_as_capacity():
    pending = NodeState("n1", "cpu4", cpu(4), launching=True)
    p = plan(Demand(tasks=[cpu(1)] * 4), [HEAD, pending], config(), now=0.0)
    assert p.launches == ()


def test_best_fitting_type_does_not_waste_gpus():
    cfg = config(gpu={"resources": {"CPU": 8, "GPU": 1}}, cpu4={"resources": cpu(4)})
    p = plan(Demand(tasks=[cpu(1)] * 4), [HEAD], cfg, now=0.0)
    assert p.launch_counts() == {"cpu4": 1}
    p = plan(Demand(tasks=[{"CPU": 1, "GPU": 1}] * 2), [HEAD], cfg, now=0.0)
    assert p.launch_counts() == {"gpu": 2}


def test_mixed_shapes_pack_together():
    p = plan(Demand(tasks=[cpu(3), cpu(1), cpu(3), cpu(1)]), [HEAD], config(), now=0.0)
    assert p.launch_counts() == {"cpu4": 2}


def test_per_type_and_cluster_max_workers_bound_launches():
    p = plan(Demand(tasks=[cpu(4)] * 10), [HEAD], config(max_workers=3), now=0.0)
    assert p.launch_counts() == {"cpu4": 3}
    assert len(p.waiting) == 1 and p.waiting[0].count == 7
    assert "max_workers 3" in p.waiting[0].reason
    cfg = config(max_workers=10, cpu4={"resources": cpu(4), "max": 2})
    p = plan(Demand(tasks=[cpu(4)] * 10), [HEAD], cfg, now=0.0)
    assert p.launch_counts() == {"cpu4": 2}
    assert "cpu4 is at max_workers 2" in p.waiting[0].reason


def test_upscaling_speed_bounds_nodes_launching_at_once():
    nodes = [HEAD] + [NodeState(f"n{i}", "cpu4", cpu(4), cpu(0)) for i in range(9)]
    cfg = config(max_workers=100, speed=0.5)
    p = plan(Demand(tasks=[cpu(4)] * 50), nodes, cfg, now=0.0)
    assert p.launch_counts() == {"cpu4": 5}  # max(5, ceil(0.5 * 10 live nodes))
    assert "upscaling_speed" in p.waiting[0].reason
    launching = [NodeState(f"l{i}", "cpu4", cpu(4), launching=True) for i in range(3)]
    p = plan(Demand(tasks=[cpu(4)] * 50), nodes + launching, cfg, now=0.0)
    assert p.launch_counts() == {"cpu4": 2}  # 3 already launching


def test_min_workers_are_launched_without_demand():
    cfg = config(cpu4={"resources": cpu(4), "min": 2})
    p = plan(Demand(), [HEAD], cfg, now=0.0)
    assert p.launch_counts() == {"cpu4": 2}
    assert "min_workers is 2" in p.launches[0].reason
    p = plan(Demand(tasks=[cpu(4)] * 3), [HEAD], cfg, now=0.0)
    assert p.launch_counts() == {"cpu4": 3}  # 2 for min_workers (they take 2 tasks) + 1


def test_infeasible_demand_is_reported_not_launched():
    p = plan(Demand(tasks=[cpu(64)] * 3 + [{"TPU": 1}]), [HEAD], config(), now=0.0)
    assert p.launches == ()
    assert sorted(u.count for u in p.infeasible) == [1, 3]
    assert all("fits no node type" in u.reason and "cpu4 {CPU: 4}" in u.reason
               for u in p.infeasible)


def test_strict_pack_needs_one_node_holding_every_bundle():
    cfg = config(small={"resources": cpu(2)}, big={"resources": cpu(8)})
    pg = PlacementGroupDemand([cpu(2)] * 3, "STRICT_PACK", "g")
    p = plan(Demand(placement_groups=[pg]), [HEAD], cfg, now=0.0)
    assert p.launch_counts() == {"big": 1}
    too_big = PlacementGroupDemand([cpu(8)] * 2, "STRICT_PACK", "g2")
    p = plan(Demand(placement_groups=[too_big]), [HEAD], cfg, now=0.0)
    assert p.launches == () and "fits no node type" in p.infeasible[0].reason


def test_strict_spread_puts_each_bundle_on_its_own_node():
    free = NodeState("n1", "cpu4", cpu(4), cpu(4), idle_since=0.0)
    pg = PlacementGroupDemand([cpu(1)] * 3, "STRICT_SPREAD", "s")
    p = plan(Demand(placement_groups=[pg]), [HEAD, free], config(), now=0.0)
    assert p.launch_counts() == {"cpu4": 2}  # n1 takes one bundle; two more nodes
    assert "placement group s (STRICT_SPREAD, 3 bundles)" in p.launches[0].reason


def test_strict_spread_beyond_the_limits_waits_and_reserves_nothing():
    free = NodeState("n1", "cpu4", cpu(4), cpu(4), idle_since=0.0)
    pg = PlacementGroupDemand([cpu(1)] * 3, "STRICT_SPREAD", "s")
    p = plan(Demand(placement_groups=[pg], tasks=[cpu(4)]), [HEAD, free],
             config(max_workers=1), now=0.0)
    assert p.launches == ()
    assert "placement group s" in p.waiting[0].reason
    assert not any(u.kind == "queued task" for u in p.waiting)  # the task took n1


def test_pack_and_spread_place_on_existing_nodes_first():
    nodes = [HEAD] + [NodeState(f"n{i}", "cpu4", cpu(4), cpu(2)) for i in range(2)]
    for strategy in ("PACK", "SPREAD"):
        pg = PlacementGroupDemand([cpu(2)] * 2, strategy)
        assert plan(Demand(placement_groups=[pg]), nodes, config(), now=0.0).launches == ()
    pg = PlacementGroupDemand([cpu(2)] * 3, "PACK")
    assert plan(Demand(placement_groups=[pg]), nodes, config(),
                now=0.0).launch_counts() == {"cpu4": 1}


def test_request_resources_counts_totals_not_free_capacity():
    busy = [HEAD] + [NodeState(f"n{i}", "cpu4", cpu(4), cpu(0)) for i in range(2)]
    p = plan(Demand(requested=[cpu(1)] * 8), busy, config(), now=0.0)
    assert p.launches == ()  # 9 CPUs exist (head included), busy or not
    p = plan(Demand(requested=[cpu(1)] * 12), busy, config(), now=0.0)
    assert p.launch_counts() == {"cpu4": 1}
    assert "3 requested {CPU: 1} bundles" in p.launches[0].reason  # the head has 1 CPU


def test_idle_nodes_past_the_timeout_are_terminated():
    nodes = [HEAD, NodeState("old", "cpu4", cpu(4), cpu(4), idle_since=0.0),
             NodeState("new", "cpu4", cpu(4), cpu(4), idle_since=50.0),
             NodeState("busy", "cpu4", cpu(4), cpu(1))]
    p = plan(Demand(), nodes, config(idle=1.0), now=90.0)
    assert [t.node_id for t in p.terminations] == ["old"]
    assert "idle for 1.5 min" in p.terminations[0].reason


def test_idle_nodes_are_kept_for_min_workers_objects_and_demand():
    cfg = config(idle=1.0, cpu4={"resources": cpu(4), "min": 1})
    nodes = [HEAD, NodeState("a", "cpu4", cpu(4), cpu(4), idle_since=0.0),
             NodeState("b", "cpu4", cpu(4), cpu(4), idle_since=0.0)]
    p = plan(Demand(), nodes, cfg, now=600.0)
    assert len(p.terminations) == 1
    assert any("at min_workers 1" in k for k in p.kept)
    holding = [HEAD, NodeState("a", "cpu4", cpu(4), cpu(4), idle_since=0.0,
                               needed_objects=3)]
    p = plan(Demand(), holding, config(idle=1.0), now=600.0)
    assert p.terminations == ()
    assert p.kept == ("keeping node a (cpu4, idle for 10.0 min): holds 3 objects needed "
                      "by pending or running work",)
    p = plan(Demand(tasks=[cpu(1)]), nodes[:2], config(idle=1.0), now=600.0)
    assert p.terminations == () and p.launches == ()
    assert "pending demand fits on it" in p.kept[0]


def test_plan_is_deterministic():
    demand = Demand(tasks=[cpu(1), cpu(2), {"CPU": 1, "GPU": 1}] * 20,
                    placement_groups=[PlacementGroupDemand([cpu(1)] * 2, "SPREAD")])
    cfg = config(gpu={"resources": {"CPU": 4, "GPU": 2}}, cpu4={"resources": cpu(4)})
    assert plan(demand, [HEAD], cfg, 0.0) == plan(demand, [HEAD], cfg, 0.0)


def test_a_placement_group_that_cannot_be_placed_whole_launches_nothing():
    pg = PlacementGroupDemand([cpu(1)] * 3, "STRICT_SPREAD", "s")
    p = plan(Demand(placement_groups=[pg]), [HEAD], config(max_workers=2), now=0.0)
    assert p.launches == ()  # 2 nodes would not hold it: launch none of them
    assert "placement group s (STRICT_SPREAD, 3 bundles) waiting" in p.waiting[0].reason


def test_idle_nodes_that_request_resources_needs_are_kept():
    nodes = [HEAD, NodeState("a", "cpu4", cpu(4), cpu(4), idle_since=0.0),
             NodeState("b", "cpu4", cpu(4), cpu(4), idle_since=0.0)]
    p = plan(Demand(requested=[cpu(4)]), nodes, config(idle=1.0), now=600.0)
    assert [t.node_id for t in p.terminations] == ["b"]
    assert p.kept == ("keeping node a (cpu4, idle for 10.0 min): request_resources "
                      "needs it",)


def test_a_type_backing_off_launches_nothing_and_the_demand_waits_on_it():
    cfg = config(gpu={"resources": {"CPU": 8, "GPU": 1}}, cpu4={"resources": cpu(4), "min": 1})
    why = "is backing off after 2 failed launches (next try in 4 s): exit 1"
    p = plan(Demand(tasks=[cpu(1)] * 4 + [{"GPU": 1}]), [HEAD], cfg, now=0.0,
             backoff={"cpu4": why})
    # no min_workers launch for cpu4; the CPU tasks go to the other type that fits
    assert p.launch_counts() == {"gpu": 1}
    p = plan(Demand(tasks=[cpu(4)] * 2), [HEAD], config(), now=0.0, backoff={"cpu4": why})
    assert p.launches == ()
    assert [u.reason for u in p.waiting] == [f"2 queued tasks {{CPU: 4}}: waiting: cpu4 {why}"]
