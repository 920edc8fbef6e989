"""A head killed (SIGKILL) and started again on the same state directory and port:
it takes back its node table, named actors and placement groups from its sqlite
file; the other nodes rejoin without losing their running work, and a named actor on
a non-head node is found by name again. A cleanly stopped head leaves no state."""

from __future__ import annotations

import os

import pytest

import fedexec
from _backend_support import Counter, poll_until
from fedexec.backends.native import state
from fedexec.backends.native.headstore import FILE_NAME

pytestmark = pytest.mark.timeout(240)

T = 60


def sleep_then_node(seconds):
    import time

    time.sleep(seconds)
    return fedexec.get_runtime_context().node_id


def _launcher(token, state_dir):
    from fedexec.backends.native.runtime import NodeProcess
    from fedexec.config import RuntimeConfig

    def launch(state=False, **kw):
        opts = {"heartbeat_interval": 0.2, "heartbeat_timeout": 5.0}
        if state:
            opts["state_dir"] = str(state_dir)
        config = RuntimeConfig.make(num_cpus=1, token=token, backend_options=opts,
                                    resources=kw.pop("resources", None))
        return NodeProcess.launch(config, embedded=False, owner_pid=os.getpid(), **kw)

    return launch


def _stop(*procs):
    for proc in procs:
        proc.proc.terminate()
        proc.stop()


def test_a_restarted_head_recovers_named_actors_and_nodes_keep_their_work(tmp_path):
    token = os.urandom(32).hex()
    launch = _launcher(token, tmp_path / "state")
    head = launch(state=True, tcp=("127.0.0.1", 0))
    address = head.info["address"]
    a = launch(tcp=("127.0.0.1", 0), head_address=address, resources={"a": 1})
    b = launch(tcp=("127.0.0.1", 0), head_address=address, resources={"b": 1})
    a_id, b_id = a.info["node_id"], b.info["node_id"]
    try:
        with fedexec.Executor(address=a.info["address"], token=token) as ex_a, \
                fedexec.Executor(address=b.info["address"], token=token) as ex_b:
            # Each node learns of the other from the head a moment apart: wait until
            # both do (a's driver is refused a 'b' task until node a knows node b).
            assert poll_until(lambda: all({a_id, b_id} <= {
                n["node_id"] for n in ex.nodes() if n["alive"]} for ex in (ex_a, ex_b)),
                timeout=30)
            svc = ex_a.options(name="svc", num_cpus=0, resources={"a": 0.1}).actor(Counter, 10)
            assert svc.add.remote(1).result(timeout=T) == 11
            with fedexec.Executor(address=address, token=token) as ex_h:
                on_head = ex_h.options(name="onhead", num_cpus=0,
                                       scheduling_strategy=fedexec.options.NodeAffinity(
                                           head.info["node_id"])).actor(Counter)
                assert on_head.where.remote().result(timeout=T) == head.info["node_id"]
                assert ex_h.get_actor("svc").add.remote(1).result(timeout=T) == 12
            # Node a's task runs on node b across the restart (no retries: were b
            # declared dead meanwhile, it would fail).
            running = ex_a.options(resources={"b": 1}, max_retries=0).submit(
                sleep_then_node, 4.0)
            assert os.path.exists(tmp_path / "state" / FILE_NAME)

            head.proc.kill()  # SIGKILL
            head.stop()
            host, port = address.rsplit(":", 1)
            head = launch(state=True, tcp=(host, int(port)))

            # Work running on node b for node a across the restart finishes there.
            assert running.result(timeout=T) == b_id
            with fedexec.Executor(address=address, token=token) as ex_h:
                # Both nodes rejoined (none was declared dead by the other's rejoin).
                assert poll_until(lambda: {a_id, b_id} <= {
                    n["node_id"] for n in ex_h.nodes() if n["alive"]}, timeout=30)
                # The named actor on node a kept its state, found by name via the head.
                assert ex_h.get_actor("svc").add.remote(1).result(timeout=T) == 13
                assert ex_b.get_actor("svc").add.remote(1).result(timeout=T) == 14
                assert svc.add.remote(1).result(timeout=T) == 15
                # The actor that lived on the killed head is gone, and its name free.
                with pytest.raises(ValueError, match="no actor named 'onhead'"):
                    ex_h.get_actor("onhead")
                fresh = ex_h.options(name="onhead", num_cpus=0,
                                     resources={"b": 0.1}).actor(Counter)
                assert fresh.where.remote().result(timeout=T) == b_id
                # Names stay unique after the restart.
                with pytest.raises(ValueError, match="already exists"):
                    ex_h.options(name="svc", num_cpus=0, resources={"b": 0.1}).actor(Counter)
                rows = state.list_state("nodes", address, token)
                assert {r["node_id"] for r in rows if r["alive"]} >= {a_id, b_id}
    finally:
        _stop(a, b, head)
    # A head that stops cleanly removes its state: a new cluster starts empty.
    assert not os.path.exists(tmp_path / "state" / FILE_NAME)


