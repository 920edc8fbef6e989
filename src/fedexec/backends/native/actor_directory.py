"""Named actors and actor locations across the cluster, kept by the head. A
component the node manager owns (``NodeManager.locator``, an :class:`ActorLocator`),
driven through :class:`DirectoryNode`, the little of the node it uses (asking the
head, replying to a client, persisting changes). Its state: the head's
:class:`~.directory.ActorDirectory` (pure, filled on the head only) and the
LOCATE_ACTOR answers waiting for a restarting actor to register again.

* A node about to make a *tracked* actor (named, or ``max_restarts`` != 0) here
  registers it at the head first (REGISTER_ACTOR): the head answers the actor
  holding its name, so a name is unique across the cluster whichever node a driver
  or task is connected to. The same actor made again after its node died (by the
  node that created it, see ``Federation._restart_remote_actor``) registers under
  its old id: the head moves its location.
* ``get_actor(name)`` on a node that does not hold the actor asks the head.
* An actor call whose handle names a node that is dead or no longer holds the
  actor asks the head where the actor is now (LOCATE_ACTOR). While its node is dead
  and its creator may make it again, the head waits for the new registration (at
  most ``_LOCATE_WAIT`` s) before answering.
* An actor dead for good is reported (ACTOR_GONE): the head frees its name. A node
  that dies takes its actors that cannot restart with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ...exceptions import ClusterUnreachableError
from .directory import ActorDirectory, DirEntry
from .membership import Membership
from .protocol import Call, Op, encode_error
from .records import _DEFER

__all__ = ["ActorLocator", "DirectoryNode", "Relaying", "tracked"]

_LOCATE_WAIT = 30.0  # s the head waits for a restarting actor to register again


def tracked(spec: dict[str, Any]) -> bool:
    """Does the head record this actor? (Named, or it may restart.)"""
    return spec.get("name") is not None or bool(spec.get("max_restarts"))


def name_taken(spec: dict[str, Any], holder: list[Any]) -> list[Any]:
    """Creating an actor under a name ``holder`` ([actor id, spec]) has: that actor,
    with ``get_if_exists``; else ValueError."""
    if spec.get("get_if_exists"):
        return holder
    raise ValueError(
        f"an actor named {spec.get('name')!r} already exists in namespace "
        f"{spec.get('namespace') or 'default'!r}; use get_actor(), or get_if_exists=True")


class Relaying(Protocol):
    """Asking another node (``Federation.relay``)."""

    def relay(self, peer: Any, call: int, args: list[Any], cid: int | None, req_id: int,
              on_reply: Any = None) -> int: ...


class DirectoryPersistence(Protocol):
    """Where the head keeps the directory's changes (``persistence.HeadPersistence``)."""

    def directory_changed(self, entry: DirEntry) -> None: ...
    def directory_removed(self, entry: DirEntry) -> None: ...


class DirectoryNode(Protocol):
    """What :class:`ActorLocator` uses of the node manager."""

    @property
    def is_head(self) -> bool: ...
    @property
    def head_id(self) -> str | None: ...
    @property
    def node_id(self) -> str: ...
    @property
    def peers(self) -> Mapping[str, Any]: ...
    @property
    def members(self) -> Membership: ...
    @property
    def call_table(self) -> Mapping[int, Callable[..., Any]]: ...
    @property
    def federation(self) -> Relaying: ...
    @property
    def _request_id(self) -> int: ...

    def _send(self, cid: int, msg: list[Any]) -> None: ...

    @property
    def persistence(self) -> DirectoryPersistence: ...


