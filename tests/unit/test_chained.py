"""The worker's kept results for chained leased tasks (``chained.MadeHere``)."""

from __future__ import annotations

from fedexec.backends.native.chained import MadeHere, failed_dep
from fedexec.backends.native.protocol import ErrorKind, Kind


def inline(rid: str, size: int = 1) -> list:
    return [rid, Kind.INLINE, b"x" * size, [], []]


def test_a_dep_is_an_entry_sent_with_the_task_or_a_result_made_here():
    made = MadeHere()
    made.add([inline("a"), ["b", Kind.SHM, "/dev/shm/b", 10, []]])
    sent = inline("c")
    assert made.resolve(["a", sent, "b"]) == [inline("a"), sent,
                                               ["b", Kind.SHM, "/dev/shm/b", 10, []]]
    assert made.resolve(["a", "nope"]) is None  # not kept: the task goes back


def test_the_oldest_go_past_the_count_or_the_bytes():
    made = MadeHere(max_kept=3, max_bytes=10_000)
    made.add([inline(str(i)) for i in range(5)])
    assert len(made) == 3 and made.resolve(["1"]) is None and made.resolve(["2", "4"])
    made.add([inline("big", 6_000), inline("bigger", 6_000)])
    assert made.resolve(["big"]) is None and made.resolve(["bigger"]) is not None
    made.add([inline("bigger", 1)])  # the same id again: counted once
    made.add([inline(str(i)) for i in range(10, 12)])
    assert made.resolve(["bigger", "10", "11"]) is not None


def test_the_first_failed_dep_is_what_the_task_fails_with():
    failed = ["f", Kind.FAILED, ErrorKind.CANCELLED, "cancelled"]
    error = ["e", Kind.ERROR, b"pickled"]
    assert failed_dep([inline("a"), failed, error]) is failed
    assert failed_dep([error, failed]) is error
    assert failed_dep([inline("a")]) is None
