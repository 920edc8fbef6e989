"""Ray-style sugar bound to the default executor (API.md "Ray-style sugar")."""

from __future__ import annotations

import pytest
from _support import block, gates_fixture

import fedexec

gates = gates_fixture()

T = 30


@fedexec.remote
def double(x):
    """Doubles x."""
    return 2 * x


def pair_values(pair):
    return pair[0], pair[1]


split = fedexec.remote(num_returns=2)(pair_values)


@fedexec.remote
class RemoteCounter:
    def __init__(self, start=0):
        self.value = start

    def incr(self, n=1):
        self.value += n
        return self.value


@pytest.fixture
def default(backend_name):
    """The process-wide default executor on the backend under test (the autouse
    fixture of conftest shuts it down after the test)."""
    return fedexec.init(backend=backend_name, num_cpus=2)


def test_bare_decorator_makes_a_remote_function(default):
    ref = double.remote(21)
    assert isinstance(ref, fedexec.ObjectRef)
    assert fedexec.get(ref, timeout=T) == 42


def test_decorator_with_options_applies_them(default):
    refs = split.remote(("a", "b"))
    assert isinstance(refs, list) and len(refs) == 2
    assert fedexec.get(refs, timeout=T) == ["a", "b"]


def test_calling_a_remote_function_directly_raises_type_error(backend_name):
    with pytest.raises(TypeError, match=r"\.remote\("):
        double(1)


def test_remote_function_keeps_the_name_and_docstring(backend_name):
    assert double.__name__ == "double"
    assert double.__doc__ == "Doubles x."


def test_options_on_a_remote_function_return_a_new_function(default):
    two = fedexec.remote(pair_values).options(num_returns=2)
    assert fedexec.get(two.remote((1, 2)), timeout=T) == [1, 2]
    one = split.options(num_returns=1)
    assert fedexec.get(one.remote((1, 2)), timeout=T) == (1, 2)
    assert len(split.remote((3, 4))) == 2  # the original keeps its options


def test_remote_function_options_validate_immediately(backend_name):
    with pytest.raises(ValueError):
        double.options(num_cpus=-1)
    with pytest.raises(ValueError):
        double.options(not_an_option=1)


def test_executor_submit_of_a_remote_function_uses_its_options(ex):
    refs = ex.submit(split, (5, 6))
    assert ex.get(refs, timeout=T) == [5, 6]


def test_remote_function_submits_to_the_default_executor(default):
    assert fedexec.is_initialized()
    assert fedexec.get(double.remote(4), timeout=T) == 8
    assert fedexec.cluster_resources()["CPU"] == 2


@pytest.mark.requires("actors")
def test_remote_class_remote_creates_an_actor(default):
    counter = RemoteCounter.remote(10)
    assert isinstance(counter, fedexec.ActorHandle)
    assert fedexec.get(counter.incr.remote(5), timeout=T) == 15


@pytest.mark.requires("actors")
def test_remote_class_instantiated_directly_raises_type_error(backend_name):
    with pytest.raises(TypeError, match=r"\.remote\("):
        RemoteCounter()


@pytest.mark.requires("actors", "named_actors")
def test_remote_class_options_name_registers_the_actor(default):
    counter = RemoteCounter.options(name="remote-counter").remote(1)
    found = fedexec.get_actor("remote-counter")
    assert found == counter
    assert fedexec.get(found.incr.remote(), timeout=T) == 2


@pytest.mark.requires("actors")
def test_module_level_kill_kills_the_actor(default):
    counter = RemoteCounter.remote()
    fedexec.get(counter.incr.remote(), timeout=T)
    fedexec.kill(counter)
    with pytest.raises(fedexec.ActorDiedError):
        fedexec.get(counter.incr.remote(), timeout=T)


def test_module_level_put_get_and_wait(default):
    refs = [fedexec.put(i) for i in range(3)]
    ready, not_ready = fedexec.wait(refs, num_returns=3, timeout=T)
    assert ready == refs and not_ready == []
    assert fedexec.get(refs, timeout=T) == [0, 1, 2]


def test_module_level_get_timeout_raises_get_timeout_error(default, gates):
    gate = gates()
    ref = fedexec.remote(block).remote(gate.release)
    with pytest.raises(fedexec.GetTimeoutError):
        fedexec.get(ref, timeout=0.05)


def test_module_level_resources_and_nodes_describe_the_default_executor(default):
    assert fedexec.cluster_resources()["CPU"] == 2
    assert fedexec.available_resources()["CPU"] <= 2
    assert len(fedexec.nodes()) >= 1


def test_init_twice_raises_runtime_error(default, backend_name):
    with pytest.raises(RuntimeError):
        fedexec.init(backend=backend_name, num_cpus=1)


def test_init_with_ignore_reinit_error_returns_the_existing_executor(default, backend_name):
    assert fedexec.init(backend=backend_name, ignore_reinit_error=True) is default


def test_is_initialized_follows_init_and_shutdown(backend_name):
    assert not fedexec.is_initialized()
    executor = fedexec.init(backend=backend_name, num_cpus=1)
    assert fedexec.is_initialized()
    assert executor.backend == backend_name
    fedexec.shutdown()
    assert not fedexec.is_initialized()


def test_init_again_after_shutdown_gives_a_fresh_executor(backend_name):
    first = fedexec.init(backend=backend_name, num_cpus=1)
    fedexec.shutdown()
    second = fedexec.init(backend=backend_name, num_cpus=1)
    assert second is not first
    assert fedexec.get(double.remote(1), timeout=T) == 2


def test_shutting_down_the_default_executor_directly_clears_it(backend_name):
    executor = fedexec.init(backend=backend_name, num_cpus=1)
    executor.shutdown()
    assert not fedexec.is_initialized()


def test_remote_function_used_inside_a_task_on_another_executor(default, ex):
    # ``double.remote`` inside a task on ``ex`` goes to ``ex``, not to the default.
    def nested(x):
        return fedexec.get(double.remote(x), timeout=T)

    assert ex.get(ex.submit(nested, 7), timeout=T) == 14


def test_remote_function_pickles_with_its_options(ex):
    def call_split(f):
        return fedexec.get(f.remote(("x", "y")), timeout=T)

    assert ex.get(ex.submit(call_split, split), timeout=T) == ["x", "y"]


def test_module_level_get_runtime_context_in_the_driver(default):
    ctx = fedexec.get_runtime_context()
    assert ctx.task_id is None
    assert ctx.actor_id is None
    assert isinstance(ctx.job_id, str) and isinstance(ctx.node_id, str)
