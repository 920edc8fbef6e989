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
            assert poll_until(lambda: {a_id, b_id} <= {
                n["node_id"] for n in ex_b.nodes() if n["alive"]}, timeout=30)
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


def test_work_between_two_nodes_survives_a_head_restarted_without_state(tmp_path):
    """A head restarted with no state directory knows only the nodes that have rejoined
    it so far; a node rejoining first must not take the others for dead (and drop the
    work they run for it), only those that never rejoin within the heartbeat timeout."""
    token = os.urandom(32).hex()
    launch = _launcher(token, tmp_path / "state")
    head = launch(tcp=("127.0.0.1", 0))
    address = head.info["address"]
    a = launch(tcp=("127.0.0.1", 0), head_address=address, resources={"a": 1})
    b = launch(tcp=("127.0.0.1", 0), head_address=address, resources={"b": 1})
    a_id, b_id = a.info["node_id"], b.info["node_id"]
    try:
        with fedexec.Executor(address=a.info["address"], token=token) as ex_a:
            assert poll_until(lambda: {a_id, b_id} <= {
                n["node_id"] for n in ex_a.nodes() if n["alive"]}, timeout=30)
            running = ex_a.options(resources={"b": 1}, max_retries=0).submit(
                sleep_then_node, 4.0)
            assert poll_until(lambda: running.running(), timeout=30)
            head.proc.kill()  # SIGKILL
            head.stop()
            host, port = address.rsplit(":", 1)
            head = launch(tcp=(host, int(port)))
            assert running.result(timeout=T) == b_id
            assert poll_until(lambda: {a_id, b_id} <= {
                n["node_id"] for n in ex_a.nodes() if n["alive"]}, timeout=30)
            again = ex_a.options(resources={"b": 1}, max_retries=0).submit(sleep_then_node, 0)
            assert again.result(timeout=T) == b_id
    finally:
        _stop(a, b, head)


def test_a_node_that_never_rejoins_a_restarted_head_is_declared_dead(tmp_path):
    """The other half: a node killed with the head, so never seen by its replacement,
    is dead for the others once the heartbeat timeout has passed (its work fails
    over, it does not wait forever)."""
    token = os.urandom(32).hex()
    launch = _launcher(token, tmp_path / "state")
    head = launch(tcp=("127.0.0.1", 0))
    address = head.info["address"]
    a = launch(tcp=("127.0.0.1", 0), head_address=address, resources={"a": 1})
    b = launch(tcp=("127.0.0.1", 0), head_address=address, resources={"b": 1})
    a_id, b_id = a.info["node_id"], b.info["node_id"]
    try:
        with fedexec.Executor(address=a.info["address"], token=token) as ex_a:
            assert poll_until(lambda: {a_id, b_id} <= {
                n["node_id"] for n in ex_a.nodes() if n["alive"]}, timeout=30)
            running = ex_a.options(resources={"b": 1}, max_retries=0).submit(
                sleep_then_node, 60.0)
            assert poll_until(lambda: running.running(), timeout=30)
            for proc in (head, b):
                proc.proc.kill()  # SIGKILL
                proc.stop()
            host, port = address.rsplit(":", 1)
            head = launch(tcp=(host, int(port)))
            with pytest.raises(fedexec.exceptions.NodeDiedError, match=b_id):
                running.result(timeout=T)
            assert poll_until(lambda: b_id not in {
                n["node_id"] for n in ex_a.nodes() if n["alive"]}, timeout=30)
    finally:
        _stop(a, b, head)
