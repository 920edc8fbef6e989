"""Unpickling for code that runs on the cluster (as ``ray.util.serialization``).

``loads`` is ``pickle.loads`` (it reads what ``cloudpickle.dumps`` wrote) made safe
while other threads import: a task or actor thread that unpickles a function from
a package another thread is still importing (``pkg/__init__`` half run) can make
plain unpickling fail with ``KeyError: 'pkg'`` or a circular ``ImportError``.
Libraries that ship their own pickled code (a dataset's stages, a trainable) load
it with this, as the runtime loads tasks.
"""

from __future__ import annotations

from typing import Any

from .. import serialization as _serialization

__all__ = ["loads"]


def loads(data: bytes | memoryview) -> Any:
    """Unpickle ``data`` (made by ``pickle``/``cloudpickle.dumps``), importing each
    pickled global's parent packages first, so concurrent imports cannot break it."""
    return _serialization.loads(data)