def _head_and_two_nodes(launch):
    """A head and nodes a (resource "a") and b ("b"), b seen alive from a."""
    head = launch(tcp=("127.0.0.1", 0))
    address = head.info["address"]
    a = launch(tcp=("127.0.0.1", 0), head_address=address, resources={"a": 1})
    b = launch(tcp=("127.0.0.1", 0), head_address=address, resources={"b": 1})
    return head, a, b


def _alive_from(ex, *node_ids):
    return poll_until(lambda: set(node_ids) <= {
        n["node_id"] for n in ex.nodes() if n["alive"]}, timeout=30)


@pytest.mark.parametrize("b_dies_too", [False, True], ids=["b-rejoins", "b-dies-with-the-head"])
def test_a_head_restarted_without_state_keeps_the_nodes_that_rejoin_it(tmp_path, b_dies_too):
    """A head restarted with no state directory knows only the nodes that have rejoined
    it so far; a node rejoining first must not take the others for dead (and drop the
    work they run for it). A node killed with the head, so never seen by its
    replacement, is dead for the others once the heartbeat timeout has passed: its
    work fails over, it does not wait forever."""
    token = os.urandom(32).hex()
    launch = _launcher(token, tmp_path / "state")
    head, a, b = _head_and_two_nodes(launch)
    address = head.info["address"]
    a_id, b_id = a.info["node_id"], b.info["node_id"]
    try:
        with fedexec.Executor(address=a.info["address"], token=token) as ex_a:
            assert _alive_from(ex_a, a_id, b_id)
            running = ex_a.options(resources={"b": 1}, max_retries=0).submit(
                sleep_then_node, 60.0 if b_dies_too else 4.0)
            assert poll_until(lambda: running.running(), timeout=30)
            for proc in (head, b) if b_dies_too else (head,):
                proc.proc.kill()  # SIGKILL
                proc.stop()
            host, port = address.rsplit(":", 1)
            head = launch(tcp=(host, int(port)))
            if b_dies_too:
                with pytest.raises(fedexec.exceptions.NodeDiedError, match=b_id):
                    running.result(timeout=T)
                assert poll_until(lambda: b_id not in {
                    n["node_id"] for n in ex_a.nodes() if n["alive"]}, timeout=30)
                return
            assert running.result(timeout=T) == b_id
            assert _alive_from(ex_a, a_id, b_id)
            again = ex_a.options(resources={"b": 1}, max_retries=0).submit(sleep_then_node, 0)
            assert again.result(timeout=T) == b_id
    finally:
        _stop(a, b, head)


def test_a_node_keeps_working_while_its_head_address_hangs(tmp_path):
    """Rejoining does not block the node: with the head gone and its address taken by
    a listener that never answers (a hung or half-dead host), a node's own tasks keep
    running at full speed, and it joins a real head there once one is back."""
    import socket
    import time

    token = os.urandom(32).hex()
    launch = _launcher(token, tmp_path / "state")
    head = launch(tcp=("127.0.0.1", 0))
    address = head.info["address"]
    host, port = address.rsplit(":", 1)
    a = launch(tcp=("127.0.0.1", 0), head_address=address, resources={"a": 1})
    a_id = a.info["node_id"]
    hung = None
    try:
        with fedexec.Executor(address=a.info["address"], token=token) as ex_a:
            assert ex_a.submit(sleep_then_node, 0).result(timeout=T) == a_id
            head.proc.kill()  # SIGKILL
            head.stop()
            hung = socket.create_server((host, int(port)), backlog=64)  # never accepts
            time.sleep(1.0)  # the node has found its link gone and dials the address
            start = time.monotonic()
            for _ in range(20):
                assert ex_a.submit(sleep_then_node, 0).result(timeout=T) == a_id
            # Blocking joins stalled the node ~2 s of every 2.5 s (about 20 s here).
            assert time.monotonic() - start < 10.0
            hung.close()
            head = launch(tcp=(host, int(port)))
            with fedexec.Executor(address=address, token=token) as ex_h:
                assert poll_until(lambda: a_id in {
                    n["node_id"] for n in ex_h.nodes() if n["alive"]}, timeout=30)
    finally:
        if hung is not None:
            hung.close()
        _stop(a, head)


