"""Property tests (hypothesis): refs and actor handles nested in containers survive
round trips, and ``wait``/``as_completed`` agree with which refs are done."""

from __future__ import annotations

import concurrent.futures as cf
import os
import tempfile

import numpy as np
import pytest
from _support import block, identity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedexec

T = 30

# Each test runs up to 25 examples, some with several blocked tasks: on a slow
# backend (Spark) on a busy 2-core machine that can pass the suite's 120 s default.
pytestmark = pytest.mark.timeout(480)

PROPS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Leaves are ("value", x) or ("ref", x): the latter is replaced by ex.put(x).
_leaf_values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.text(max_size=8),
    st.builds(lambda n: np.arange(n, dtype=np.int32), st.integers(0, 50)),
)
_leaves = st.tuples(st.sampled_from(["value", "ref"]), _leaf_values)
_shapes = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=3), children, max_size=3),
    ),
    max_leaves=10,
)


def _build(shape, ex, originals):
    """The structure to send (refs put in place) and, in ``originals``, ref -> value."""
    if isinstance(shape, tuple):
        kind, value = shape
        if kind == "ref":
            ref = ex.put(value)
            originals[ref.id] = value
            return ref
        return value
    if isinstance(shape, list):
        return [_build(s, ex, originals) for s in shape]
    return {k: _build(v, ex, originals) for k, v in shape.items()}


def _check(sent, got, ex, originals):
    if isinstance(sent, fedexec.ObjectRef):
        assert isinstance(got, fedexec.ObjectRef) and got.id == sent.id
        value = ex.get(got, timeout=T)
        expected = originals[sent.id]
        if isinstance(expected, np.ndarray):
            np.testing.assert_array_equal(value, expected)
        else:
            assert value == expected
    elif isinstance(sent, list):
        assert isinstance(got, list) and len(got) == len(sent)
        for a, b in zip(sent, got):
            _check(a, b, ex, originals)
    elif isinstance(sent, dict):
        assert list(got) == list(sent)
        for k in sent:
            _check(sent[k], got[k], ex, originals)
    elif isinstance(sent, np.ndarray):
        np.testing.assert_array_equal(got, sent)
    else:
        assert got == sent


@PROPS
@given(shape=_shapes)
def test_refs_nested_in_containers_round_trip_through_tasks_and_put(ex, shape):
    originals: dict[str, object] = {}
    sent = [_build(shape, ex, originals)]  # nested: a ref passed directly would resolve
    _check(sent, ex.get(ex.submit(identity, sent), timeout=T), ex, originals)
    _check(sent, ex.get(ex.put(sent), timeout=T), ex, originals)


class Box:
    def __init__(self, value):
        self.value = value

    def read(self):
        return self.value


def read_boxes(handles):
    return [fedexec.get(h.read.remote(), timeout=T) for h in handles["boxes"]]


@pytest.mark.requires("actors")
@PROPS
@given(values=st.lists(st.integers(-1000, 1000), min_size=1, max_size=3))
def test_actor_handles_nested_in_containers_work_inside_tasks(ex, values):
    boxes = [ex.actor(Box, v) for v in values]
    assert ex.get(ex.submit(read_boxes, {"boxes": boxes}), timeout=T) == values
    back = ex.get(ex.put({"boxes": boxes}), timeout=T)["boxes"]
    assert [ex.get(h.read.remote(), timeout=T) for h in back] == values
    for box in boxes:
        ex.kill(box)


@PROPS
@given(pattern=st.lists(st.booleans(), min_size=1, max_size=6), data=st.data())
def test_wait_returns_exactly_the_first_ready_refs_in_input_order(ex, pattern, data):
    # True: an object that exists now; False: a task blocked on a gate.
    with tempfile.TemporaryDirectory() as gate_dir:
        release = os.path.join(gate_dir, "open")
        refs = [ex.put(i) if ready else ex.submit(block, release, i)
                for i, ready in enumerate(pattern)]
        n_ready = sum(pattern)
        try:
            if n_ready:
                k = data.draw(st.integers(1, n_ready))
                ready, not_ready = ex.wait(refs, num_returns=k, timeout=T)
                assert ready == [r for r, p in zip(refs, pattern) if p][:k]
                assert not_ready == [r for r in refs if r not in ready]
            ready, not_ready = ex.wait(refs, num_returns=len(refs), timeout=0.05)
            assert ready == [r for r, p in zip(refs, pattern) if p]
            assert all(not r.done() for r in not_ready)
        finally:
            open(release, "w").close()
            # Even when Hypothesis stops the example early (an invalid draw), the
            # tasks must see the gate before its directory goes, or they hold their
            # CPUs until block() times out and later examples wait behind them.
            ex.wait(refs, num_returns=len(refs), timeout=T)
        assert ex.get(refs, timeout=T) == list(range(len(pattern)))


@PROPS
@given(pattern=st.lists(st.booleans(), min_size=1, max_size=6))
def test_as_completed_yields_every_ref_once_and_only_when_done(ex, pattern):
    with tempfile.TemporaryDirectory() as gate_dir:
        release = os.path.join(gate_dir, "open")
        refs = [ex.put(i) if ready else ex.submit(block, release, i)
                for i, ready in enumerate(pattern)]
        seen = []
        it = cf.as_completed(refs, timeout=T)
        try:
            for _ in range(sum(pattern)):  # the ready ones come first, whatever order
                ref = next(it)
                assert ref.done()
                seen.append(ref)
            assert {r.id for r in seen} == {r.id for r, p in zip(refs, pattern) if p}
        finally:
            open(release, "w").close()
            ex.wait(refs, num_returns=len(refs), timeout=T)  # see the test above
        for ref in it:
            assert ref.done()
            seen.append(ref)
        assert sorted(r.id for r in seen) == sorted(r.id for r in refs)
