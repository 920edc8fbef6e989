"""Backend names and capabilities (API.md "Runtime" and "Backend capabilities").

A feature a backend does not declare must raise ``UnsupportedOnBackendError``;
a feature it declares must work. Tests choose by capability, never by name.
"""

from __future__ import annotations

import uuid

import pytest
from _support import square

import fedexec
from fedexec import backends

T = 30

DOCUMENTED = frozenset(
    {
        "actors",
        "async_actors",
        "named_actors",
        "actor_restarts",
        "zero_copy",
        "placement_groups",
        "multi_node",
        "gpus",
        "cancel_running",
        "worker_processes",
        "lineage_reconstruction",
        "spilling",
    }
)


class Plain:
    def read(self):
        return 1


def lacking(backend_name, capability):
    if capability in backends.capabilities(backend_name):
        pytest.skip(f"backend declares {capability!r}")


def assert_names_backends_with(err, capability):
    message = str(err)
    for name in backends.backends_with(capability):
        assert name in message, f"{message!r} does not name {name!r}"


def test_capabilities_is_a_frozenset_of_documented_names(backend_name):
    caps = backends.capabilities(backend_name)
    assert isinstance(caps, frozenset)
    assert caps <= DOCUMENTED


def test_backend_under_test_is_listed_as_available(backend_name):
    assert backend_name in backends.available()


def test_unknown_backend_raises_value_error_listing_the_known_ones(backend_name):
    with pytest.raises(ValueError) as info:
        fedexec.Executor(backend="no-such-backend")
    assert backend_name in str(info.value)


def test_capabilities_of_an_unknown_backend_raises_value_error(backend_name):
    with pytest.raises(ValueError):
        backends.capabilities("no-such-backend")


def test_backend_registered_under_a_new_name_is_usable(backend_name):
    alias = f"conformance-alias-{uuid.uuid4().hex[:8]}"
    backends.register(alias, backends.get_factory(backend_name))
    assert backends.capabilities(alias) == backends.capabilities(backend_name)
    executor = fedexec.Executor(backend=alias, num_cpus=1)
    try:
        assert executor.get(executor.submit(square, 3), timeout=T) == 9
    finally:
        executor.shutdown(wait=True)


def test_register_rejects_a_factory_without_capabilities(backend_name):
    with pytest.raises(ValueError):
        backends.register(f"conformance-bad-{uuid.uuid4().hex[:8]}", lambda config: None)


@pytest.mark.requires("placement_groups")
def test_placement_group_reserves_its_bundles(make_executor):
    executor = make_executor(num_cpus=2)
    pg = executor.placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    assert pg.ready(timeout=T) is True
    assert pg.bundle_specs == [{"CPU": 1}, {"CPU": 1}]
    assert isinstance(pg.id, str) and pg.id
    strategy = fedexec.PlacementGroupStrategy(pg, bundle_index=0)
    ref = executor.options(scheduling_strategy=strategy).submit(square, 5)
    assert executor.get(ref, timeout=T) == 25
    executor.remove_placement_group(pg)


def test_placement_group_without_the_capability_raises_unsupported(ex, backend_name):
    lacking(backend_name, "placement_groups")
    with pytest.raises(fedexec.UnsupportedOnBackendError) as info:
        ex.placement_group([{"CPU": 1}])
    assert isinstance(info.value, NotImplementedError)
    assert isinstance(info.value, fedexec.FedexecError)
    assert_names_backends_with(info.value, "placement_groups")


def test_actors_without_the_capability_raise_unsupported(ex, backend_name):
    lacking(backend_name, "actors")
    with pytest.raises(fedexec.UnsupportedOnBackendError) as info:
        ex.actor(Plain)
    assert isinstance(info.value, NotImplementedError)
    assert_names_backends_with(info.value, "actors")


def test_named_actors_without_the_capability_raise_unsupported(ex, backend_name):
    lacking(backend_name, "named_actors")
    with pytest.raises(fedexec.UnsupportedOnBackendError) as info:
        ex.get_actor("anything")
    assert_names_backends_with(info.value, "named_actors")


@pytest.mark.requires("actors")
def test_async_actors_without_the_capability_raise_unsupported(ex, backend_name):
    lacking(backend_name, "async_actors")

    class AsyncPlain:
        async def read(self):
            return 1

    with pytest.raises(fedexec.UnsupportedOnBackendError):
        ex.get(ex.actor(AsyncPlain).read.remote(), timeout=T)
