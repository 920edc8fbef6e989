"""``RefBundle``: what flows between operators — blocks in the store, by reference,
each with its metadata.

An operator's output is a stream of bundles. A bundle holds one or more
``(block ObjectRef, BlockMetadata)`` pairs; the metadata was returned by the task
that made the block as a separate ref and fetched (it is small), so the driver
knows rows, bytes and schema without ever fetching a block.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fedexec

from .block import BlockMetadata

__all__ = ["RefBundle"]


@dataclass(frozen=True)
class RefBundle:
    """Blocks in the store and their metadata, in order.

    Attributes:
        blocks: ``((block_ref, metadata), ...)``.
    """

    blocks: tuple[tuple[fedexec.ObjectRef[Any], BlockMetadata], ...]

    def __iter__(self) -> Iterator[tuple[fedexec.ObjectRef[Any], BlockMetadata]]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def block_refs(self) -> list[fedexec.ObjectRef[Any]]:
        """The blocks' refs, in order."""
        return [ref for ref, _ in self.blocks]

    @property
    def metadata(self) -> list[BlockMetadata]:
        """The blocks' metadata, in order."""
        return [meta for _, meta in self.blocks]

    def num_rows(self) -> int | None:
        """Total rows (None if a block's count is unknown)."""
        total = 0
        for _, meta in self.blocks:
            if meta.num_rows is None:
                return None
            total += meta.num_rows
        return total

    def size_bytes(self) -> int:
        """Total bytes (unknown sizes count as 0)."""
        return sum(meta.size_bytes or 0 for _, meta in self.blocks)

    def schema(self) -> Any:
        """The schema of the first block that has one, else None."""
        for _, meta in self.blocks:
            if meta.schema is not None:
                return meta.schema
        return None

    @staticmethod
    def merge(bundles: list[RefBundle]) -> RefBundle:
        """One bundle with the blocks of ``bundles``, in order."""
        return RefBundle(tuple(pair for b in bundles for pair in b.blocks))
