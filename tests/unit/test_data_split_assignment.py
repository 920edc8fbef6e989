"""The block assignment of ``streaming_split`` (its ``_Pass``), without processes:
for any block sizes, every row goes to exactly one consumer, in the run's order,
with the row counts the ``equal``/``drop_remainder`` options promise."""

from hypothesis import given, settings
from hypothesis import strategies as st

from fedexec.data.streaming_split import _Pass

blocks = st.lists(st.integers(min_value=0, max_value=40), max_size=30)


def assign(sizes, n, equal, drop_remainder=True):
    """Run a pass over blocks of ``sizes`` rows; each consumer's rows as
    (block, row) pairs, taking pieces off its queue the way consumers do."""
    p = _Pass(n, equal, drop_remainder)
    for b, rows in enumerate(sizes):
        p.add(b, rows)
    p.finish()
    return [[(ref, row) for ref, lo, hi, _ in q for row in range(lo, hi)] for q in p.queues]


def every_row(sizes):
    return {(b, r) for b, rows in enumerate(sizes) for r in range(rows)}


@settings(max_examples=300, deadline=None)
@given(blocks, st.integers(min_value=1, max_value=8))
def test_equal_without_dropping_covers_every_row_once_within_one_row(sizes, n):
    got = assign(sizes, n, equal=True, drop_remainder=False)
    flat = [piece for rows in got for piece in rows]
    assert len(flat) == len(set(flat)) and set(flat) == every_row(sizes)
    total = sum(sizes)
    assert sorted((len(rows) for rows in got), reverse=True) == (
        [total // n + 1] * (total % n) + [total // n] * (n - total % n))


@settings(max_examples=300, deadline=None)
@given(blocks, st.integers(min_value=1, max_value=8))
def test_equal_gives_exactly_total_over_n_and_drops_fewer_than_n(sizes, n):
    got = assign(sizes, n, equal=True)
    flat = [piece for rows in got for piece in rows]
    assert len(flat) == len(set(flat)) and set(flat) <= every_row(sizes)
    assert [len(rows) for rows in got] == [sum(sizes) // n] * n


@settings(max_examples=200, deadline=None)
@given(blocks, st.integers(min_value=1, max_value=8))
def test_unequal_gives_whole_blocks_and_every_row_once(sizes, n):
    got = assign(sizes, n, equal=False)
    flat = [piece for rows in got for piece in rows]
    assert len(flat) == len(set(flat)) and set(flat) == every_row(sizes)
    for rows in got:
        assert rows == sorted(rows)  # each consumer sees the run's order
