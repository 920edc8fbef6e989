"""``fedexec.util.registry`` in one process: the entries' contract (bounded per
kind, updated in place, finished or removed, LOST when their owner stops
refreshing), on the local backend and with no executor at all."""

from __future__ import annotations

import time

import pytest

import fedexec
from fedexec.util import registry

T = 10.0


def _poll(fn, timeout: float = T):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _named(name: str, kind: str = "tune", executor=None) -> list[dict]:
    return [e for e in registry.list_entries(kind, executor=executor) if e["name"] == name]


def test_registry_keeps_at_most_max_per_kind_dropping_finished_first():
    reg = registry.Registry(max_per_kind=3)
    now = time.time()
    for i in range(3):
        reg.put({"kind": "tune", "name": f"e{i}", "state": "RUNNING", "info": {},
                 "finished": now if i == 1 else None})
    reg.put({"kind": "train", "name": "other", "state": "RUNNING", "info": {}})
    reg.put({"kind": "tune", "name": "e3", "state": "RUNNING", "info": {}})
    assert [e["name"] for e in reg.entries("tune")] == ["e0", "e2", "e3"]  # e1 had finished
    reg.put({"kind": "tune", "name": "e4", "state": "RUNNING", "info": {}})
    assert [e["name"] for e in reg.entries("tune")] == ["e2", "e3", "e4"]  # else the oldest
    assert reg.stats()["dropped"] == {"tune": 2}
    assert [e["name"] for e in reg.entries("train")] == ["other"]
    reg.put({"kind": "tune", "name": "e2", "state": "RUNNING", "info": {"x": 1}})
    assert [e["name"] for e in reg.entries("tune")] == ["e2", "e3", "e4"]  # in place
    assert reg.entries("tune")[0]["info"] == {"x": 1}
    reg.remove("tune", "e3")
    assert [e["name"] for e in reg.entries()] == ["other", "e2", "e4"]


def test_an_unfinished_entry_not_refreshed_reads_lost():
    reg = registry.Registry()
    reg.put({"kind": "serve", "name": "app", "state": "RUNNING", "info": {},
             "refresh_s": 0.05})
    reg.put({"kind": "serve", "name": "done", "state": "FINISHED", "info": {},
             "refresh_s": 0.05, "finished": time.time()})
    assert [e["state"] for e in reg.entries("serve")] == ["RUNNING", "FINISHED"]
    time.sleep(0.3)
    assert [e["state"] for e in reg.entries("serve")] == ["LOST", "FINISHED"]


def test_without_an_executor_entries_stay_in_this_process():
    assert not fedexec.is_initialized()
    entry = registry.register("tune", "unit_local", {"trials": 1})
    try:
        rows = _poll(lambda: _named("unit_local"))
        assert rows[0]["state"] == "RUNNING" and rows[0]["info"] == {"trials": 1}
        entry.update({"trials": 2, "best": 0.5})
        assert _poll(lambda: _named("unit_local")[0]["info"].get("trials") == 2)
        assert entry.info == {"trials": 2, "best": 0.5}
        entry.finish("errored", {"trials": 2})
        row = _named("unit_local")[0]
        assert row["state"] == "ERRORED" and row["finished"] >= row["started"]
        entry.update({"trials": 3})  # after finish: ignored
        time.sleep(2 * registry.UPDATE_INTERVAL_S)
        assert _named("unit_local")[0]["info"] == {"trials": 2}
    finally:
        entry.remove()
    assert _named("unit_local")[0]["state"] == "ERRORED"  # remove after finish: nothing
    assert not fedexec.is_initialized()  # registering started no runtime


def test_info_becomes_json_like_data():
    np = pytest.importorskip("numpy")
    entry = registry.register("train", "unit_json", {"loss": np.float32(0.25), "n": np.int64(3),
                                                     "obj": object(), "nested": {"a": (1, 2)}})
    entry.remove()
    assert entry.info["loss"] == 0.25 and type(entry.info["loss"]) is float
    assert entry.info["n"] == 3 and type(entry.info["n"]) is int
    assert entry.info["obj"].startswith("<object object")
    assert entry.info["nested"] == {"a": [1, 2]}


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="kind must be a non-empty string"):
        registry.register("", "x")
    with pytest.raises(ValueError, match="info must be a dict"):
        registry.register("tune", "x", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="state must be"):
        registry.register("tune", "x", state="")
    with pytest.raises(ValueError, match="refresh_s must be"):
        registry.register("tune", "x", refresh_s=0)


def test_due_says_when_an_update_would_go_out():
    entry = registry.register("tune", "unit_due", {"n": 0})
    try:
        assert not entry.due()  # the registration itself is not sent yet
        assert _poll(entry.due)
        entry.update({"n": 1})
        assert not entry.due()  # waiting to be sent
        assert _poll(lambda: _named("unit_due")[0]["info"] == {"n": 1})
        assert _poll(entry.due)
    finally:
        entry.remove()
    assert not entry.due() and _named("unit_due") == []


def test_entry_set_registers_updates_and_removes_on_the_local_backend():
    with fedexec.Executor(backend="local") as ex:
        apps = registry.EntrySet("serve", ex)
        apps.sync({"a": ("DEPLOYING", {"route_prefix": "/a"}),
                   "b": ("RUNNING", {"route_prefix": "/b"})})
        assert _poll(lambda: len(registry.list_entries("serve", executor=ex)) == 2)
        apps.sync({"a": ("RUNNING", {"route_prefix": "/a"})})
        assert _poll(lambda: [(e["name"], e["state"]) for e in
                              registry.list_entries("serve", executor=ex)] == [("a", "RUNNING")])
        apps.clear()
        assert registry.list_entries("serve", executor=ex) == []
