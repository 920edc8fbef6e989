"""The head's state kept on its disk and taken back after a restart. A mixin of
:class:`~.node.NodeManager` (the file: :class:`~.headstore.HeadStore`).

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
from typing import Any

from .actor_directory import tracked
from .directory import DirEntry
from .headstore import HeadStore

__all__ = ["HeadPersistence"]


class HeadPersistence:
    """Persistence of the head's state (see the module docstring)."""

    def _init_persistence(self: Any) -> None:
        state_dir = self.config.get("state_dir")
        self.head_store = HeadStore(state_dir) if state_dir and self.is_head else None

    def _recover(self: Any) -> None:
        """Take back what a killed head on the same ``state_dir`` left (on start)."""
        store = self.head_store
        if store is None:
            return
        old_head = store.load("meta").get("head_id")
        now = time.monotonic()
        for node_id, row in store.load("nodes").items():
            if node_id not in (self.node_id, old_head):
                self.members.join(node_id, row["address"], row["total"], now)
            if node_id == old_head:
                store.delete("nodes", node_id)
        self.locator.directory.load(list(store.load("actors").values()))
        for row in store.load("placement_groups").values():
            self.event_log.record(row["node_id"], [["P", row]])
        if old_head and old_head != self.node_id:
            self.locator.node_died(old_head)
            self.event_log.node_event(old_head, "DEAD", "the head was restarted")
        store.put("meta", "head_id", self.node_id)
        self._persist_node(self.node_id)

    # ------------------------------------------------------------ changes
    def _persist_node(self: Any, node_id: str) -> None:
        entry = self.members.nodes.get(node_id)
        if self.head_store is not None and entry is not None:
            self.head_store.put("nodes", node_id, {"address": entry.address,
                                                   "total": entry.total})

    def _persist_node_dead(self: Any, node_id: str) -> None:
        if self.head_store is None:
            return
        self.head_store.delete("nodes", node_id)
        for pg_id, row in self.event_log.pgs.items():
            if row["node_id"] == node_id:
                self.head_store.delete("placement_groups", pg_id)

    def _persist_pgs(self: Any, node_id: str, events: list[list[Any]]) -> None:
        if self.head_store is None:
            return
        for ev in events:
            if ev[0] != "P":
                continue
            pg_id = ev[1]["placement_group_id"]
            if ev[1]["state"] == "REMOVED":
                self.head_store.delete("placement_groups", pg_id)
            else:
                self.head_store.put("placement_groups", pg_id, {**ev[1], "node_id": node_id})

    def _directory_changed(self: Any, entry: DirEntry) -> None:
        if self.head_store is not None:
            self.head_store.put("actors", entry.actor_id, entry.row())

    def _directory_removed(self: Any, entry: DirEntry) -> None:
        if self.head_store is not None:
            self.head_store.delete("actors", entry.actor_id)

    def _rejoined(self: Any) -> None:
        """(Node) joined a head again: register what it may not know."""
        for actor in self.actors.values():
            if actor.state != "DEAD" and tracked(actor.spec):
                self.locator.register(actor.id, actor.spec, lambda ok, value: None)
        self.pending.register_again()
        for pg in self.placement.pgs.values():
            self._event_pg(pg)

    def _close_persistence(self: Any, clean: bool) -> None:
        if self.head_store is not None and clean:
            self.head_store.remove()
