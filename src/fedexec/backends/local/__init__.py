"""The ``local`` backend: everything in the calling process, on threads."""

from ._backend import LocalBackend

__all__ = ["LocalBackend"]
