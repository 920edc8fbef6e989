"""``Checkpoint``: a directory of files a trial saved, and moving one between nodes.

A checkpoint is a path. On the driver's node trials write their checkpoints
straight into the trial directory; a trial on another node sends them as a tar
archive (:func:`pack`), and gets the one to resume from the same way
(:func:`unpack`) — so no shared file system is needed.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = ["Checkpoint"]


class Checkpoint:
    """A directory holding a checkpoint (as Ray's ``tune.Checkpoint``).

    Attributes:
        path: the directory.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """A checkpoint of the files in ``path`` (which must exist)."""
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Checkpoint.from_directory: {os.fspath(path)!r} is not a "
                                    "directory")
        return cls(path)

    def to_directory(self, path: str | os.PathLike[str] | None = None) -> str:
        """Copy the checkpoint's files into ``path`` (a new temporary directory if
        None) and return that directory."""
        dest = os.fspath(path) if path is not None else tempfile.mkdtemp(prefix="checkpoint_")
        shutil.copytree(self.path, dest, dirs_exist_ok=True)
        return dest

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """``with ckpt.as_directory() as d:`` — the checkpoint's files at ``d``
        (the checkpoint's own directory: read, do not change)."""
        yield self.path

    def __fspath__(self) -> str:
        return self.path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"Checkpoint(path={self.path!r})"


def pack(path: str) -> bytes:
    """The directory ``path`` as an uncompressed tar archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname=".")
    return buffer.getvalue()


def unpack(data: bytes, dest: str) -> str:
    """Extract an archive made by :func:`pack` into ``dest``; returns ``dest``."""
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else (
            tar.extractall(dest))
    return dest


def locate(where: Any, scratch: str | None = None) -> str | None:
    """A local directory for a checkpoint sent as ``("path", p)`` or ``("bytes", b)``."""
    if where is None:
        return None
    kind, value = where
    if kind == "path":
        return str(value)
    return unpack(value, tempfile.mkdtemp(prefix="checkpoint_", dir=scratch))
