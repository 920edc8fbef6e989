"""The test tree itself: pytest imports test modules by basename (the default
"prepend" import mode), so two ``test_x.py`` in different directories stop the whole
run at collection time."""

from __future__ import annotations

import collections
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_modules_have_unique_names():
    names = collections.Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, k in names.items() if k > 1], names.most_common(3)
