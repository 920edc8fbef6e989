"""Serialization: values round-trip as pickle would; what cannot be pickled raises
``SerializationError`` naming the object and its path (API.md "Errors")."""

from __future__ import annotations

import dataclasses
import math
import struct
import threading
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from _support import identity, square
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedexec

T = 30

HYPOTHESIS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclasses.dataclass
class Point:
    x: int
    y: float
    tags: list[str] = dataclasses.field(default_factory=list)


def first_two(a, b, *rest, **kwargs):
    return a


def return_a_lock():
    return {"ok": 1, "lock": threading.Lock()}


def append_and_return(items):
    items.append("added in task")
    return items


def describe(value):
    return type(value).__name__, value


def assert_same(a: Any, b: Any, path: str = "value") -> None:
    """``b`` is what unpickling ``a`` gives: same types, bit-identical numbers."""
    assert type(a) is type(b), f"{path}: {type(a)} became {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, f"{path}: dtype {a.dtype} became {b.dtype}"
        assert a.shape == b.shape, f"{path}: shape {a.shape} became {b.shape}"
        if a.dtype.hasobject:
            assert a.tolist() == b.tolist(), path
        else:
            assert a.tobytes() == b.tobytes(), f"{path}: contents differ"
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{path}: {a!r} became {b!r}"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys differ"
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length differs"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} became {b!r}"


# --------------------------------------------------------------------------- errors
def submit_and_get(executor, fn, *args, **kwargs):
    """A serialization failure may surface at submit or at get: both count."""
    return executor.get(executor.submit(fn, *args, **kwargs), timeout=T)


def test_unpicklable_positional_argument_raises_serialization_error_naming_its_path(ex):
    with pytest.raises(fedexec.SerializationError) as info:
        submit_and_get(ex, first_two, 1, threading.Lock())
    message = str(info.value)
    assert "args[1]" in message
    assert "lock" in message.lower()
    assert isinstance(info.value, fedexec.FedexecError)


def test_unpicklable_keyword_argument_names_the_keyword(ex):
    with pytest.raises(fedexec.SerializationError) as info:
        submit_and_get(ex, first_two, 1, 2, x=threading.Lock())
    assert "kwargs['x']" in str(info.value)


def test_unpicklable_value_nested_in_an_argument_names_the_full_path(ex):
    config = {"name": "db", "conn": [1, threading.Lock()]}
    with pytest.raises(fedexec.SerializationError) as info:
        submit_and_get(ex, first_two, config, 2)
    assert "args[0]['conn'][1]" in str(info.value)


def test_function_capturing_a_lock_raises_serialization_error_naming_the_closure_variable(ex):
    guard = threading.Lock()

    def uses_guard():
        with guard:
            return 1

    with pytest.raises(fedexec.SerializationError) as info:
        submit_and_get(ex, uses_guard)
    message = str(info.value)
    assert "'guard'" in message
    assert "closure" in message.lower()


def test_lambda_capturing_a_lock_raises_serialization_error(ex):
    lock = threading.Lock()
    with pytest.raises(fedexec.SerializationError, match="lock"):
        submit_and_get(ex, lambda: lock.locked())


def test_unpicklable_return_value_raises_serialization_error_naming_it(ex):
    with pytest.raises(fedexec.SerializationError) as info:
        ex.get(ex.submit(return_a_lock), timeout=T)
    message = str(info.value)
    assert "return" in message.lower()
    assert "['lock']" in message


def test_put_of_an_unpicklable_value_raises_serialization_error(ex):
    with pytest.raises(fedexec.SerializationError):
        ex.put({"lock": threading.Lock()})


def test_executor_stays_usable_after_serialization_errors(ex):
    with pytest.raises(fedexec.SerializationError):
        submit_and_get(ex, first_two, threading.Lock(), 1)
    with pytest.raises(fedexec.SerializationError):
        ex.get(ex.submit(return_a_lock), timeout=T)
    assert ex.get([ex.submit(square, i) for i in range(5)], timeout=T) == [0, 1, 4, 9, 16]


# --------------------------------------------------------------------------- round trips
def test_bytearray_stays_a_bytearray_through_put_and_get(ex):
    value = ex.get(ex.put(bytearray(b"\x00abc")), timeout=T)
    assert type(value) is bytearray and value == bytearray(b"\x00abc")


def test_bytearray_stays_a_bytearray_through_task_arguments_and_returns(ex):
    name, value = ex.get(ex.submit(describe, bytearray(b"xyz")), timeout=T)
    assert name == "bytearray"
    assert type(value) is bytearray