class ActorLocator:
    """The node manager's side of the actor directory (see the module docstring).
    (Changes to the directory are kept by the node's ``persistence``.)"""

    def __init__(self, node: DirectoryNode,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.clock = clock
        self.directory = ActorDirectory()  # filled on the head only
        self.locating: dict[str, list[tuple[float, Callable[[str | None], None]]]] = {}

    def calls(self) -> dict[int, Callable[..., Any]]:
        """Its REQUEST handlers, by call (the node's dispatch table takes them)."""
        return {Call.REGISTER_ACTOR: self.call_register_actor,
                Call.ACTOR_GONE: self.call_actor_gone,
                Call.LOCATE_ACTOR: self.call_locate_actor}

    # ---------------------------------------------------------- node side
    def ask_head(self, call: Call, args: list[Any],
                 done: Callable[[bool, Any], None]) -> None:
        """REQUEST ``call`` of the head; ``done(ok, value)`` with its answer (run
        here at once on the head itself; ok False if it failed or the head is
        not reachable: ``value`` is then an error, see ``protocol.encode_error``)."""
        node = self.node
        if node.is_head:
            try:
                done(True, node.call_table[call](None, *args))
            except Exception as exc:
                done(False, encode_error(exc))
            return
        head = node.peers.get(node.head_id or "")
        if head is None:
            done(False, encode_error(ClusterUnreachableError(
                "this node is not connected to the head (it is joining or rejoining it); "
                "try again shortly")))
            return
        node.federation.relay(head, call, args, None, 0,
                    lambda ok, value: done(ok, value if ok or value is not None else
                                           encode_error(ClusterUnreachableError(
                                               "the head died; try again once it is back"))))

    def register(self, actor_id: str, spec: dict[str, Any],
                 done: Callable[[bool, Any], None]) -> None:
        """Register an actor made here at the head; ``done(ok, [holder id, spec])``."""
        owner = spec.get("owner_node") or self.node.node_id
        self.ask_head(Call.REGISTER_ACTOR, [actor_id, spec, self.node.node_id, owner], done)

    def gone(self, actor_id: str, spec: dict[str, Any]) -> None:
        """An actor is dead for good: the head frees its name."""
        if tracked(spec):
            self.ask_head(Call.ACTOR_GONE, [actor_id], lambda ok, value: None)

    def locate(self, actor_id: str, then: Callable[[str | None], None]) -> None:
        """Ask the head which node ``actor_id`` lives on; ``then(node id or None)``."""
        if self.node.is_head:
            self._locate_here(actor_id, then)
            return
        self.ask_head(Call.LOCATE_ACTOR, [actor_id],
                      lambda ok, value: then(value if ok and isinstance(value, str)
                                             else None))

    def lookup_at_head(self, conn: Any, name: str, namespace: str) -> Any:
        """GET_ACTOR for a name this node does not hold: the head answers (the
        client's REPLY is the head's)."""
        node = self.node
        if node.is_head:
            entry = self.directory.lookup(name, namespace)
            if entry is None:
                raise ValueError(f"no actor named {name!r} in namespace {namespace!r}")
            return [entry.actor_id, entry.spec]
        head = node.peers.get(node.head_id or "")
        if head is None:
            raise ValueError(f"no actor named {name!r} in namespace {namespace!r} on this "
                             "node, and the head is not reachable to ask (try again)")
        node.federation.relay(head, Call.GET_ACTOR, [name, namespace], conn.id, node._request_id)
        return _DEFER

    # ---------------------------------------------------------- head side
    def call_register_actor(self, conn: Any, actor_id: str, spec: dict[str, Any],
                            node_id: str, owner_node: str) -> list[Any]:
        """REGISTER_ACTOR (head): [holder's id, holder's spec] (the actor's own when it
        got the name or moved)."""
        if not self.node.is_head:
            raise ValueError("REGISTER_ACTOR goes to the head")
        entry = self.directory.register(actor_id, spec, node_id, owner_node)
        if entry.actor_id == actor_id:
            self.node.persistence.directory_changed(entry)
            for _, then in self.locating.pop(actor_id, []):
                then(node_id)
        return [entry.actor_id, entry.spec]

    def call_actor_gone(self, conn: Any, actor_id: str) -> bool:
        """ACTOR_GONE (head): forget a dead actor, freeing its name."""
        entry = self.directory.remove(actor_id)
        if entry is not None:
            self.node.persistence.directory_removed(entry)
        for _, then in self.locating.pop(actor_id, []):
            then(None)
        return entry is not None

    def call_locate_actor(self, conn: Any, actor_id: str) -> Any:
        """LOCATE_ACTOR (head): the node the actor lives on, or None (unknown or dead);
        for one restarting, the answer waits for its new registration."""
        node = self.node
        cid, req = conn.id, node._request_id
        answered: list[Any] = []

        def then(node_id: str | None) -> None:
            if answered:
                node._send(cid, [Op.REPLY, req, True, node_id])
            else:
                answered.append(node_id)

        self._locate_here(actor_id, then)
        if answered:
            return answered[0]
        answered.append(None)  # from now on, then() sends the reply
        return _DEFER

    def _locate_here(self, actor_id: str, then: Callable[[str | None], None]) -> None:
        entry = self.directory.entries.get(actor_id)
        if entry is None:
            then(None)
        elif entry.state == "RESTARTING":
            self.locating.setdefault(actor_id, []).append(
                (self.clock() + _LOCATE_WAIT, then))
        else:
            then(entry.node_id)

    def expire_locates(self, now: float) -> None:
        """Answer None to the locates that waited too long for a restart."""
        for actor_id in list(self.locating):
            waits = self.locating[actor_id]
            due = [w for w in waits if w[0] <= now]
            if not due:
                continue
            self.locating[actor_id] = [w for w in waits if w[0] > now]
            if not self.locating[actor_id]:
                del self.locating[actor_id]
            for _, then in due:
                then(None)

    def node_died(self, node_id: str) -> None:
        """(Head) a node died: its actors restart elsewhere or are gone."""
        restarting, removed = self.directory.node_died(node_id, self.node.members.is_alive)
        for actor_id in restarting:
            self.node.persistence.directory_changed(self.directory.entries[actor_id])
        for actor_id in removed:
            self.node.persistence.directory_removed(DirEntry(actor_id, {}, node_id, node_id))
            for _, then in self.locating.pop(actor_id, []):
                then(None)
