"""Properties of the scaling policy over generated clusters and demand (hypothesis):
limits hold, launches are justified, feasible demand fits once limits allow, and
terminations respect min_workers, held objects and the head."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedexec.autoscaler import (
    ClusterConfig,
    Demand,
    NodeState,
    NodeTypeConfig,
    PlacementGroupDemand,
    plan,
)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

resources = st.fixed_dictionaries(
    {"CPU": st.sampled_from([1, 2, 4, 8])},
    optional={"GPU": st.sampled_from([1, 2]), "disk": st.sampled_from([1, 4])})
shapes = st.fixed_dictionaries(
    {"CPU": st.sampled_from([0.5, 1, 2, 3, 8, 16])},
    optional={"GPU": st.sampled_from([1, 2]), "disk": st.just(1)})


@st.composite
def clusters(draw, limits: bool = True):
    n_types = draw(st.integers(1, 3))
    cluster_max = draw(st.integers(0, 12)) if limits else 10_000
    types = {"head": NodeTypeConfig("head", {"CPU": 1}, 0, 0)}
    mins = 0
    for i in range(n_types):
        high = draw(st.integers(0, cluster_max)) if limits else 10_000
        low = draw(st.integers(0, min(high, max(0, cluster_max - mins), 2)))
        mins += low
        types[f"t{i}"] = NodeTypeConfig(f"t{i}", draw(resources), low, high)
    cfg = ClusterConfig(node_types=types, head_node_type="head", max_workers=cluster_max,
                        idle_timeout_minutes=1.0,
                        upscaling_speed=draw(st.sampled_from([0.5, 1.0, 3.0]))
                        if limits else 10_000.0)
    nodes = [NodeState("head", "head", {"CPU": 1}, {"CPU": draw(st.sampled_from([0, 1]))},
                       is_head=True)]
    for i in range(draw(st.integers(0, 6))):
        t = types[draw(st.sampled_from(sorted(set(types) - {"head"})))]
        free = {k: draw(st.sampled_from([0, v])) for k, v in t.resources.items()}
        idle = free == dict(t.resources) and draw(st.booleans())
        nodes.append(NodeState(f"n{i}", t.name, dict(t.resources), free,
                               idle_since=0.0 if idle else None,
                               needed_objects=draw(st.sampled_from([0, 0, 2])),
                               launching=not idle and draw(st.booleans())))
    return cfg, nodes


demands = st.builds(
    Demand,
    tasks=st.lists(shapes, max_size=40),
    actors=st.lists(shapes, max_size=5),
    placement_groups=st.lists(st.builds(
        PlacementGroupDemand, bundles=st.lists(shapes, min_size=1, max_size=3),
        strategy=st.sampled_from(["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"])),
        max_size=3),
    requested=st.lists(shapes, max_size=5))


def workers(nodes, node_type=None):
    return sum(1 for n in nodes if not n.is_head and node_type in (None, n.node_type))


def items(demand: Demand) -> int:
    return (len(demand.tasks) + len(demand.actors) + len(demand.requested)
            + sum(len(pg.bundles) for pg in demand.placement_groups))


@SETTINGS
@given(clusters(), demands)
def test_launches_never_exceed_max_workers(cluster, demand):
    cfg, nodes = cluster
    p = plan(demand, nodes, cfg, now=120.0)
    counts = p.launch_counts()
    assert workers(nodes) + sum(counts.values()) <= max(cfg.max_workers, workers(nodes))
    for name, n in counts.items():
        have = workers(nodes, name)
        assert have + n <= max(cfg.node_types[name].max_workers, have)
    assert all(lc.count > 0 and lc.reason.startswith("launching") for lc in p.launches)


@SETTINGS
@given(clusters(), demands)
def test_every_launch_is_justified(cluster, demand):
    """Beyond min_workers, each launched node takes at least one item of demand, and
    with no demand only min_workers launches anything."""
    cfg, nodes = cluster
    p = plan(demand, nodes, cfg, now=120.0)
    short = {t.name: max(0, t.min_workers - workers(nodes, t.name))
             for t in cfg.node_types.values()}
    for_min = {lc.node_type: lc.count for lc in p.launches if "min_workers is" in lc.reason}
    assert all(n <= short[name] for name, n in for_min.items())
    by_demand = sum(p.launch_counts().values()) - sum(for_min.values())
    assert 0 <= by_demand <= items(demand)
    if items(demand) == 0:
        assert by_demand == 0


def _with_launches(nodes, p, cfg):
    new = [NodeState(f"new{i}-{lc.node_type}", lc.node_type,
                     dict(cfg.node_types[lc.node_type].resources), launching=True)
           for lc in p.launches for i in range(lc.count)]
    return list(nodes) + new


def _fits(items_: list[dict], bins: list[dict]) -> bool:
    """Exhaustive check (independent of the policy): can every item be given a bin
    with room for it? Largest items first; bins with equal room tried once."""
    items_ = sorted(items_, key=lambda s: sorted(s.items()), reverse=True)

    def place(i: int) -> bool:
        if i == len(items_):
            return True
        tried = set()
        for b in bins:
            key = tuple(sorted(b.items()))
            if key in tried or any(b.get(k, 0) + 1e-9 < v for k, v in items_[i].items()):
                continue
            tried.add(key)
            for k, v in items_[i].items():
                b[k] -= v
            ok = place(i + 1)
            for k, v in items_[i].items():
                b[k] += v
            if ok:
                return True
        return False

    return place(0)


small_demands = st.builds(Demand, tasks=st.lists(shapes, max_size=10),
                          actors=st.lists(shapes, max_size=3),
                          requested=st.lists(shapes, max_size=4))


@SETTINGS
@given(clusters(limits=False), small_demands)
def test_feasible_demand_fits_after_launches_when_limits_allow(cluster, demand):
    """With limits out of the way nothing waits, and (checked exhaustively) the
    feasible tasks and actors fit the free resources of the nodes plus those
    launched, and the requested bundles fit their totals."""
    cfg, nodes = cluster
    p = plan(demand, nodes, cfg, now=120.0)
    assert p.waiting == ()
    after = _with_launches(nodes, p, cfg)
    infeasible = [u.shape for u in p.infeasible]

    def feasible(shapes_):
        return [dict(s) for s in shapes_ if {k: float(v) for k, v in s.items()}
                not in infeasible]

    free = [dict(n.total if n.available is None or n.launching else n.available)
            for n in after]
    assert _fits(feasible([*demand.tasks, *demand.actors]), free)
    assert _fits(feasible(demand.requested), [dict(n.total) for n in after])


@SETTINGS
@given(clusters(), demands)
def test_infeasible_demand_fits_no_node_type(cluster, demand):
    cfg, nodes = cluster
    p = plan(demand, nodes, cfg, now=120.0)
    for u in p.infeasible:
        if u.kind != "placement group":
            assert not any(all(t.resources.get(k, 0) >= v for k, v in u.shape.items())
                           for t in cfg.node_types.values()
                           if t.max_workers > 0 or t.name == cfg.head_node_type)


@SETTINGS
@given(clusters(), demands)
def test_terminations_respect_min_workers_objects_and_the_head(cluster, demand):
    cfg, nodes = cluster
    p = plan(demand, nodes, cfg, now=120.0)
    by_id = {n.node_id: n for n in nodes}
    gone: dict[str, int] = {}
    for t in p.terminations:
        n = by_id[t.node_id]
        assert not n.is_head and not n.launching and n.needed_objects == 0
        assert n.idle_since is not None and 120.0 - n.idle_since >= 60.0
        gone[n.node_type] = gone.get(n.node_type, 0) + 1
    for name, k in gone.items():
        assert workers(nodes, name) - k >= cfg.node_types[name].min_workers
