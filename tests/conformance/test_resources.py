"""Cluster resources, nodes and the runtime context (API.md "Executor methods",
"Ray-style sugar": get_runtime_context)."""

from __future__ import annotations

import pytest
from _support import block, gates_fixture, poll_until, probe_concurrency, rendezvous, square

import fedexec

gates = gates_fixture()

T = 30


class Probe:
    def context(self):
        ctx = fedexec.get_runtime_context()
        return ctx.actor_id, ctx.task_id, ctx.node_id

    def ping(self):
        return "pong"


def runtime_context():
    ctx = fedexec.get_runtime_context()
    return {
        "node_id": ctx.node_id,
        "worker_id": ctx.worker_id,
        "job_id": ctx.job_id,
        "task_id": ctx.task_id,
        "actor_id": ctx.actor_id,
    }


def parent_and_child_task_ids():
    mine = fedexec.get_runtime_context().task_id
    child = fedexec.get(fedexec.remote(runtime_context).remote(), timeout=T)["task_id"]
    return mine, child


def test_cluster_resources_cpu_equals_num_cpus(make_executor):
    assert make_executor(num_cpus=3).cluster_resources()["CPU"] == 3


def test_cluster_resources_are_a_dict_of_floats(ex):
    resources = ex.cluster_resources()
    assert isinstance(resources, dict)
    assert all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in resources.items())


def test_cluster_resources_include_custom_resources(make_executor):
    executor = make_executor(num_cpus=1, resources={"accelerator": 2, "license": 0.5})
    resources = executor.cluster_resources()
    assert resources["accelerator"] == 2
    assert resources["license"] == 0.5


def test_available_resources_equal_cluster_resources_when_idle(make_executor):
    executor = make_executor(num_cpus=2, resources={"widget": 3})
    assert executor.available_resources()["CPU"] == 2
    assert executor.available_resources()["widget"] == 3


def test_available_resources_drop_while_a_task_holds_cpus(make_executor, gates):
    executor = make_executor(num_cpus=4)
    gate = gates()
    ref = executor.options(num_cpus=3).submit(block, gate.release, None, gate.started)
    gate.wait_started()
    assert executor.available_resources()["CPU"] == 1
    assert executor.cluster_resources()["CPU"] == 4
    gate.open()
    executor.get(ref, timeout=T)
    assert poll_until(lambda: executor.available_resources()["CPU"] == 4)


def test_available_custom_resources_drop_while_a_task_holds_them(make_executor, gates):
    executor = make_executor(num_cpus=2, resources={"widget": 2})
    gate = gates()
    ref = executor.options(resources={"widget": 1.5}).submit(
        block, gate.release, None, gate.started
    )
    gate.wait_started()
    assert executor.available_resources()["widget"] == pytest.approx(0.5)
    gate.open()
    executor.get(ref, timeout=T)
    assert poll_until(lambda: executor.available_resources()["widget"] == 2)


def test_num_cpus_of_the_executor_limits_concurrency(make_executor, tmp_path):
    executor = make_executor(num_cpus=2)
    refs = [executor.submit(probe_concurrency, str(tmp_path), i) for i in range(6)]
    assert max(executor.get(refs, timeout=T)) <= 2


def test_custom_resource_limits_concurrency(make_executor, tmp_path):
    executor = make_executor(num_cpus=4, resources={"slot": 1})
    view = executor.options(resources={"slot": 1})
    refs = [view.submit(probe_concurrency, str(tmp_path), i) for i in range(4)]
    assert max(executor.get(refs, timeout=T)) == 1


def test_fractional_custom_resource_lets_tasks_share_it(make_executor, tmp_path):
    executor = make_executor(num_cpus=4, resources={"slot": 1})
    view = executor.options(resources={"slot": 0.5})
    refs = [view.submit(rendezvous, str(tmp_path), i, 2) for i in range(2)]
    assert executor.get(refs, timeout=T) == [True, True]


def test_nodes_entries_have_the_documented_fields(ex):
    nodes = ex.nodes()
    assert isinstance(nodes, list) and nodes
    for node in nodes:
        assert isinstance(node["node_id"], str) and node["node_id"]
        assert isinstance(node["address"], str)
        assert isinstance(node["alive"], bool)
        assert isinstance(node["resources"], dict)
    assert any(node["alive"] for node in nodes)


def test_alive_nodes_add_up_to_the_cluster_cpus(make_executor):
    executor = make_executor(num_cpus=3)
    alive = [n for n in executor.nodes() if n["alive"]]
    assert sum(n["resources"].get("CPU", 0) for n in alive) == 3


def test_runtime_context_in_a_task_has_a_task_id_and_no_actor_id(ex):
    ctx = ex.get(ex.submit(runtime_context), timeout=T)
    assert isinstance(ctx["task_id"], str) and ctx["task_id"]
    assert ctx["actor_id"] is None
    assert isinstance(ctx["worker_id"], str) and ctx["worker_id"]


def test_runtime_context_in_the_driver_has_no_task_or_actor_id(ex):
    ctx = ex.get_runtime_context()
    assert ctx.task_id is None
    assert ctx.actor_id is None
    assert isinstance(ctx.node_id, str) and ctx.node_id
    assert isinstance(ctx.job_id, str) and ctx.job_id


def test_runtime_context_task_ids_differ_between_tasks(ex):
    ids = {ex.get(ex.submit(runtime_context), timeout=T)["task_id"] for _ in range(3)}
    assert len(ids) == 3


def test_nested_task_has_its_own_task_id(ex):
    mine, child = ex.get(ex.submit(parent_and_child_task_ids), timeout=T)
    assert mine and child and mine != child


def test_runtime_context_node_id_in_a_task_names_a_node(ex):
    ctx = ex.get(ex.submit(runtime_context), timeout=T)
    assert ctx["node_id"] in {n["node_id"] for n in ex.nodes()}


def test_runtime_context_job_id_is_the_same_in_driver_and_task(ex):
    ctx = ex.get(ex.submit(runtime_context), timeout=T)
    assert ctx["job_id"] == ex.get_runtime_context().job_id


@pytest.mark.requires("actors")
def test_runtime_context_in_an_actor_has_its_actor_id(ex):
    probe = ex.actor(Probe)
    actor_id, task_id, node_id = ex.get(probe.context.remote(), timeout=T)
    assert actor_id == probe.actor_id
    assert task_id is not None
    assert node_id in {n["node_id"] for n in ex.nodes()}


@pytest.mark.requires("actors")
def test_alive_actor_with_default_num_cpus_holds_no_cpu(make_executor):
    executor = make_executor(num_cpus=1)
    probe = executor.actor(Probe)
    assert executor.get(probe.ping.remote(), timeout=T) == "pong"
    assert poll_until(lambda: executor.available_resources()["CPU"] == 1)
    assert executor.get(executor.submit(square, 2), timeout=T) == 4


@pytest.mark.requires("actors")
def test_actor_with_explicit_num_cpus_holds_them_until_killed(make_executor):
    executor = make_executor(num_cpus=2)
    probe = executor.options(num_cpus=1).actor(Probe)
    assert executor.get(probe.ping.remote(), timeout=T) == "pong"
    assert executor.available_resources()["CPU"] == 1
    executor.kill(probe)
    assert poll_until(lambda: executor.available_resources()["CPU"] == 2)
