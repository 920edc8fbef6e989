"""Option validation: every bad input is a clear error at the point it is given."""

import math

import pytest

import fedexec
from fedexec.options import ActorOptions, TaskOptions


@pytest.mark.parametrize("value", [-1, math.nan, math.inf, -0.5])
def test_bad_num_cpus_is_a_value_error(value):
    with pytest.raises(ValueError, match="num_cpus"):
        TaskOptions.make(num_cpus=value)


@pytest.mark.parametrize("value", ["2", None, True])
def test_non_numeric_num_gpus_is_a_type_error(value):
    with pytest.raises(TypeError, match="num_gpus"):
        TaskOptions.make(num_gpus=value)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"num_cpu.*valid options"):
        TaskOptions.make(num_cpu=1)


def test_actor_only_option_is_rejected_for_tasks():
    with pytest.raises(ValueError, match="max_restarts"):
        TaskOptions.make(max_restarts=1)


def test_resources_must_not_name_cpu():
    with pytest.raises(ValueError, match="num_cpus"):
        TaskOptions.make(resources={"CPU": 1})


def test_negative_custom_resource():
    with pytest.raises(ValueError, match="resources"):
        TaskOptions.make(resources={"disk": -1})


def test_demand_includes_defaults_and_custom_resources():
    opts = TaskOptions.make(num_gpus=1, resources={"disk": 2}, memory=100)
    assert opts.demand(1.0) == {"CPU": 1.0, "GPU": 1.0, "disk": 2.0, "memory": 100.0}
    assert TaskOptions.make(num_cpus=0).demand(1.0) == {}


def test_actor_concurrency_defaults():
    assert ActorOptions().concurrency(is_async=False) == 1
    assert ActorOptions().concurrency(is_async=True) == 1000
    assert ActorOptions.make(max_concurrency=4).concurrency(is_async=True) == 4


def test_scheduling_strategy_values():
    assert TaskOptions.make(scheduling_strategy="spread").scheduling_strategy == "SPREAD"
    affinity = fedexec.NodeAffinity("n1", soft=True)
    assert TaskOptions.make(scheduling_strategy=affinity).scheduling_strategy is affinity
    with pytest.raises(ValueError):
        TaskOptions.make(scheduling_strategy="RANDOM")


def test_runtime_env_keys_are_checked():
    with pytest.raises(ValueError, match="pip"):
        TaskOptions.make(runtime_env={"pip": ["x"]})
    with pytest.raises(TypeError):
        TaskOptions.make(runtime_env={"env_vars": {"A": 1}})


def test_remote_decorator_rejects_unknown_options_at_decoration():
    with pytest.raises(ValueError, match="bogus"):
        fedexec.remote(bogus=1)(lambda: None)


def test_executor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_workers"):
        fedexec.Executor(max_workers=0)
    with pytest.raises(ValueError, match="num_cpus"):
        fedexec.Executor(num_cpus=-2)
    with pytest.raises(ValueError, match=r"unknown backend 'nope'.*local"):
        fedexec.Executor(backend="nope")


# --------------------------------------------------------------- backend options
@pytest.mark.parametrize("name", fedexec.backends.available())
def test_an_unknown_backend_option_is_a_value_error_listing_the_known_ones(name):
    known = fedexec.backends.get_factory(name).options
    with pytest.raises(ValueError, match="unknown option") as info:
        fedexec.Executor(backend=name, not_an_option=1, neither_this=2)
    message = str(info.value)
    assert "not_an_option" in message and "neither_this" in message
    assert repr(name) in message
    assert all(option in message for option in known)


def test_every_backend_declares_the_options_it_reads():
    declared = {name: fedexec.backends.get_factory(name).options
                for name in fedexec.backends.available()}
    assert declared["local"] == frozenset()
    assert {"heartbeat_interval", "heartbeat_timeout", "log_to_stderr", "remote_store",
            "blocked_warning_s", "memory_usage_threshold",
            "memory_monitor_interval_s", "worker_preload", "dashboard", "dashboard_host",
            "dashboard_port", "max_finished_tasks", "state_dir"} == declared["native"]
