"""Where idempotency keys live: the store protocol, a claim's outcome, and the in-memory store.

A key moves through three states: absent, *pending* (a send claimed it and
is running the handler, under a lease it renews) and *done* (the result is
kept for the retention time). Every state ends at ``expires_at``: a pending
key whose lease ran out (its process died) can be claimed again, and a done
key is forgotten after its retention.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, Self, runtime_checkable

import anyio

__all__ = ["Claim", "IdempotencyStore", "InMemoryIdempotencyStore"]


@dataclass(frozen=True, slots=True)
class Claim:
    """What ``IdempotencyStore.claim`` found.

    ``status`` is ``"claimed"`` (this send owns the key: run the handler, then
    ``complete`` or ``release`` it with ``token``), ``"pending"`` (another send
    is running it) or ``"done"`` (``result`` holds the first send's encoded
    result). ``fingerprint`` is the one stored with the key.
    """

    status: Literal["claimed", "pending", "done"]
    fingerprint: str
    token: str = ""
    result: bytes | None = None


@runtime_checkable
class IdempotencyStore(Protocol):
    """Keeps idempotency keys; every method is atomic, also between processes (SQL stores)."""

    backend: str
    """A short name for messages and logs (``memory``, ``sqlite``, ``postgresql``)."""

    async def claim(self, key: str, fingerprint: str, token: str, lease: float) -> Claim:
        """Take ``key`` for ``lease`` seconds if it is absent or expired; else say what holds it."""
        ...

    async def renew(self, key: str, token: str, lease: float) -> bool:
        """Extend the lease of a pending key this send holds; ``False`` when it lost the key."""
        ...

    async def complete(self, key: str, token: str, result: bytes, retention: float) -> bool:
        """Keep ``result`` for ``retention`` seconds; ``False`` when the send lost the key."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Forget a pending key this send holds (its handler failed), so it can run again."""
        ...

    async def purge(self) -> int:
        """Delete the expired keys; return how many."""
        ...

    async def close(self) -> None:
        """Release the store's connections."""
        ...


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    token: str
    result: bytes | None
    expires_at: float


class InMemoryIdempotencyStore:
    """Keys in a dict of this process: for tests and single-process services.

    ``clock`` (``time.monotonic`` by default) tells the time, for tests that
    move it. Expired keys are swept on claims, at most once per ``purge_every``
    seconds.
    """

    backend = "memory"

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, purge_every: float = 60.0
    ) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = anyio.Lock()
        self._purge_every = purge_every
        self._purged_at = clock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __len__(self) -> int:
        return len(self._entries)

    async def claim(self, key: str, fingerprint: str, token: str, lease: float) -> Claim:
        async with self._lock:
            now = self._clock()
            if now - self._purged_at >= self._purge_every:
                self._sweep(now)
            entry = self._entries.get(key)
            if entry is None or entry.expires_at <= now:
                self._entries[key] = _Entry(fingerprint, token, None, now + lease)
                return Claim("claimed", fingerprint, token)
            if entry.result is None:
                return Claim("pending", entry.fingerprint)
            return Claim("done", entry.fingerprint, result=entry.result)

    def _held(self, key: str, token: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None or entry.token != token or entry.result is not None:
            return None
        return entry

    async def renew(self, key: str, token: str, lease: float) -> bool:
        async with self._lock:
            entry = self._held(key, token)
            if entry is None:
                return False
            entry.expires_at = self._clock() + lease
            return True

    async def complete(self, key: str, token: str, result: bytes, retention: float) -> bool:
        async with self._lock:
            entry = self._held(key, token)
            if entry is None:
                return False
            entry.result, entry.expires_at = result, self._clock() + retention
            return True

    async def release(self, key: str, token: str) -> None:
        async with self._lock:
            if self._held(key, token) is not None:
                del self._entries[key]

    def _sweep(self, now: float) -> int:
        expired = [key for key, entry in self._entries.items() if entry.expires_at <= now]
        for key in expired:
            del self._entries[key]
        self._purged_at = now
        return len(expired)

    async def purge(self) -> int:
        async with self._lock:
            return self._sweep(self._clock())

    async def close(self) -> None:
        return None
