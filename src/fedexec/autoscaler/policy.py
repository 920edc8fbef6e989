"""The scaling policy: a pure function from (pending demand, current nodes, config,
now) to a :class:`Plan` of launches and terminations, each with a reason people
can read. No processes, no I/O: the monitor feeds it and applies its plan.

One round of :func:`plan`:

1. Nodes to reach each type's ``min_workers`` are launched first (within the
   cluster's ``max_workers``; ``upscaling_speed`` does not hold them back).
2. ``request_resources`` bundles are packed onto the nodes' *total* resources
   (what the cluster must be able to hold, busy or not); what does not fit
   launches nodes.
3. Placement groups, then queued tasks and actors, are packed onto the nodes'
   *free* resources (existing and launching nodes, and those just planned):
   ``STRICT_PACK`` as one shape on one node, ``STRICT_SPREAD`` one bundle per
   distinct node, ``PACK`` on one node when it fits there, ``SPREAD`` on distinct
   nodes when it can. Tasks and actors are packed by shape, largest first.
4. What is left launches nodes of the best-fitting type (the type that wastes the
   fewest kinds of resource and is the most utilised by the demand it takes;
   ties: more demand per node, then the name), within each type's
   ``max_workers``, the cluster's ``max_workers``, and ``upscaling_speed``: at
   most ``max(5, ceil(upscaling_speed * live nodes))`` nodes launching at once.
   Node types backing off after failed launches (``backoff``) launch nothing.
   Demand that fits no node type is reported as infeasible and launches nothing;
   demand held back by a limit or a backoff is reported as waiting, naming it.
5. Worker nodes idle for ``idle_timeout_minutes`` are terminated, unless that
   would leave their type below ``min_workers``, they hold objects that pending
   or running work needs, or this round's demand was packed onto them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from .config import ClusterConfig, NodeTypeConfig

__all__ = [
    "STRATEGIES",
    "Demand",
    "Launch",
    "NodeState",
    "PlacementGroupDemand",
    "Plan",
    "Termination",
    "Unmet",
    "format_shape",
    "plan",
]

#: Placement-group strategies the policy understands.
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
_EPS = 1e-9
_MIN_LAUNCHING = 5

Shape = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class PlacementGroupDemand:
    """A placement group waiting for its bundles to be reserved."""

    bundles: Sequence[Mapping[str, float]]
    strategy: str = "PACK"
    name: str = ""


@dataclass(frozen=True)
class Demand:
    """What waits for resources: queued task and actor shapes (one entry per task
    or actor), pending placement groups, and ``request_resources`` bundles."""

    tasks: Sequence[Mapping[str, float]] = ()
    actors: Sequence[Mapping[str, float]] = ()
    placement_groups: Sequence[PlacementGroupDemand] = ()
    requested: Sequence[Mapping[str, float]] = ()


@dataclass(frozen=True)
class NodeState:
    """A node as the policy sees it. ``available`` None means all of ``total``;
    ``idle_since`` None means busy (else when it last became idle, in the same
    clock as ``now``); ``needed_objects`` counts the objects it holds that pending
    or running work needs; ``launching`` nodes were asked for but have not joined."""

    node_id: str
    node_type: str
    total: Mapping[str, float]
    available: Mapping[str, float] | None = None
    idle_since: float | None = None
    needed_objects: int = 0
    is_head: bool = False
    launching: bool = False


@dataclass(frozen=True)
class Launch:
    """Start ``count`` nodes of ``node_type``, for ``reason``."""

    node_type: str
    count: int
    reason: str


@dataclass(frozen=True)
class Termination:
    """Stop ``node_id``, for ``reason``."""

    node_id: str
    node_type: str
    reason: str


@dataclass(frozen=True)
class Unmet:
    """``count`` items of demand (``kind``: "task", "actor", "placement group",
    "requested bundle") of ``shape`` that this round cannot place, and why."""

    shape: Mapping[str, float]
    count: int
    kind: str
    reason: str


@dataclass(frozen=True)
class Plan:
    """One round's decisions. ``kept`` explains idle nodes kept past their timeout."""

    launches: tuple[Launch, ...] = ()
    terminations: tuple[Termination, ...] = ()
    infeasible: tuple[Unmet, ...] = ()
    waiting: tuple[Unmet, ...] = ()
    kept: tuple[str, ...] = ()

    def launch_counts(self) -> dict[str, int]:
        """``{node_type: nodes to launch}``."""
        out: dict[str, int] = {}
        for launch in self.launches:
            out[launch.node_type] = out.get(launch.node_type, 0) + launch.count
        return out

    def reasons(self) -> list[str]:
        """Every decision as one line, for logs, ``fedexec status`` and ``monitor``."""
        return ([lc.reason for lc in self.launches] + [t.reason for t in self.terminations]
                + list(self.kept) + [u.reason for u in self.infeasible]
                + [u.reason for u in self.waiting])


