"""An actor on another node that becomes unreachable, as the caller sees it.

* The link to the actor's node breaks (its process is SIGKILLed) before the head
  declares the node dead: the call in flight fails at once with
  ActorUnavailableError; a call made then waits for the outcome — the actor
  restarted elsewhere (max_restarts) runs it, else it raises ActorDiedError.
* The link breaks but the node lives (the connection is reset with ``ss -K``; the
  test is skipped where that is not allowed): the call in flight fails with
  ActorUnavailableError (it did run), later calls reach the same actor.
* The node goes silent with its link up (SIGSTOP: a partition): calls wait. Back
  before ``heartbeat_timeout``, they all run; silent for longer, the node is
  declared dead: the calls it had raise ActorDiedError and the actor restarts
  elsewhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import psutil
import pytest

import fedexec
from _backend_support import poll_until
from fedexec.exceptions import ActorDiedError, ActorUnavailableError
from fedexec.options import NodeAffinity
from fedexec.testing import Cluster

pytestmark = pytest.mark.timeout(180)

T = 60


class Sleeper:
    def __init__(self):
        self.calls = 0

    def where(self):
        return fedexec.get_runtime_context().node_id

    def nap(self, seconds, marker):
        open(marker, "w").close()
        time.sleep(seconds)
        return self.count()

    def count(self):
        self.calls += 1
        return self.calls




def alive(ex, node_id: str) -> bool:
    return any(n["node_id"] == node_id and n["alive"] for n in ex.nodes())


def two_nodes(cluster):
    """Node ``a`` (where the actors start) and ``b`` (where one may restart)."""
    a = cluster.add_node(num_cpus=1, resources={"spot": 1, "only_a": 1})
    b = cluster.add_node(num_cpus=1, resources={"spot": 1})
    return a, b


def start_on(ex, node, max_restarts: int, **resources):
    return ex.options(num_cpus=0, resources=resources, max_restarts=max_restarts,
                      scheduling_strategy=NodeAffinity(node.node_id, soft=True)
                      ).actor(Sleeper)


def test_a_broken_link_fails_calls_in_flight_with_actor_unavailable_and_later_ones_wait(
        tmp_path):
    # A long heartbeat timeout: the node is known dead only well after its link broke.
    with Cluster(head_num_cpus=1, heartbeat_timeout=8.0) as cluster:
        a, b = two_nodes(cluster)
        with cluster.connect() as ex:
            keeper = start_on(ex, a, max_restarts=1, spot=1)
            doomed = start_on(ex, a, max_restarts=0, only_a=0.5)
            assert keeper.where.remote().result(timeout=T) == a.node_id
            assert doomed.where.remote().result(timeout=T) == a.node_id
            running = [str(tmp_path / "keeper"), str(tmp_path / "doomed")]
            flights = [keeper.nap.remote(60, running[0]), doomed.nap.remote(60, running[1])]
            assert poll_until(lambda: all(os.path.exists(m) for m in running))

            os.kill(a.pid, signal.SIGKILL)
            for ref in flights:
                with pytest.raises(ActorUnavailableError) as info:
                    ref.result(timeout=T)
                assert not isinstance(info.value, ActorDiedError)
                text = str(info.value)
                assert a.node_id in text and "may or may not have run" in text
            assert alive(ex, a.node_id)  # it came from the broken link, not a death

            # Made now, they wait until the node is declared dead: then the keeper
            # runs them restarted on b (a fresh instance), the doomed one is dead.
            where, count = keeper.where.remote(), keeper.count.remote()
            lost = doomed.count.remote()
            assert where.result(timeout=T) == b.node_id
            assert count.result(timeout=T) == 1
            with pytest.raises(ActorDiedError):
                lost.result(timeout=T)
            assert not alive(ex, a.node_id)
            cluster.remove_node(a)


def break_links(a_pid: int, head_pid: int) -> None:
    """Reset every TCP connection between two processes (``ss -K``), or skip."""
    head_ends = {c.laddr for c in psutil.Process(head_pid).net_connections("tcp")}
    links = [c for c in psutil.Process(a_pid).net_connections("tcp")
             if c.raddr and c.raddr in head_ends]
    assert links, "the node has no connection to the head"
    if shutil.which("ss") is None:
        pytest.skip("needs ss(8) to reset a connection")
    for c in links:
        done = subprocess.run(["ss", "-K", "src", c.laddr.ip, "sport", "=", str(c.laddr.port),
                               "dst", c.raddr.ip, "dport", "=", str(c.raddr.port)],
                              capture_output=True, text=True)
        if done.returncode != 0 or f":{c.laddr.port}" not in done.stdout:
            pytest.skip(f"ss -K cannot reset connections here: {done.stderr.strip()}")


def test_a_link_that_breaks_and_comes_back_fails_the_call_in_flight_only(tmp_path):
    with Cluster(head_num_cpus=1, heartbeat_timeout=8.0) as cluster:
        a, _ = two_nodes(cluster)
        with cluster.connect() as ex:
            actor = start_on(ex, a, max_restarts=0, only_a=0.5)
            assert actor.where.remote().result(timeout=T) == a.node_id
            marker = str(tmp_path / "running")
            flight = actor.nap.remote(2.0, marker)
            assert poll_until(lambda: os.path.exists(marker))
            break_links(a.pid, cluster.head.pid)
            with pytest.raises(ActorUnavailableError, match="may or may not have run"):
                flight.result(timeout=T)
            # The node lives on and the link comes back: later calls reach the same
            # actor, which did run the call whose answer was lost.
            assert actor.count.remote().result(timeout=T) == 2
            assert actor.where.remote().result(timeout=T) == a.node_id
            assert alive(ex, a.node_id) and a.alive()


def test_a_node_silent_for_less_than_the_heartbeat_timeout_delays_calls_and_loses_none(
        tmp_path):
    with Cluster(head_num_cpus=1, heartbeat_timeout=8.0) as cluster:
        a, _ = two_nodes(cluster)
        with cluster.connect() as ex:
            actor = start_on(ex, a, max_restarts=0, only_a=0.5)
            assert actor.where.remote().result(timeout=T) == a.node_id
            marker = str(tmp_path / "running")
            flight = actor.nap.remote(1.0, marker)
            assert poll_until(lambda: os.path.exists(marker))
            os.kill(a.pid, signal.SIGSTOP)
            try:
                later = actor.count.remote()
                time.sleep(1.5)
                assert not later.done()  # a stopped node answers nothing
            finally:
                os.kill(a.pid, signal.SIGCONT)
            assert flight.result(timeout=T) == 1
            assert later.result(timeout=T) == 2
            assert actor.count.remote().result(timeout=T) == 3
            assert alive(ex, a.node_id)


def test_a_node_silent_past_the_heartbeat_timeout_is_declared_dead(tmp_path):
    with Cluster(head_num_cpus=1, heartbeat_timeout=2.0) as cluster:
        a, b = two_nodes(cluster)
        with cluster.connect() as ex:
            actor = start_on(ex, a, max_restarts=1, spot=1)
            assert actor.where.remote().result(timeout=T) == a.node_id
            marker = str(tmp_path / "running")
            flight = actor.nap.remote(60, marker)
            assert poll_until(lambda: os.path.exists(marker))
            os.kill(a.pid, signal.SIGSTOP)
            try:
                with pytest.raises(ActorDiedError):  # it had reached the node
                    flight.result(timeout=T)
                assert not alive(ex, a.node_id)
                assert actor.where.remote().result(timeout=T) == b.node_id
                assert actor.count.remote().result(timeout=T) == 1
            finally:
                os.kill(a.pid, signal.SIGCONT)
            cluster.remove_node(a)
