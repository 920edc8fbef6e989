"""The node manager's components driven without processes: the actor directory's
head side (``ActorLocator``), placement groups' two-phase reservation
(``PlacementGroups``), pending actors (``PendingActorsHost``), the event stream
(``EventStream``) and the head's persistence (``HeadPersistence``), each over a
node view that records what they send and relay. The components, the pool, the
core, the membership table and the directory are the real ones."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from fedexec.backends.native.actor_directory import ActorLocator
from fedexec.backends.native.core.scheduler import LocalScheduler
from fedexec.backends.native.directory import DirEntry
from fedexec.backends.native.events import EventStream
from fedexec.backends.native.membership import Membership
from fedexec.backends.native.node import _DEFER
from fedexec.backends.native.pending_actors import PendingActorsHost
from fedexec.backends.native.persistence import HeadPersistence
from fedexec.backends.native.placement_groups import PlacementGroups, pg_row
from fedexec.backends.native.protocol import Call, ErrorKind, Op, decode_error
from fedexec.exceptions import ClusterUnreachableError


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Conn:
    def __init__(self, cid: int) -> None:
        self.id = cid


class _Peer:
    def __init__(self, node_id: str, cid: int) -> None:
        self.node_id = node_id
        self.id = cid
        self.sent = 0


class _Task:
    def __init__(self, task_id: str, actor_id: str) -> None:
        self.id = task_id
        self.actor_id = actor_id
        self.name = f"call {task_id}"
        self.retries_left = 0


class _NodeView:
    """The node manager as its components see it, over real state; what they send,
    relay, pin and fail is recorded."""

    def __init__(self, node_id: str = "n0", cpus: float = 4.0, is_head: bool = True,
                 clock: Callable[[], float] | None = None) -> None:
        self.clock = clock or _Clock()
        self.node_id = node_id
        self.is_head = is_head
        self.head_id: str | None = node_id if is_head else None
        ids = itertools.count(1)
        self.core = LocalScheduler({"CPU": cpus}, [], 1, lambda: f"w{next(ids)}")
        self.pool = self.core.pool
        self.members = Membership()
        self.members.join(node_id, "local", {"CPU": cpus}, 0.0)
        self.peers: dict[str, _Peer] = {}
        self.tasks: dict[str, Any] = {}
        self.actors: dict[str, Any] = {}
        self.conns: dict[int, Any] = {}
        self.remote_actors: dict[str, dict[str, Any]] = {}
        self.federation = self  # relay, peer, best_remote: recorded here
        self.actor_table = self  # create, make, queue_call, dead: recorded here
        self.persistence = self  # directory_changed / _removed: recorded here
        self.event_stream = self  # pg_changed: recorded here
        self._dirty = False
        self._request_id = 0
        self.sent: list[tuple[int, list[Any]]] = []
        self.relayed: list[tuple[str, int, list[Any], Any]] = []
        self.pins: dict[str, int] = {}
        self.failed: list[tuple[str, ErrorKind, str]] = []
        self.persisted: list[tuple[str, str]] = []
        self.pg_events: list[tuple[str, bool]] = []
        self.logged: list[str] = []
        self.locator = ActorLocator(self, self.clock)
        self.pending = PendingActorsHost(self, self.clock)
        self.placement = PlacementGroups(self, self.clock)
        self.call_table: dict[int, Callable[..., Any]] = {
            **self.locator.calls(), **self.pending.calls(), **self.placement.calls()}

    def add_peer(self, node_id: str, cpus: float) -> _Peer:
        self.members.join(node_id, f"addr-{node_id}", {"CPU": cpus}, 0.0)
        peer = self.peers[node_id] = _Peer(node_id, 100 + len(self.peers))
        return peer

    def request(self, call: Call, conn: Any, req_id: int, *args: Any) -> Any:
        self._request_id = req_id
        return self.call_table[call](conn, *args)

    # what the components call
    def _send(self, cid: int, msg: list[Any]) -> None:
        self.sent.append((cid, msg))

    def relay(self, peer: Any, call: int, args: list[Any], cid: int | None, req_id: int,
               on_reply: Any = None) -> int:
        self.relayed.append((peer.node_id, call, args, on_reply))
        return len(self.relayed)

    def peer(self, node_id: str, address: str | None = None) -> _Peer:
        return self.peers[node_id]

    def directory_changed(self, entry: DirEntry) -> None:
        self.persisted.append(("put", entry.actor_id))

    def directory_removed(self, entry: DirEntry) -> None:
        self.persisted.append(("delete", entry.actor_id))

    def _log(self, text: str) -> None:
        self.logged.append(text)

    def _pin(self, oid: str) -> None:
        self.pins[oid] = self.pins.get(oid, 0) + 1

    def _unpin(self, oid: str) -> None:
        self.pins[oid] -= 1

    def _job_of(self, payload: Any) -> str:
        return ""

    def _fail_task(self, task: Any, kind: ErrorKind, message: str) -> None:
        self.tasks.pop(task.id, None)
        self.failed.append((task.id, kind, message))

    def pg_changed(self, pg: dict[str, Any], removed: bool = False) -> None:
        self.pg_events.append((pg["id"], removed))

    def _run(self, actions: list[Any]) -> None:
        assert not actions, actions  # nothing runs in these tests

    def dead(self, actor: Any, why: str) -> None:
        raise AssertionError("no actor is queued in these tests")

    def create(self, conn: Any, actor_id: str, spec: dict[str, Any], payload: Any,
                      deps: list[str], contained: list[str], restart: bool = False) -> Any:
        raise AssertionError("not reached")

    def make(self, conn: Any, actor_id: str, spec: dict[str, Any], payload: Any,
                    deps: list[str], contained: list[str]) -> Any:
        raise AssertionError("not reached")

    def queue_call(self, task: Any) -> str | None:
        raise AssertionError("not reached")

    def best_remote(self, demand: dict[str, float], need_room: bool) -> Any:
        return None

    def create_remote_actor(self, peer: Any, conn: Any, actor_id: str, spec: dict[str, Any],
                            payload: Any, deps: list[str], contained: list[str]) -> Any:
        raise AssertionError("not reached")

    def forward_call(self, task: Any, peer: Any) -> None:
        raise AssertionError("not reached")


_SPEC = {"name": "svc", "namespace": "ns", "max_restarts": 1}


# ------------------------------------------------------------------ ActorLocator
def test_a_name_is_taken_at_the_head_by_the_first_actor_that_registers_it():
    node = _NodeView()
    answers: list[tuple[bool, Any]] = []
    node.locator.register("a1", dict(_SPEC), lambda ok, value: answers.append((ok, value)))
    node.locator.register("a2", dict(_SPEC), lambda ok, value: answers.append((ok, value)))
    assert [ok for ok, _ in answers] == [True, True]
    assert answers[0][1][0] == "a1" and answers[1][1][0] == "a1"  # a2 got a1's name back
    assert node.persisted == [("put", "a1")]
    assert node.locator.lookup_at_head(_Conn(1), "svc", "ns")[0] == "a1"


def test_a_node_without_its_head_answers_unreachable():
    node = _NodeView(is_head=False)
    answers: list[tuple[bool, Any]] = []
    node.locator.register("a1", dict(_SPEC), lambda ok, value: answers.append((ok, value)))
    (ok, value), = answers
    assert not ok and isinstance(decode_error(value), ClusterUnreachableError)
    node.head_id = "head"
    head = node.add_peer("head", 1.0)
    node.locator.register("a1", dict(_SPEC), lambda ok, value: answers.append((ok, value)))
    (to, call, args, on_reply), = node.relayed
    assert (to, call, args[:3]) == (head.node_id, Call.REGISTER_ACTOR, ["a1", _SPEC, "n0"])
    on_reply(False, None)  # the head died before answering
    assert not answers[1][0] and isinstance(decode_error(answers[1][1]), ClusterUnreachableError)


def test_a_locate_for_a_restarting_actor_is_answered_by_its_registration_elsewhere():
    node = _NodeView()
    node.add_peer("n1", 1.0)
    node.add_peer("n2", 1.0)
    node.request(Call.REGISTER_ACTOR, None, 0, "a1", dict(_SPEC), "n1", "n2")
    node.locator.node_died("n1")  # its owner n2 lives: it will be made again
    assert node.locator.directory.entries["a1"].state == "RESTARTING"
    assert node.request(Call.LOCATE_ACTOR, _Conn(7), 42, "a1") is _DEFER
    assert node.sent == []
    node.request(Call.REGISTER_ACTOR, None, 0, "a1", dict(_SPEC), "n2", "n2")
    assert node.sent == [(7, [Op.REPLY, 42, True, "n2"])]
    assert node.request(Call.LOCATE_ACTOR, _Conn(7), 43, "a1") == "n2"  # answered at once


def test_a_locate_that_waits_past_its_limit_is_answered_none():
    clock = _Clock()
    node = _NodeView(clock=clock)
    node.add_peer("n1", 1.0)
    node.add_peer("n2", 1.0)
    node.request(Call.REGISTER_ACTOR, None, 0, "a1", dict(_SPEC), "n1", "n2")
    node.locator.node_died("n1")
    node.request(Call.LOCATE_ACTOR, _Conn(7), 42, "a1")
    node.locator.expire_locates(clock.now + 29.0)
    assert node.sent == [] and node.locator.locating
    node.locator.expire_locates(clock.now + 31.0)
    assert node.sent == [(7, [Op.REPLY, 42, True, None])] and not node.locator.locating


def test_an_actor_whose_node_and_owner_died_is_gone_and_its_name_free():
    node = _NodeView()
    node.add_peer("n1", 1.0)
    node.request(Call.REGISTER_ACTOR, None, 0, "a1", dict(_SPEC), "n1", "n1")
    node.locator.node_died("n1")
    assert node.persisted == [("put", "a1"), ("delete", "a1")]
    assert node.request(Call.LOCATE_ACTOR, _Conn(7), 1, "a1") is None
    node.request(Call.REGISTER_ACTOR, None, 0, "a2", dict(_SPEC), "n0", "n0")
    assert node.locator.directory.lookup("svc", "ns").actor_id == "a2"


# ---------------------------------------------------------------- PlacementGroups
def test_a_group_that_fits_here_is_reserved_and_removed_again():
    node = _NodeView(cpus=4.0)
    assert node.request(Call.PLACEMENT_GROUP, _Conn(5), 9, "G", [{"CPU": 2.0}], "PACK",
                        None) is _DEFER
    assert node.sent == [(5, [Op.REPLY, 9, True, {0: "n0"}])]
    assert node.pool.total["CPU_group_G"] == 2.0 and node.pool.total["CPU_group_0_G"] == 2.0
    assert node.pool.available()["CPU"] == 2.0
    assert node.placement.rows()[0]["state"] == "CREATED"
    assert node.request(Call.REMOVE_PLACEMENT_GROUP, _Conn(5), 10, "G") is True
    assert not [k for k in node.pool.total if "_group_" in k]
    assert node.pool.available()["CPU"] == 4.0
    assert node.pg_events == [("G", False), ("G", False), ("G", True)]


def test_a_bundle_refused_by_a_peer_releases_the_others_and_waits():
    node = _NodeView(cpus=4.0)
    node.add_peer("n1", 4.0)
    node.request(Call.PLACEMENT_GROUP, _Conn(5), 9, "G", [{"CPU": 2.0}, {"CPU": 2.0}],
                 "STRICT_SPREAD", None)
    assert node.pool.available()["CPU"] == 2.0  # its bundle here, until n1 answers
    (to, call, args, on_reply), = node.relayed
    assert (to, call, args) == ("n1", Call.RESERVE_BUNDLES, ["G", [[1, {"CPU": 2.0}]]])
    on_reply(True, False)  # n1: no room after all
    assert node.pool.available()["CPU"] == 4.0 and not node.placement.reserved
    assert node.sent == [] and node.placement.rows()[0]["state"] == "PENDING"


def test_a_group_no_node_set_fits_stays_pending_until_removed():
    node = _NodeView(cpus=4.0)
    node.request(Call.PLACEMENT_GROUP, _Conn(5), 9, "G", [{"CPU": 1.0}, {"CPU": 1.0}],
                 "STRICT_SPREAD", None)  # one node only: never now
    assert node.sent == [] and node.relayed == []
    node.request(Call.REMOVE_PLACEMENT_GROUP, _Conn(5), 10, "G")
    assert node.sent == [(5, [Op.REPLY, 9, True, None])]  # ready() is False


# --------------------------------------------------------------- PendingActorsHost
def test_an_autoscaler_report_counts_until_its_ttl():
    clock = _Clock()
    node = _NodeView(cpus=2.0, clock=clock)
    big = {"CPU": 8.0}
    assert "no autoscaler runs" in (node.pending.unhostable(big) or "")
    node.request(Call.AUTOSCALER_REPORT, None, 0, {"shapes": [{"CPU": 16.0}], "ttl": 10.0})
    assert node.pending.unhostable(big) is None
    clock.now += 11.0
    assert node.pending.launchable() is None and node.pending.autoscaler_stats()["stale"]
    assert "largest live node has {'CPU': 2.0}" in (node.pending.unhostable(big) or "")


def test_a_pending_actor_dropped_fails_its_calls_and_unpins_its_arguments():
    node = _NodeView(cpus=2.0)
    spec = {"demand_create": {"CPU": 8.0}, "await_node": "node", "class_name": "A"}
    assert node.pending.pend(_Conn(3), "a1", spec, b"args", ["d1"], ["c1"]) == ["a1", spec]
    assert node.pins == {"d1": 1, "c1": 1} and node.pending.table.demand() == [{"CPU": 8.0}]
    task = node.tasks["t1"] = _Task("t1", "a1")
    node.pending.queue_call(task)
    assert node.pending.kill("a1", no_restart=True)
    assert node.failed == [("t1", ErrorKind.ACTOR_DIED, "the actor is dead: it was killed "
                                                        "before a node could host it")]
    assert node.pins == {"d1": 0, "c1": 0} and not node.pending.table and node._dirty
    assert "killed" in node.pending.table.death("a1")


# ------------------------------------------------------------ the event stream, persistence
def _with_stream(view: _NodeView, config: dict[str, Any] | None = None) -> EventStream:
    view.config = config or {}  # type: ignore[attr-defined]
    view.workers = {}  # type: ignore[attr-defined]
    stream = view.event_stream = EventStream(view)  # type: ignore[assignment]
    return stream


_PG = {"id": "pg1", "name": "", "strategy": "PACK", "nodes": None, "bundles": [{"CPU": 1.0}]}


def test_a_node_sends_its_events_to_the_head_in_batches_kept_while_it_is_unreachable():
    view = _NodeView("n1", is_head=False)
    view.head_id = "n0"
    stream = _with_stream(view)
    stream.object_made()
    stream.object_made()
    stream.object_freed()
    stream.pg_changed(_PG)
    stream.flush(now=1.0)  # no link to the head: kept
    assert view.sent == [] and [ev[0] for ev in stream.buffer] == ["P", "O"]
    head = view.add_peer("n0", 2)
    head.link = object()  # type: ignore[attr-defined]
    stream.tick(1.2)  # before the next flush is due
    assert view.sent == []
    stream.tick(1.6)
    ((cid, (op, batch)),) = view.sent
    assert cid == head.id and op == Op.EVENTS
    assert batch[0][0] == "P" and batch[0][1]["state"] == "PENDING" and batch[1] == ["O", 2, 1]
    assert stream.buffer == [] and stream.head_rows("placement_groups") == []  # not the head


def test_the_head_logs_events_and_takes_its_state_back_after_a_restart(tmp_path):
    config = {"state_dir": str(tmp_path / "state")}
    first = _NodeView("h1", is_head=True)
    stream = _with_stream(first, config)
    first.persistence = HeadPersistence(first)  # type: ignore[assignment]
    first.persistence.recover()  # a new state dir: nothing to take back
    first.add_peer("n2", 2)
    first.persistence.node_joined("n2")
    node_conn = _Conn(7)
    node_conn.node_id = "n2"  # type: ignore[attr-defined]
    stream._on_events(node_conn, [Op.EVENTS, [["P", {**pg_row(_PG), "time": 1.0}],
                                               ["T", "t1", "f", "FINISHED", "", "", 42, 2.0]]])
    entry = DirEntry("a1", {"name": "svc", "max_restarts": 1}, "n2", "n2")
    first.locator.directory.entries["a1"] = entry
    first.persistence.directory_changed(entry)
    assert [r["task_id"] for r in stream.head_rows("tasks")] == ["t1"]
    # The head is killed; a new one starts on the same state dir.
    second = _NodeView("h2", is_head=True)
    stream2 = _with_stream(second, config)
    second.persistence = HeadPersistence(second)  # type: ignore[assignment]
    second.persistence.recover()
    assert set(second.members.nodes) == {"h2", "n2"}  # n2 counts as alive until silent
    assert second.locator.directory.entries["a1"].node_id == "n2"
    (pg,) = stream2.head_rows("placement_groups")
    assert pg["placement_group_id"] == "pg1" and pg["node_id"] == "n2"
    assert [(e["node_id"], e["state"]) for e in stream2.head_rows("node_events")] == [
        ("h1", "DEAD")]
    assert stream2.head_rows("tasks") == []  # finished tasks are not kept on disk
    second.persistence.node_dead("n2")  # its groups go with it
    third = _NodeView("h3", is_head=True)
    _with_stream(third, config)
    third.persistence = HeadPersistence(third)  # type: ignore[assignment]
    third.persistence.recover()
    assert set(third.members.nodes) == {"h3"}
    assert third.event_stream.head_rows("placement_groups") == []  # type: ignore[attr-defined]
    third.persistence.close(clean=True)  # a clean stop: a new cluster starts afresh
    assert list((tmp_path / "state").iterdir()) == []