def format_shape(shape: Mapping[str, float] | Shape) -> str:
    """``{CPU: 2, GPU: 1}``: a resource shape for people."""
    items = shape.items() if isinstance(shape, Mapping) else shape
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(items)) + "}"


def _shape(resources: Mapping[str, float]) -> Shape:
    return tuple(sorted((k, float(v)) for k, v in resources.items() if v > 0))


def _fits_total(shape: Shape, total: Mapping[str, float]) -> bool:
    return all(total.get(k, 0.0) + _EPS >= v for k, v in shape)


def _fit_count(free: Mapping[str, float], shape: Shape) -> int:
    """How many of ``shape`` fit in ``free`` (a huge number for the empty shape)."""
    n = 1 << 30
    for k, v in shape:
        have = free.get(k, 0.0)
        if have + _EPS < v:
            return 0
        n = min(n, int((have + _EPS) / v))
    return n


def _key(resources: Mapping[str, float]) -> Shape:
    """The positive part of ``resources``, hashable (empty: nothing left)."""
    return tuple(sorted((k, v) for k, v in resources.items() if v > _EPS))


def _take(free: dict[str, float], shape: Shape, times: int = 1) -> None:
    for k, v in shape:
        free[k] = free.get(k, 0.0) - v * times


def _give(free: dict[str, float], shape: Shape, times: int = 1) -> None:
    for k, v in shape:
        free[k] = free.get(k, 0.0) + v * times


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _render(label: str, n: int) -> str:
    """``label`` with ``<n>`` replaced by ``n`` and ``<s>`` by the plural ending."""
    return label.replace("<n>", str(n)).replace("<s>", "" if n == 1 else "s")


class _Bin:
    """A node in the simulation: existing, launching, or planned this round."""

    __slots__ = ("free", "keys", "node", "node_type", "planned", "requested", "reserve",
                 "used")

    def __init__(self, node_type: str, total: Mapping[str, float],
                 available: Mapping[str, float] | None, node: NodeState | None):
        self.node_type = node_type
        self.node = node
        self.free = dict(total if available is None else available)
        self.reserve = dict(total)  # what request_resources bundles may still claim
        self.keys = [_key(self.free), _key(self.reserve)]  # for caching per content
        self.used = False  # demand was packed onto it this round
        self.requested = False  # request_resources bundles were packed onto it
        self.planned = node is None

    def take(self, shape: Shape, times: int = 1, reserve: bool = False) -> None:
        """Claim ``times`` x ``shape`` of the free (or ``reserve``) resources."""
        side = self.reserve if reserve else self.free
        _take(side, shape, times)
        self.keys[reserve] = _key(side)

    def give(self, shape: Shape) -> None:
        """Hand ``shape`` back to the free resources (a rolled-back reservation)."""
        _give(self.free, shape)
        self.keys[0] = _key(self.free)


class _Buckets:
    """Bins grouped by what they have left on one side (0: free, 1: reserve), so
    nodes with equal resources left are looked at once per shape."""

    def __init__(self, side: int, bins: Iterable[_Bin]):
        self.side = side
        self.groups: dict[Shape, dict[int, _Bin]] = {}
        for b in bins:
            self.add(b)

    def add(self, b: _Bin) -> None:
        self.groups.setdefault(b.keys[self.side], {})[id(b)] = b

    def remove(self, b: _Bin) -> None:
        key = b.keys[self.side]
        members = self.groups[key]
        del members[id(b)]
        if not members:
            del self.groups[key]


@dataclass
class _Group:
    """``count`` items of one shape and kind still to place."""

    shape: Shape
    count: int
    kind: str
    label: str = ""


