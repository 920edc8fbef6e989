"""The head's state kept on its disk and taken back after a restart. A component of
:class:`~.node.NodeManager` (the file: :class:`~.headstore.HeadStore`); on a node
that is not the head, or a head without ``state_dir``, it keeps nothing.

A head given a ``state_dir`` writes there the actor directory, the placement
groups and the live nodes as they change. Started again on that directory (after
its process was killed; same token and port), it takes them back before serving:

* the nodes of the table count as alive until they miss ``heartbeat_timeout``, so
  nodes rejoining one by one do not declare the others dead (their running work,
  actors and objects stay), and each rejoining node registers its named and
  restartable actors again, those waiting there for a node included (what
  changed while the head was down, or all of it for a head without ``state_dir``);
* named actors are found by name again; those that lived on the killed head itself
  are dead (its workers died with it): their names are free;
* placement groups are listed again (their origin nodes keep them).

Jobs are kept by the job agent on the same disk (``jobs_agent.py``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .actor_directory import tracked
from .directory import DirEntry
from .headstore import HeadStore

if TYPE_CHECKING:
    from .actor_directory import ActorLocator
    from .events import EventStream
    from .membership import Membership
    from .pending_actors import PendingActorsHost
    from .placement_groups import PlacementGroups

__all__ = ["HeadPersistence", "PersistenceNode"]


class PersistenceNode(Protocol):
    """What :class:`HeadPersistence` uses of its node manager."""

    @property
    def node_id(self) -> str: ...
    @property
    def config(self) -> Mapping[str, Any]: ...
    @property
    def actors(self) -> Mapping[str, Any]: ...
    @property
    def members(self) -> Membership: ...
    @property
    def is_head(self) -> bool: ...
    @property
    def locator(self) -> ActorLocator: ...
    @property
    def pending(self) -> PendingActorsHost: ...
    @property
    def placement(self) -> PlacementGroups: ...
    @property
    def event_stream(self) -> EventStream: ...


class HeadPersistence:
    """Persistence of the head's state (see the module docstring)."""

    def __init__(self, node: PersistenceNode) -> None:
        self.node = node
        state_dir = node.config.get("state_dir")
        self.store = HeadStore(state_dir) if state_dir and node.is_head else None

    def recover(self) -> None:
        """Take back what a killed head on the same ``state_dir`` left (on start)."""
        store, node = self.store, self.node
        if store is None:
            return
        log = node.event_stream.log
        old_head = store.load("meta").get("head_id")
        now = time.monotonic()
        for node_id, row in store.load("nodes").items():
            if node_id not in (node.node_id, old_head):
                node.members.join(node_id, row["address"], row["total"], now)
            if node_id == old_head:
                store.delete("nodes", node_id)
        node.locator.directory.load(list(store.load("actors").values()))
        for row in store.load("placement_groups").values():
            log.record(row["node_id"], [["P", row]])
        if old_head and old_head != node.node_id:
            node.locator.node_died(old_head)
            log.node_event(old_head, "DEAD", "the head was restarted")
        store.put("meta", "head_id", node.node_id)
        self.node_joined(node.node_id)

    # ------------------------------------------------------------ changes
    def node_joined(self, node_id: str) -> None:
        entry = self.node.members.nodes.get(node_id)
        if self.store is not None and entry is not None:
            self.store.put("nodes", node_id, {"address": entry.address, "total": entry.total})

    def node_dead(self, node_id: str) -> None:
        if self.store is None:
            return
        self.store.delete("nodes", node_id)
        for pg_id, row in self.node.event_stream.log.pgs.items():
            if row["node_id"] == node_id:
                self.store.delete("placement_groups", pg_id)

    def pgs_changed(self, node_id: str, events: list[list[Any]]) -> None:
        """A batch of events from ``node_id`` (its placement group rows are kept)."""
        if self.store is None:
            return
        for ev in events:
            if ev[0] != "P":
                continue
            pg_id = ev[1]["placement_group_id"]
            if ev[1]["state"] == "REMOVED":
                self.store.delete("placement_groups", pg_id)
            else:
                self.store.put("placement_groups", pg_id, {**ev[1], "node_id": node_id})

    def directory_changed(self, entry: DirEntry) -> None:
        if self.store is not None:
            self.store.put("actors", entry.actor_id, entry.row())

    def directory_removed(self, entry: DirEntry) -> None:
        if self.store is not None:
            self.store.delete("actors", entry.actor_id)

    def rejoined(self) -> None:
        """(Node) joined a head again: register what it may not know."""
        node = self.node
        for actor in node.actors.values():
            if actor.state != "DEAD" and tracked(actor.spec):
                node.locator.register(actor.id, actor.spec, lambda ok, value: None)
        node.pending.register_again()
        for pg in node.placement.pgs.values():
            node.event_stream.pg_changed(pg)

    def close(self, clean: bool) -> None:
        if self.store is not None and clean:
            self.store.remove()
