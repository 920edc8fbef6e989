"""The ``native`` backend: fedexec's own runtime (node manager, worker processes,
shared-memory object store). See ``node.py`` for the architecture."""

from .client import NativeBackend

__all__ = ["NativeBackend"]