@pytest.mark.parametrize("kept", [True, False], ids=["state_dir", "no_state"])
def test_an_actor_pending_on_a_node_survives_a_head_restart(tmp_path, kept):
    """A named actor waiting on node a for a node the autoscaler may launch (see
    pending_actors.py), with a call queued: the head is SIGKILLed and started
    again (with its ``state_dir``, or without: then node a registers its actors
    again when it rejoins). The actor is still found by name through the head,
    still reported as demand (the monitor plans a node for it), and once a node
    that fits joins it is made there and answers the call made before the
    restart."""
    from _backend_support import Recorder
    from fedexec.autoscaler import ClusterConfig, NodeTypeConfig
    from fedexec.autoscaler.monitor import Monitor
    from fedexec.autoscaler.providers import LocalProvider

    types = {"head": NodeTypeConfig("head", {"CPU": 1}, 0, 0),
             "custom": NodeTypeConfig("custom", {"CPU": 1, "custom": 1}, 0, 1)}
    cfg = ClusterConfig(node_types=types, head_node_type="head", max_workers=1,
                        idle_timeout_minutes=5.0, upscaling_speed=1.0)
    token = os.urandom(32).hex()
    launch = _launcher(token, tmp_path / "state")
    head = launch(state=True, tcp=("127.0.0.1", 0))
    address = head.info["address"]
    a = launch(tcp=("127.0.0.1", 0), head_address=address)
    procs = [a]
    # The monitor's nodes never join (a head address where nothing listens).
    provider = LocalProvider("pending-restart", "127.0.0.1:1", token,
                             state_dir=str(tmp_path / "provider"))

    def monitor_round() -> list[str]:
        monitor = Monitor(cfg, provider, address, token, backoff_base=600.0)
        try:
            return monitor.step().reasons()
        finally:
            monitor.close()

    def pending_ids() -> list[str]:
        status = state.cluster_status(address, token)
        return [r["actor_id"] for n in status["nodes"] for r in n.get("pending_actors", [])]

    ex_a = fedexec.Executor(address=a.info["address"], token=token)
    try:
        assert poll_until(lambda: sum(n["alive"] for n in ex_a.nodes()) == 2, timeout=30)
        monitor_round()  # tells the cluster the node types it may launch
        actor = ex_a.options(name="waiter", resources={"custom": 1}).actor(Recorder)
        call = actor.add.remote(1)
        assert pending_ids() == [actor.actor_id]

        head.proc.kill()  # SIGKILL
        head.stop()
        host, port = address.rsplit(":", 1)
        head = launch(state=kept, tcp=(host, int(port)))
        with fedexec.Executor(address=address, token=token) as ex_h:
            assert poll_until(lambda: a.info["node_id"] in {
                n["node_id"] for n in ex_h.nodes() if n["alive"]}, timeout=30)
            # (node a may not answer the new head's first questions at once)
            assert poll_until(lambda: pending_ids() == [actor.actor_id], timeout=T)
            assert poll_until(lambda: found(ex_h, "waiter") == actor.actor_id, timeout=T)
            assert any("for 1 pending {CPU: 1, custom: 1} actor" in line
                       for line in monitor_round())
            node = launch(tcp=("127.0.0.1", 0), head_address=address,
                          resources={"custom": 1})
            procs.append(node)
            assert call.result(timeout=T) == [1]
            assert actor.node.remote().result(timeout=T) == node.info["node_id"]
            assert ex_h.get_actor("waiter").add.remote(2).result(timeout=T) == [1, 2]
            assert pending_ids() == []
    finally:
        ex_a.shutdown(wait=False, cancel_futures=True)
        provider.wait_launches(60)
        for pid in provider.non_terminated_nodes():
            provider.terminate_node(pid)
        _stop(*procs, head)


def found(ex, name: str) -> str | None:
    """The id of the actor named ``name``, or None."""
    try:
        return ex.get_actor(name).actor_id
    except ValueError:
        return None