@dataclass
class _Round:
    """The mutable state of one :func:`plan` call."""

    config: ClusterConfig
    bins: list[_Bin]
    per_type: dict[str, int]
    workers: int
    budget: int
    for_demand: dict[str, int] = field(default_factory=dict)  # type -> nodes
    buckets: list[_Buckets] = field(default_factory=list)  # [free side, reserve side]
    why: dict[str, dict[str, int]] = field(default_factory=dict)  # type -> label -> items
    backoff: Mapping[str, str] = field(default_factory=dict)  # type -> why it waits

    def __post_init__(self) -> None:
        self.buckets = [_Buckets(0, self.bins), _Buckets(1, self.bins)]

    def take(self, b: _Bin, shape: Shape, times: int = 1, reserve: bool = False) -> None:
        """``b.take``, keeping the buckets in step."""
        buckets = self.buckets[reserve]
        buckets.remove(b)
        b.take(shape, times, reserve)
        buckets.add(b)

    def give(self, b: _Bin, shape: Shape) -> None:
        """``b.give``, keeping the buckets in step."""
        self.buckets[0].remove(b)
        b.give(shape)
        self.buckets[0].add(b)

    def save(self) -> tuple[int, dict[str, int], int, int, dict[str, int],
                            dict[str, dict[str, int]]]:
        """What :meth:`restore` needs to undo the launches planned after this."""
        return (len(self.bins), dict(self.per_type), self.workers, self.budget,
                dict(self.for_demand), {k: dict(v) for k, v in self.why.items()})

    def restore(self, saved: tuple[int, dict[str, int], int, int, dict[str, int],
                                   dict[str, dict[str, int]]]) -> None:
        n, self.per_type, self.workers, self.budget, self.for_demand, self.why = saved
        for b in self.bins[n:]:
            self.buckets[0].remove(b)
            self.buckets[1].remove(b)
        del self.bins[n:]

    def room(self, t: NodeTypeConfig) -> int:
        """How many more nodes of ``t`` the limits allow now."""
        if t.name in self.backoff:
            return 0
        return max(0, min(t.max_workers - self.per_type.get(t.name, 0),
                          self.config.max_workers - self.workers, self.budget))

    def add_nodes(self, t: NodeTypeConfig, count: int, items: Mapping[str, int],
                  for_demand: bool = True) -> list[_Bin]:
        new = [_Bin(t.name, t.resources, None, None) for _ in range(count)]
        self.bins.extend(new)
        for b in new:
            self.buckets[0].add(b)
            self.buckets[1].add(b)
        self.per_type[t.name] = self.per_type.get(t.name, 0) + count
        self.workers += count
        if for_demand:
            self.budget -= count
            self.for_demand[t.name] = self.for_demand.get(t.name, 0) + count
        labels = self.why.setdefault(t.name, {}) if items else {}
        for label, n in items.items():
            labels[label] = labels.get(label, 0) + n
        return new

    def blocked(self, shape: Shape) -> str:
        """Why no node for ``shape`` can be launched now (the limits that apply)."""
        fits = [t for t in self.config.node_types.values()
                if t.max_workers > 0 and _fits_total(shape, t.resources)]
        if self.workers >= self.config.max_workers:
            return f"the cluster is at max_workers {self.config.max_workers}"
        if self.budget <= 0 and any(self.per_type.get(t.name, 0) < t.max_workers
                                    and t.name not in self.backoff for t in fits):
            return ("upscaling_speed allows no more nodes launching at once this round "
                    "(more follow as nodes join)")
        return "; ".join(f"{t.name} {self.backoff[t.name]}" if t.name in self.backoff
                         else f"{t.name} is at max_workers {t.max_workers}" for t in fits)


def _score(t: NodeTypeConfig, groups: Sequence[_Group]
           ) -> tuple[tuple[int, float, int], list[int]]:
    """Pack ``groups`` onto one empty node of ``t``: (score, items placed per group)."""
    free = dict(t.resources)
    placed = []
    for g in groups:
        n = min(g.count, _fit_count(free, g.shape)) if g.count else 0
        if n:
            _take(free, g.shape, n)
        placed.append(n)
    total = sum(placed)
    kinds = [k for k, v in t.resources.items() if v > 0]
    unused = sum(1 for k in kinds if free.get(k, 0.0) + _EPS >= t.resources[k])
    util = (sum(1.0 - free.get(k, 0.0) / t.resources[k] for k in kinds) / len(kinds)
            if kinds else 0.0)
    return (-unused, round(util, 9), total), placed


