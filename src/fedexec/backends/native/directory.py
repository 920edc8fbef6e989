"""The head's cluster-wide actor directory: pure state, no I/O (the node manager
does the messaging, see ``actor_directory.py``), so it is tested alone.

It records every named actor, and every actor that may restart, with the node it
lives on. Names are unique per namespace across the cluster: ``register`` answers
the actor already holding a name instead of taking it. An actor whose node died
is *restarting* while its creator may make it again elsewhere (its
``max_restarts`` allows and its owner node is alive); its name stays taken until it
registers again (same actor id: the location moves) or is reported gone. An actor
that waited for a node (see ``pending_actors.py``) registers where it waited, then
again where it is placed: that move is not a restart.

Entry (what :meth:`ActorDirectory.rows` gives, and what the head persists)::

    {"actor_id", "name", "namespace", "node_id", "owner_node", "state",
     "restarts", "spec"}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ActorDirectory", "DirEntry"]


class DirEntry:
    """One actor as the head knows it."""

    __slots__ = ("actor_id", "name", "namespace", "node_id", "owner_node", "restarts",
                 "spec", "state")

    def __init__(self, actor_id: str, spec: dict[str, Any], node_id: str, owner_node: str):
        self.actor_id = actor_id
        self.spec = spec
        self.name: str | None = spec.get("name")
        self.namespace: str = spec.get("namespace") or "default"
        self.node_id = node_id
        self.owner_node = owner_node
        self.state = "ALIVE"
        self.restarts = 0

    def may_restart(self) -> bool:
        limit = int(self.spec.get("max_restarts") or 0)
        return limit == -1 or self.restarts < limit

    def row(self) -> dict[str, Any]:
        return {"actor_id": self.actor_id, "name": self.name, "namespace": self.namespace,
                "node_id": self.node_id, "owner_node": self.owner_node, "state": self.state,
                "restarts": self.restarts, "spec": self.spec}


class ActorDirectory:
    """Named and restartable actors of the cluster (see the module docstring)."""

    def __init__(self) -> None:
        self.entries: dict[str, DirEntry] = {}
        self.names: dict[tuple[str, str], str] = {}

    def register(self, actor_id: str, spec: dict[str, Any], node_id: str,
                 owner_node: str) -> DirEntry:
        """Record that ``actor_id`` lives on ``node_id`` (a new actor, or one made
        again after its node died). Returns the entry now holding the actor's name:
        another actor's (the name is taken; nothing changed) or its own."""
        name = spec.get("name")
        namespace = spec.get("namespace") or "default"
        if name is not None:
            holder = self.names.get((namespace, name))
            if holder is not None and holder != actor_id and holder in self.entries:
                return self.entries[holder]
        entry = self.entries.get(actor_id)
        if entry is None:
            entry = self.entries[actor_id] = DirEntry(actor_id, spec, node_id, owner_node)
        else:
            moved = entry.node_id != node_id and not spec.get("await_node")
            if entry.state == "RESTARTING" or moved:  # (a pending actor placed: no restart)
                entry.restarts += 1
            entry.spec, entry.node_id, entry.state = spec, node_id, "ALIVE"
        if name is not None:
            self.names[(namespace, name)] = actor_id
        return entry

    def remove(self, actor_id: str) -> DirEntry | None:
        """The actor is dead for good: forget it, freeing its name."""
        entry = self.entries.pop(actor_id, None)
        if entry is not None and entry.name is not None and \
                self.names.get((entry.namespace, entry.name)) == actor_id:
            del self.names[(entry.namespace, entry.name)]
        return entry

    def node_died(self, node_id: str, alive: Callable[[str], bool]) -> tuple[list[str],
                                                                              list[str]]:
        """``node_id`` died: its actors that may be made again elsewhere become
        RESTARTING, the others are removed. Returns (restarting ids, removed ids)."""
        restarting, removed = [], []
        for entry in [e for e in self.entries.values() if e.node_id == node_id]:
            if entry.may_restart() and entry.owner_node != node_id and \
                    alive(entry.owner_node):
                entry.state = "RESTARTING"
                restarting.append(entry.actor_id)
            else:
                self.remove(entry.actor_id)
                removed.append(entry.actor_id)
        # Actors restarting on behalf of an owner that died now will not come back.
        for entry in [e for e in self.entries.values()
                      if e.state == "RESTARTING" and e.owner_node == node_id]:
            self.remove(entry.actor_id)
            removed.append(entry.actor_id)
        return restarting, removed

    def lookup(self, name: str, namespace: str) -> DirEntry | None:
        actor_id = self.names.get((namespace, name))
        return None if actor_id is None else self.entries.get(actor_id)

    def rows(self) -> list[dict[str, Any]]:
        return [e.row() for e in self.entries.values()]

    def load(self, rows: list[dict[str, Any]]) -> None:
        """Take back rows saved by a previous head (see ``rows``)."""
        for row in rows:
            entry = DirEntry(row["actor_id"], row["spec"], row["node_id"], row["owner_node"])
            entry.state, entry.restarts = row["state"], int(row["restarts"])
            self.entries[entry.actor_id] = entry
            if entry.name is not None:
                self.names[(entry.namespace, entry.name)] = entry.actor_id
