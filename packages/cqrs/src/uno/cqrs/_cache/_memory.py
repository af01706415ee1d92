"""The in-process query cache backend: bounded, least recently used entries go first."""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

__all__ = ["InMemoryCacheBackend"]


class InMemoryCacheBackend:
    """Keep cache entries in this process, at most ``max_entries``, evicting the least recent.

    Generations are counters that only grow and are never evicted, so an
    invalidation holds for the life of the backend.

    Args:
        max_entries: the bound; writing one more entry evicts the least recently used.
        clock: seconds as a float, monotonic (inject one to test expiry without waiting).
    """

    def __init__(
        self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._generations: dict[str, str] = {}
        self._counter = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"InMemoryCacheBackend(max_entries={self.max_entries})"

    async def read(self, key: str, tags: Sequence[str]) -> tuple[bytes | None, list[str]]:
        generations = [self._generation(tag) for tag in tags]
        stored = self._entries.get(key)
        if stored is None:
            return None, generations
        entry, expires = stored
        if self._clock() >= expires:
            del self._entries[key]
            return None, generations
        self._entries.move_to_end(key)
        return entry, generations

    async def write(
        self, key: str, entry: bytes, *, tags: Sequence[str], generations: Sequence[str], ttl: float
    ) -> bool:
        if [self._generation(tag) for tag in tags] != list(generations):
            return False
        self._entries[key] = (entry, self._clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True

    async def invalidate(self, tags: Iterable[str]) -> None:
        for tag in tags:
            self._generations[tag] = str(next(self._counter))

    async def clear(self) -> None:
        self._entries.clear()
        self._generations.clear()

    def _generation(self, tag: str) -> str:
        generation = self._generations.get(tag)
        if generation is None:
            generation = self._generations[tag] = str(next(self._counter))
        return generation