def _launch_for(r: _Round, groups: list[_Group], reserve: bool = False) -> list[_Bin]:
    """Launch nodes for what is left of ``groups`` (counts are decremented), best
    type first; the new nodes (with what is left of their free resources, or of
    their totals with ``reserve``: for ``request_resources`` bundles)."""
    new: list[_Bin] = []
    while any(g.count for g in groups):
        best = None
        for t in sorted(r.config.node_types.values(), key=lambda t: t.name):
            if r.room(t) <= 0:
                continue
            score, placed = _score(t, groups)
            if score[2] and (best is None or score > best[0]):
                best = (score, placed, t)
        if best is None:
            break
        _, placed, t = best
        repeat = min(g.count // n for g, n in zip(groups, placed) if n)
        repeat = max(1, min(repeat, r.room(t)))
        items: dict[str, int] = {}
        for g, n in zip(groups, placed):
            if n:
                items[g.label] = items.get(g.label, 0) + n * repeat
        bins = r.add_nodes(t, repeat, items)
        for b in bins:
            for g, n in zip(groups, placed):
                if n:
                    r.take(b, g.shape, n, reserve)
            b.used = True
        for g, n in zip(groups, placed):
            g.count -= n * repeat
        new.extend(bins)
    return new


def _tightest(r: _Round, shape: Shape, reserve: bool = False) -> Iterator[tuple[_Bin, int]]:
    """The bins ``shape`` fits in (with how many fit), best fit first: those with
    the fewest free kinds of resource ``shape`` does not use (keep GPU nodes for
    GPU work), then the least room left for it. Lazy: taking from a bin while
    iterating is fine."""
    needs = {k for k, _ in shape}
    scored = []
    for key, members in r.buckets[reserve].groups.items():
        free = dict(key)
        n = _fit_count(free, shape)
        if n:
            extra = sum(1 for k in free if k not in needs)
            scored.append((extra, sum(free.get(k, 0.0) / v for k, v in shape), n, members))
    scored.sort(key=lambda f: f[:2])  # stable: equal scores keep the nodes' order
    for *_, n, members in scored:
        for b in list(members.values()):
            yield b, n


def _pack_existing(r: _Round, g: _Group) -> None:
    """Best fit of ``g`` onto the bins' free resources (``g.count`` decremented)."""
    for b, fit in _tightest(r, g.shape):
        n = min(g.count, fit)
        r.take(b, g.shape, n)
        b.used = True
        g.count -= n
        if not g.count:
            return


def _reserve(r: _Round, g: _Group) -> None:
    """Best fit of ``g`` onto the bins' *total* resources (``request_resources``);
    existing nodes that take some are kept."""
    for b, fit in _tightest(r, g.shape, reserve=True):
        n = min(g.count, fit)
        r.take(b, g.shape, n, reserve=True)
        b.requested = True
        g.count -= n
        if not g.count:
            return


def _place_group(r: _Round, pg: PlacementGroupDemand, label: str) -> bool:
    """Reserve ``pg``'s bundles on existing bins, launching nodes for the rest;
    all or nothing (a partial reservation is rolled back)."""
    shapes = [_shape(b) for b in pg.bundles]
    if pg.strategy == "STRICT_PACK":
        whole: dict[str, float] = {}
        for s in shapes:
            _give(whole, s)
        shapes = [_shape(whole)]
    taken: list[tuple[_Bin, Shape]] = []
    left: list[Shape] = []
    distinct = pg.strategy in ("SPREAD", "STRICT_SPREAD")
    if pg.strategy == "PACK":  # all on one node if any node holds them all
        whole = {}
        for s in shapes:
            _give(whole, s)
        target = next((b for b, _ in _tightest(r, _shape(whole))), None)
        if target is not None:
            shapes = [_shape(whole)]
    for s in shapes:
        busy = {id(b) for b, _ in taken} if distinct else set()
        target = next((b for b, _ in _tightest(r, s) if id(b) not in busy), None)
        if target is None and pg.strategy == "SPREAD":
            target = next((b for b, _ in _tightest(r, s)), None)
        if target is None:
            left.append(s)
            continue
        r.take(target, s)
        taken.append((target, s))
    if left:
        saved = r.save()
        groups = [_Group(s, 1, "placement group", label) for s in left]
        if distinct:  # one new node per bundle
            for g in groups:
                _launch_for(r, [g])
        else:
            _launch_for(r, groups)
        if any(g.count for g in groups):
            r.restore(saved)
            for b, s in taken:
                r.give(b, s)
            return False
    for b, _ in taken:
        b.used = True
    return True


def _groups(shapes: Iterable[Mapping[str, float]], kind: str) -> list[_Group]:
    """Items of demand counted by shape (the same mapping object repeated, as
    ``[shape] * n``, is normalised once)."""
    by_object: dict[int, int] = {}
    objects: dict[int, Mapping[str, float]] = {}  # keeps each counted object alive
    for s in shapes:
        i = id(s)
        by_object[i] = by_object.get(i, 0) + 1
        objects[i] = s
    counts: dict[Shape, int] = {}
    for i, n in by_object.items():
        key = _shape(objects[i])
        counts[key] = counts.get(key, 0) + n
    return [_Group(k, n, kind) for k, n in counts.items()]


def _size(shape: Shape) -> tuple[int, float]:
    return (len(shape), sum(v for _, v in shape))


def plan(demand: Demand, nodes: Sequence[NodeState], config: ClusterConfig,
         now: float, backoff: Mapping[str, str] | None = None) -> Plan:
    """One round of scaling decisions (see the module docstring). Pure: the same
    inputs give the same :class:`Plan`. ``backoff``: node types that launch nothing
    this round (their launches failed; the monitor retries them later), each with
    the reason shown for the demand that waits on them."""
    types = config.node_types
    bins = [_Bin(n.node_type, n.total, None if n.launching else n.available, n)
            for n in nodes]
    per_type: dict[str, int] = {}
    for n in nodes:
        if not n.is_head:
            per_type[n.node_type] = per_type.get(n.node_type, 0) + 1
    launching = sum(1 for n in nodes if n.launching)
    live = sum(1 for n in nodes if not n.launching)
    budget = max(_MIN_LAUNCHING, math.ceil(config.upscaling_speed * max(1, live))) - launching
    r = _Round(config, bins, dict(per_type), sum(per_type.values()), max(0, budget),
               backoff=dict(backoff or {}))
    launches: list[Launch] = []

    for t in sorted(types.values(), key=lambda t: t.name):  # 1. min_workers
        short = min(t.min_workers - per_type.get(t.name, 0), config.max_workers - r.workers)
        if short > 0 and t.name not in r.backoff:
            r.add_nodes(t, short, {}, for_demand=False)
            launches.append(Launch(t.name, short, f"launching {short} x {t.name}: "
                                   f"min_workers is {t.min_workers}, "
                                   f"{t.min_workers - short} running or launching"))

    def feasible(shape: Shape) -> bool:
        return any(_fits_total(shape, t.resources) for t in types.values()
                   if t.max_workers > 0 or t.name == config.head_node_type) or \
            any(_fits_total(shape, n.total) for n in nodes)

    infeasible: list[Unmet] = []
    waiting: list[Unmet] = []
    type_names = ", ".join(f"{t.name} {format_shape(t.resources)}"
                           for t in sorted(types.values(), key=lambda t: t.name))

    def unmet(g: _Group, count: int, why: str, into: list[Unmet]) -> None:
        what = f"{_plural(count, g.kind)} {format_shape(g.shape)}"
        into.append(Unmet(dict(g.shape), count, g.kind, f"{what}: {why}"))

    # 2. request_resources: against totals
    req = sorted(_groups(demand.requested, "requested bundle"), key=lambda g: _size(g.shape),
                 reverse=True)
    for g in req:
        g.label = f"<n> requested {format_shape(g.shape)} bundle<s>"
        if not feasible(g.shape):
            unmet(g, g.count, f"fits no node type ({type_names})", infeasible)
            g.count = 0
            continue
        _reserve(r, g)
    _launch_for(r, [g for g in req if g.count], reserve=True)
    for g in req:
        if g.count:
            unmet(g, g.count, f"waiting: {r.blocked(g.shape)}", waiting)

    # 3. placement groups
    for i, pg in enumerate(demand.placement_groups):
        name = pg.name or f"#{i}"
        label = f"placement group {name} ({pg.strategy}, {_plural(len(pg.bundles), 'bundle')})"
        whole: dict[str, float] = {}
        for bundle in pg.bundles:
            _give(whole, _shape(bundle))
        probe = _Group(_shape(whole), 1, "placement group")
        if pg.strategy not in STRATEGIES:
            unmet(probe, 1, f"{label}: unknown strategy; expected one of "
                  f"{', '.join(STRATEGIES)}", infeasible)
            continue
        bad = [s for s in map(_shape, pg.bundles) if not feasible(s)] or (
            [probe.shape] if pg.strategy == "STRICT_PACK" and not feasible(probe.shape)
            else [])
        if bad:
            unmet(probe, 1, f"{label}: bundle {format_shape(bad[0])} fits no node type "
                  f"({type_names})", infeasible)
            continue
        if not _place_group(r, pg, label):
            unmet(probe, 1, f"{label} waiting: {r.blocked(probe.shape)}", waiting)

    # 4. tasks and actors, largest shapes first
    groups = _groups(demand.tasks, "queued task") + _groups(demand.actors, "pending actor")
    groups.sort(key=lambda g: (_size(g.shape), g.kind), reverse=True)
    placeable = []
    for g in groups:
        word, _, noun = g.kind.rpartition(" ")
        g.label = f"<n> {word} {format_shape(g.shape)} {noun}<s>"
        if not feasible(g.shape):
            unmet(g, g.count, f"fits no node type ({type_names})", infeasible)
            continue
        _pack_existing(r, g)
        if g.count:
            placeable.append(g)
    _launch_for(r, placeable)
    for g in placeable:
        if g.count:
            unmet(g, g.count, f"waiting: {r.blocked(g.shape)}", waiting)

    for name, labels in sorted(r.why.items()):
        nodes_n = r.for_demand[name]
        launches.append(Launch(name, nodes_n, f"launching {nodes_n} x {name} for "
                               + ", ".join(_render(k, v) for k, v in sorted(labels.items()))))

    terminations, kept = _idle(nodes, bins, config, now)
    return Plan(tuple(launches), tuple(terminations), tuple(infeasible), tuple(waiting),
                tuple(kept))


def _idle(nodes: Sequence[NodeState], bins: Sequence[_Bin], config: ClusterConfig,
          now: float) -> tuple[list[Termination], list[str]]:
    """5. Idle worker nodes past the timeout: terminated, or kept with a reason."""
    timeout = config.idle_timeout_minutes * 60.0
    count: dict[str, int] = {}
    for n in nodes:
        if not n.is_head:
            count[n.node_type] = count.get(n.node_type, 0) + 1
    terminations: list[Termination] = []
    kept: list[str] = []
    by_id = {id(b.node): b for b in bins if b.node is not None}
    for n in sorted(nodes, key=lambda n: (n.idle_since or 0.0, n.node_id)):
        if n.is_head or n.launching or n.idle_since is None or now - n.idle_since < timeout:
            continue
        secs = now - n.idle_since
        idle = f"idle for {secs:.0f} s" if secs < 60 else f"idle for {secs / 60:.1f} min"
        t = config.node_types.get(n.node_type)
        low = t.min_workers if t is not None else 0
        if by_id[id(n)].used:
            kept.append(f"keeping node {n.node_id} ({n.node_type}, {idle}): pending demand "
                        "fits on it")
        elif by_id[id(n)].requested:
            kept.append(f"keeping node {n.node_id} ({n.node_type}, {idle}): "
                        "request_resources needs it")
        elif n.needed_objects:
            kept.append(f"keeping node {n.node_id} ({n.node_type}, {idle}): holds "
                        f"{_plural(n.needed_objects, 'object')} needed by pending or "
                        "running work")
        elif count[n.node_type] <= low:
            kept.append(f"keeping node {n.node_id} ({n.node_type}, {idle}): {n.node_type} "
                        f"is at min_workers {low}")
        else:
            count[n.node_type] -= 1
            terminations.append(Termination(
                n.node_id, n.node_type, f"terminating node {n.node_id} ({n.node_type}): "
                f"{idle}, idle_timeout_minutes is {config.idle_timeout_minutes:g}"))
    return terminations, kept
