"""The serializer: out-of-band buffers, contained refs, and error paths."""

import threading
import time

import numpy as np
import pytest

from fedexec import SerializationError, serialization
from fedexec.refs import ObjectRef
from fedexec.util import serialization as util_serialization


def test_large_buffers_go_out_of_band_and_small_ones_stay_in_band():
    big = np.arange(100_000, dtype=np.float64)
    small = np.arange(10)
    s = serialization.dumps({"big": big, "small": small})
    assert len(s.buffers) == 1
    assert memoryview(s.buffers[0]).nbytes == big.nbytes
    assert len(s.data) < 10_000
    out = serialization.loads(s.data, s.buffers)
    np.testing.assert_array_equal(out["big"], big)
    np.testing.assert_array_equal(out["small"], small)


def test_loaded_array_is_a_view_of_the_buffer():
    big = np.arange(100_000, dtype=np.int64)
    s = serialization.dumps(big)
    buf = bytes(s.buffers[0])
    out = serialization.loads(s.data, [buf])
    assert not out.flags.writeable  # a view of immutable bytes: no copy was made
    assert np.shares_memory(out, np.frombuffer(buf, dtype=np.int64))


def test_refs_met_while_pickling_are_recorded():
    a, b = ObjectRef("a" * 28), ObjectRef("b" * 28)
    s = serialization.dumps({"x": [a, (b,)]})
    assert s.contained == [a, b]


def test_error_names_the_path_inside_containers():
    lock = threading.Lock()
    with pytest.raises(SerializationError, match=r"args\[1\]\['k'\]\[0\]") as info:
        serialization.dumps((1, {"k": [lock]}), what="args")
    assert "lock" in str(info.value)


def test_error_names_a_closure_variable():
    lock = threading.Lock()

    def uses_lock():
        with lock:
            return 1

    with pytest.raises(SerializationError, match="closure variable 'lock'"):
        serialization.dumps(uses_lock, what="function")


def test_error_names_an_attribute():
    class Holder:
        def __init__(self):
            self.conn = threading.Lock()

    with pytest.raises(SerializationError, match=r"value\.conn"):
        serialization.dumps(Holder())


def test_bytearray_round_trips_as_bytearray():
    s = serialization.dumps(bytearray(b"x" * 200_000))
    assert type(serialization.loads(s.data, s.buffers)) is bytearray



# ----------------------------------------------------- a class's module imported meanwhile
# A package whose __init__ imports ``a``, which imports ``b``, which imports ``a``
# back (fine in one thread). ``a`` waits (at most 2 s) until ``b`` has started, so
# that a thread importing ``b`` directly while another is inside the package's
# __init__ deadlocks with it, which Python breaks by failing one of the imports.
_RACING_PACKAGE = {
    "__init__.py": "from . import a\n",
    "gate.py": "import threading\nchild_started = threading.Event()\n",
    "a.py": "from . import gate\ngate.child_started.wait(2)\nfrom .b import Cls\n",
    "b.py": "from . import gate\ngate.child_started.set()\nfrom . import a\n\n\n"
            "class Cls:\n    pass\n",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loads", [
    serialization.loads,
    util_serialization.loads,  # what the libraries load their own pickled code with
], ids=["runtime", "fedexec.util.serialization"])
def test_a_class_unpickled_while_another_thread_imports_its_package_waits_for_it(
        tmp_path, monkeypatch, loads):
    """Python imports a module without waiting for its parent package when another
    thread is still importing that package. A Dask worker unpickling an actor class of
    ``fedexec.data.actor_pool`` while a task thread imported ``fedexec.data`` failed
    with a circular ImportError in one thread or ``KeyError: 'fedexec.data'`` in the
    other."""
    import importlib
    import sys

    name = f"racing_{tmp_path.name.replace('-', '_')}"
    (tmp_path / name).mkdir()
    for file, text in _RACING_PACKAGE.items():
        (tmp_path / name / file).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    blob = f"c{name}.b\nCls\n.".encode()  # a reference to the class, not yet imported
    errors: list[BaseException] = []
    loaded: list[type] = []

    def import_the_package():
        try:
            importlib.import_module(name)
        except BaseException as exc:
            errors.append(exc)

    def unpickle_the_class():
        while name not in sys.modules:  # until the other thread is inside __init__
            time.sleep(0.001)
        try:
            loaded.append(loads(blob))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=unpickle_the_class),
               threading.Thread(target=import_the_package)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert loaded == [sys.modules[f"{name}.b"].Cls]
    finally:
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]
