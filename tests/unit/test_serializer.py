"""The serializer: out-of-band buffers, contained refs, and error paths."""

import threading

import numpy as np
import pytest

from fedexec import SerializationError, serialization
from fedexec.refs import ObjectRef


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
