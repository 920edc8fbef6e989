"""The runtime API libraries build on: current_executor, is_shutdown, the runtime
context (node IP, GPU ids, namespace), and module-level calls on refs of any executor."""

from __future__ import annotations

import ipaddress

import pytest

import fedexec

T = 60


def _context() -> tuple[str, list[str], str, bool]:
    ctx = fedexec.get_runtime_context()
    return ctx.get_node_ip_address(), ctx.get_gpu_ids(), ctx.namespace, ctx.task_id is not None


def _nested_sum(n: int) -> int:
    ex = fedexec.current_executor()
    return sum(ex.map(abs, range(-n, 0)))


def _current_backend() -> str:
    return fedexec.current_executor().backend


def _gpu_view() -> tuple[list[str], list[str]]:
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return fedexec.get_gpu_ids(), [g for g in visible.split(",") if g]


def _lookup(name: str) -> int:
    return fedexec.get(fedexec.get_actor(name).value.remote(), timeout=T)


class _Holder:
    def __init__(self, v: int = 7):
        self.v = v

    def value(self) -> int:
        return self.v

    def context(self) -> tuple[str, list[str], str, bool]:
        ctx = fedexec.get_runtime_context()
        return ctx.get_node_ip_address(), ctx.get_gpu_ids(), ctx.namespace, \
            ctx.get_actor_id() is not None


def test_current_executor_inside_a_task_is_the_tasks_runtime(ex, backend_name):
    # (the native-cluster test backend is the native backend inside its workers)
    assert backend_name.startswith(ex.submit(_current_backend).result(T))
    assert ex.submit(_nested_sum, 4).result(T) == 10


def test_current_executor_in_a_driver_is_the_default_one():
    assert not fedexec.is_initialized()
    ex = fedexec.init(backend="local")
    try:
        assert fedexec.current_executor() is ex
    finally:
        fedexec.shutdown()
    assert ex.is_shutdown


def test_is_shutdown(make_executor):
    ex = make_executor()
    assert ex.is_shutdown is False
    ex.shutdown()
    assert ex.is_shutdown is True
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(abs, 1)


def test_module_level_get_and_wait_use_the_refs_executor(ex):
    ref = ex.submit(abs, -5)
    assert fedexec.get(ref, timeout=T) == 5
    ready, _ = fedexec.wait([ref], timeout=T)
    assert ready == [ref]
    assert fedexec.get([ref, ex.put(3)], timeout=T) == [5, 3]
    assert not fedexec.is_initialized()  # no default runtime was started for them


def test_runtime_context_in_driver_and_task(make_executor):
    ex = make_executor(namespace="conformance-ns")
    ctx = ex.get_runtime_context()
    ipaddress.ip_address(ctx.get_node_ip_address())
    assert ctx.get_node_id() == ctx.node_id
    assert ctx.get_job_id() == ctx.job_id
    assert ctx.get_task_id() is None
    assert ctx.get_gpu_ids() == []
    assert ctx.namespace == "conformance-ns"
    ip, gpus, namespace, in_task = ex.submit(_context).result(T)
    ipaddress.ip_address(ip)
    assert (gpus, namespace, in_task) == ([], "conformance-ns", True)


@pytest.mark.requires("actors")
def test_runtime_context_in_an_actor(make_executor):
    ex = make_executor(namespace="ns-driver")
    plain = ex.actor(_Holder)
    ip, gpus, namespace, in_actor = ex.get(plain.context.remote(), timeout=T)
    ipaddress.ip_address(ip)
    assert (gpus, namespace, in_actor) == ([], "ns-driver", True)


@pytest.mark.requires("named_actors")
def test_actor_namespace_shows_in_its_context(make_executor):
    ex = make_executor()
    other = ex.options(name="ctx-holder", namespace="ns-other").actor(_Holder)
    assert ex.get(other.context.remote(), timeout=T)[2] == "ns-other"


@pytest.mark.requires("named_actors")
def test_tasks_inherit_the_drivers_namespace_for_named_actors(make_executor):
    ex = make_executor(namespace="ns-inherit")
    ex.options(name="holder").actor(_Holder, 11)
    assert ex.submit(_lookup, "holder").result(T) == 11
    with pytest.raises(ValueError):
        ex.get_actor("holder", namespace="default")


@pytest.mark.requires("gpus", "worker_processes")
def test_gpu_ids_are_the_ones_given_to_the_task(make_executor, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    ex = make_executor(num_gpus=2)
    assert ex.submit(_gpu_view).result(T)[0] == []
    ids, visible = ex.options(num_gpus=1).submit(_gpu_view).result(T)
    assert len(ids) == 1 and ids[0] in ("0", "1") and visible == ids
    both, visible = ex.options(num_gpus=2).submit(_gpu_view).result(T)
    assert sorted(both) == ["0", "1"] and sorted(visible) == ["0", "1"]
    assert ex.get_runtime_context().get_gpu_ids() == []


def _util_view() -> tuple[str, bool, str]:
    from fedexec import util

    return util.get_node_ip_address(), util.inside_task(), \
        fedexec.get_runtime_context().get_node_ip_address()


def test_util_node_ip_and_inside_task(ex):
    from fedexec import util

    assert util.inside_task() is False
    assert not fedexec.is_initialized()  # inside_task() started nothing
    ip, inside, ctx_ip = ex.submit(_util_view).result(T)
    ipaddress.ip_address(ip)
    assert inside is True and ip == ctx_ip


@pytest.mark.requires("actors")
def test_module_level_kill_uses_the_handles_executor(ex):
    holder = ex.actor(_Holder)
    assert ex.get(holder.value.remote(), timeout=T) == 7
    fedexec.kill(holder)
    assert not fedexec.is_initialized()
    with pytest.raises(fedexec.ActorDiedError):
        ex.get(holder.value.remote(), timeout=T)