def test_container_types_are_preserved(ex):
    value = {"t": (1, 2), "l": [1, 2], "s": {1, 2}, "f": frozenset({3}), "b": b"x", "n": None}
    got = ex.get(ex.submit(identity, value), timeout=T)
    assert got == value
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in value.items()}


def test_dataclass_instances_round_trip(ex):
    point = Point(1, 2.5, ["a"])
    assert ex.get(ex.submit(identity, point), timeout=T) == point
    assert ex.get(ex.put(point), timeout=T) == point


def test_special_floats_round_trip_bit_for_bit(ex):
    values = [math.nan, math.inf, -math.inf, -0.0, 5e-324]
    got = ex.get(ex.submit(identity, values), timeout=T)
    assert_same(values, got)


@pytest.mark.parametrize(
    "dtype",
    [
        "int8",
        "uint16",
        "int64",
        "float16",
        "float32",
        "float64",
        "complex128",
        "bool",
        "U5",
        "S3",
        "datetime64[ns]",
        "i4,f8",
        "object",
    ],
)
def test_numpy_array_dtype_shape_and_contents_are_preserved(ex, dtype):
    array = np.arange(24).reshape(2, 3, 4).astype(dtype)
    assert_same(array, ex.get(ex.put(array), timeout=T))
    assert_same(array, ex.get(ex.submit(identity, array), timeout=T))


def test_large_numpy_array_round_trips_through_put_and_tasks(ex):
    array = np.random.default_rng(0).standard_normal((512, 300))  # ~1.2 MB: out of band
    assert_same(array, ex.get(ex.put(array), timeout=T))
    assert_same(array, ex.get(ex.submit(identity, array), timeout=T))
    assert float(ex.get(ex.submit(np.sum, array), timeout=T)) == pytest.approx(array.sum())


def test_numpy_fortran_order_is_preserved_as_pickle_would(ex):
    fortran = np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4))
    got = ex.get(ex.submit(identity, fortran), timeout=T)
    assert_same(fortran, got)
    assert got.flags.f_contiguous and not got.flags.c_contiguous


def test_numpy_strided_views_zero_d_and_empty_arrays_round_trip(ex):
    strided = np.arange(40, dtype=np.float64).reshape(5, 8)[::2, 1::3]
    for array in (strided, np.array(2.5), np.empty((0, 3)), np.zeros((2, 0, 2), dtype=np.int16)):
        assert_same(array, ex.get(ex.submit(identity, array), timeout=T))


def test_numpy_scalars_keep_their_type(ex):
    values = [np.int8(-3), np.uint64(2**63), np.float32(1.5), np.complex64(1j), np.bool_(True)]
    assert_same(values, ex.get(ex.submit(identity, values), timeout=T))


def test_task_receives_a_copy_of_its_argument(ex):
    items = ["original"]
    got = ex.get(ex.submit(append_and_return, items), timeout=T)
    assert got == ["original", "added in task"]
    assert items == ["original"]


def test_put_stores_a_snapshot_of_the_value(ex):
    items = [1, 2]
    ref = ex.put(items)
    items.append(3)
    assert ex.get(ref, timeout=T) == [1, 2]


# --------------------------------------------------------------------------- hypothesis
_dtypes = st.sampled_from(
    [np.int8, np.int32, np.int64, np.uint8, np.float32, np.float64, np.complex128, np.bool_]
)
_arrays = _dtypes.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
)
_numpy_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.floats(width=32).map(np.float32),
    st.floats().map(np.float64),
    st.booleans().map(np.bool_),
)
_python_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
)
_values = st.recursive(
    st.one_of(_python_scalars, _numpy_scalars, _arrays),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
    ),
    max_leaves=12,
)


@HYPOTHESIS
@given(value=_values)
def test_nested_containers_of_arrays_and_scalars_round_trip_through_put_and_get(ex, value):
    assert_same(value, ex.get(ex.put(value), timeout=T))


@HYPOTHESIS
@given(value=_values)
def test_nested_containers_of_arrays_and_scalars_round_trip_through_task_args_and_returns(
    ex, value
):
    assert_same(value, ex.get(ex.submit(identity, value), timeout=T))
    assert_same(value, ex.get(ex.submit(identity, x=[value]), timeout=T)[0])


@HYPOTHESIS
@given(value=_values)
def test_values_put_then_passed_as_arguments_round_trip(ex, value):
    assert_same(value, ex.get(ex.submit(identity, ex.put(value)), timeout=T))
