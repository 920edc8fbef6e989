"""The backend registry: register(), unknown names, missing optional dependencies."""

import pytest

import fedexec
import fedexec.backends._registry
from fedexec import backends
from fedexec.backends.local import LocalBackend


class _Named(LocalBackend):
    name = "named-for-test"


def test_register_a_backend_and_use_it():
    backends.register("named-for-test", _Named)
    try:
        with fedexec.Executor(backend="named-for-test", num_cpus=1) as ex:
            assert ex.backend == "named-for-test"
            assert ex.submit(pow, 2, 5).result(timeout=10) == 32
        assert "named-for-test" in backends.available()
    finally:
        backends._registry._registered.pop("named-for-test", None)


def test_register_requires_capabilities():
    with pytest.raises(ValueError, match="capabilities"):
        backends.register("broken", lambda config: None)


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(backends._registry._BUILTIN, "fake", ("fedexec_no_such_module:X", "fake"))
    with pytest.raises(fedexec.BackendUnavailableError, match=r'pip install "fedexec\[fake\]"'):
        fedexec.Executor(backend="fake")
    assert "fake" not in backends.available()


def test_capabilities_are_a_frozenset_of_known_names():
    caps = backends.capabilities("local")
    assert isinstance(caps, frozenset) and caps <= backends.CAPABILITIES
