"""The storage contract of the query-result cache."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["CacheBackend"]


@runtime_checkable
class CacheBackend(Protocol):
    """Where a ``QueryCache`` keeps its entries and the generation of each read model.

    A generation is an opaque string that names one state of a read model;
    ``invalidate`` moves a read model to a generation that was never used
    before, so every entry written under an older one stops matching. An
    implementer must guarantee:

    - ``read`` returns the current generation of every tag, giving a missing
      tag a fresh generation (never a value an earlier, forgotten generation
      had), so a tag lost to eviction or a restart cannot revive old entries;
    - ``write`` stores the entry only when every tag is still at the given
      generation, atomically with that check, and keeps it ``ttl`` seconds;
    - every process that shares the backend sees the same generations.
    """

    async def read(self, key: str, tags: Sequence[str]) -> tuple[bytes | None, list[str]]:
        """Return the entry under ``key`` (or ``None``) and the tags' generations."""
        ...

    async def write(
        self, key: str, entry: bytes, *, tags: Sequence[str], generations: Sequence[str], ttl: float
    ) -> bool:
        """Store ``entry`` for ``ttl`` seconds if the tags are still at ``generations``."""
        ...

    async def invalidate(self, tags: Iterable[str]) -> None:
        """Move each tag to a new generation, so that no entry written before matches it."""
        ...

    async def clear(self) -> None:
        """Drop every entry and generation of this backend."""
        ...
