"""The head's cluster-wide actor directory, across node processes on loopback: a named
actor is found from a driver or task on any node, names are unique cluster-wide,
handles held anywhere reach an actor restarted after its worker or its node was
SIGKILLed, and a name is freed when its actor dies for good."""

from __future__ import annotations

import os
import signal

import pytest

import fedexec
from _backend_support import Counter, poll_until
from fedexec.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError
from fedexec.options import NodeAffinity
from fedexec.testing import Cluster

pytestmark = pytest.mark.timeout(180)

T = 60


def add_by_name(name, k):
    """A task that looks an actor up by name (from the node it runs on)."""
    return fedexec.get(fedexec.get_actor(name).add.remote(k), timeout=30)


def where_of(handle):
    try:
        return handle.where.remote().result(timeout=10)
    except (ActorDiedError, ActorUnavailableError, GetTimeoutError):
        return None


def named(ex, name):
    """The actor's node, or None if the name is not known."""
    try:
        return where_of(ex.get_actor(name))
    except ValueError:
        return None


def connect(cluster, node):
    return fedexec.Executor(address=node.address, token=cluster.token)


@pytest.fixture
def cluster():
    with Cluster(head_num_cpus=1) as c:
        yield c


def test_a_named_actor_is_found_from_drivers_and_tasks_on_every_node(cluster):
    a = cluster.add_node(num_cpus=1, resources={"a": 1})
    b = cluster.add_node(num_cpus=1, resources={"b": 1})
    with connect(cluster, a) as ex_a:
        svc = ex_a.options(name="svc", num_cpus=0, resources={"a": 0.1}).actor(Counter, 10)
        assert svc.where.remote().result(timeout=T) == a.node_id
        with connect(cluster, b) as ex_b:  # a driver on another node
            assert ex_b.get_actor("svc").add.remote(1).result(timeout=T) == 11
        with cluster.connect() as ex_h:  # a driver on the head
            assert ex_h.get_actor("svc").add.remote(1).result(timeout=T) == 12
            # A task on node b looks it up by name.
            assert ex_h.options(resources={"b": 1}).submit(add_by_name, "svc", 5).result(
                timeout=T) == 17
            with pytest.raises(ValueError, match="no actor named 'nobody'"):
                ex_h.get_actor("nobody")


def test_names_are_unique_across_the_cluster(cluster):
    a = cluster.add_node(num_cpus=1, resources={"a": 1})
    b = cluster.add_node(num_cpus=1, resources={"b": 1})
    with connect(cluster, a) as ex_a, connect(cluster, b) as ex_b:
        ex_a.options(name="one", num_cpus=0, resources={"a": 0.1}).actor(Counter, 1)
        with pytest.raises(ValueError, match="already exists"):
            ex_b.options(name="one", num_cpus=0, resources={"b": 0.1}).actor(Counter)
        same = ex_b.options(name="one", num_cpus=0, resources={"b": 0.1},
                            get_if_exists=True).actor(Counter)
        assert same.where.remote().result(timeout=T) == a.node_id
        assert same.add.remote(1).result(timeout=T) == 2
        # Another namespace is another name.
        other = ex_b.options(name="one", namespace="elsewhere", num_cpus=0,
                             resources={"b": 0.1}).actor(Counter)
        assert other.where.remote().result(timeout=T) == b.node_id


def test_a_restarted_actor_keeps_its_name_and_a_dead_one_frees_it(cluster):
    a = cluster.add_node(num_cpus=1, resources={"a": 1})
    b = cluster.add_node(num_cpus=1, resources={"b": 1})
    with connect(cluster, a) as ex_a, connect(cluster, b) as ex_b:
        ex_a.options(name="phoenix", num_cpus=0, resources={"a": 0.1},
                     max_restarts=1).actor(Counter, 100)
        far = ex_b.get_actor("phoenix")  # a handle held on node b
        first = far.pid.remote().result(timeout=T)
        os.kill(first, signal.SIGKILL)  # the actor's worker, on node a
        assert poll_until(lambda: where_of(far) == a.node_id, timeout=30)
        assert far.pid.remote().result(timeout=T) != first
        assert far.add.remote(1).result(timeout=T) == 101  # __init__ ran again
        assert named(ex_b, "phoenix") == a.node_id
        # Killed again: no restarts left, so it is dead for good and its name is free.
        os.kill(far.pid.remote().result(timeout=T), signal.SIGKILL)
        assert poll_until(lambda: named(ex_b, "phoenix") is None, timeout=30)
        with pytest.raises(ActorDiedError):
            far.add.remote(1).result(timeout=T)
        again = ex_b.options(name="phoenix", num_cpus=0, resources={"b": 0.1}).actor(Counter)
        assert again.where.remote().result(timeout=T) == b.node_id


@pytest.mark.parametrize("creator", ["head", "node"])
def test_handles_anywhere_reach_an_actor_restarted_after_its_node_was_killed(cluster,
                                                                             creator):
    a = cluster.add_node(num_cpus=1, resources={"special": 1})
    b = cluster.add_node(num_cpus=1, resources={"special": 1})
    c = cluster.add_node(num_cpus=1, resources={"c": 1})
    # The actor's creator (which makes it again) is a driver on the head or on node c;
    # the handle is held by a driver on the other one.
    with cluster.connect() as ex_h, connect(cluster, c) as ex_c:
        maker, holder = (ex_h, ex_c) if creator == "head" else (ex_c, ex_h)
        maker.options(name="keeper", resources={"special": 1}, max_restarts=1,
                      scheduling_strategy=NodeAffinity(a.node_id, soft=True)).actor(Counter, 7)
        maker.options(name="doomed", num_cpus=0, max_restarts=0,
                      scheduling_strategy=NodeAffinity(a.node_id)).actor(Counter)
        held = holder.get_actor("keeper")
        assert held.where.remote().result(timeout=T) == a.node_id
        assert named(holder, "doomed") == a.node_id
        cluster.remove_node(a)  # SIGKILL the node holding both
        assert poll_until(lambda: where_of(held) == b.node_id, timeout=60)
        assert held.add.remote(1).result(timeout=T) == 8  # __init__ ran again, on b
        assert named(holder, "keeper") == b.node_id
        # Killing it through the old handle (it names node a) reaches it on b.
        holder.kill(held)
        assert poll_until(lambda: named(holder, "keeper") is None, timeout=30)
        with pytest.raises(ActorDiedError):
            held.add.remote(1).result(timeout=T)
        # The actor that could not restart is gone, and its name with it.
        assert poll_until(lambda: named(holder, "doomed") is None, timeout=30)
        reborn = holder.options(name="doomed", num_cpus=0,
                                scheduling_strategy=NodeAffinity(c.node_id)).actor(Counter)
        assert reborn.where.remote().result(timeout=T) == c.node_id
