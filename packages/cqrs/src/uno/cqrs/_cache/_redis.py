"""The query cache backend on Redis: entries expire by Redis TTL, generations are shared keys.

Every process that points at the same Redis and prefix shares the entries and
the generations, so an invalidation made by one process reaches all of them on
their next read, with no message to miss. Keys carry the prefix as a hash tag
(``{prefix}:e:...``, ``{prefix}:g:...``), so on Redis Cluster one cache lives
in one slot and its scripts run atomically.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from uno.cqrs.exceptions import CacheUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisCacheBackend"]

# KEYS: the entry, then one generation key per tag. ARGV[1]: a fresh generation for
# tags that have none (never seen, evicted or flushed), so old entries cannot match.
_READ = """
local result = {redis.call('GET', KEYS[1]) or false}
for i = 2, #KEYS do
  local generation = redis.call('GET', KEYS[i])
  if not generation then
    generation = ARGV[1] .. ':' .. (i - 1)
    redis.call('SET', KEYS[i], generation)
  end
  result[#result + 1] = generation
end
return result
"""

# KEYS: the entry, then the generation keys. ARGV: ttl in ms, the entry, the generations.
_WRITE = """
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[i + 1] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return 1
"""

_SCAN_BATCH = 500


class RedisCacheBackend:
    """Keep query cache entries in Redis under ``prefix``, shared by every process that uses it.

    Make it with ``RedisCacheBackend.from_url(url, prefix=...)`` (it then owns and
    closes its connection pool), or pass a ``redis.asyncio.Redis`` client you
    close yourself. Needs ``pip install 'uno-cqrs[redis]'``.

    Args:
        client: a ``redis.asyncio.Redis`` client (bytes responses, the default).
        prefix: names this cache in Redis; caches that share a prefix share entries.
    """

    def __init__(self, client: Redis, *, prefix: str, owns_client: bool = False) -> None:
        from redis.exceptions import RedisError  # noqa: PLC0415 - redis is an optional extra

        if not prefix or any(char in prefix for char in "{}*?[]"):
            raise ValueError(f"prefix must be non-empty without {{}}*?[], not {prefix!r}")
        self.prefix = prefix
        self._client = client
        self._owns_client = owns_client
        self._driver_errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._read = client.register_script(_READ)
        self._write = client.register_script(_WRITE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str) -> Self:
        """Connect to Redis at ``url`` (``redis://host:port/db``); ``aclose`` closes it."""
        try:
            from redis.asyncio import Redis  # noqa: PLC0415 - redis is an optional extra
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "RedisCacheBackend needs redis: `pip install 'uno-cqrs[redis]'`", name=exc.name
            ) from exc
        return cls(Redis.from_url(url), prefix=prefix, owns_client=True)

    def __repr__(self) -> str:
        return f"RedisCacheBackend(prefix={self.prefix!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool when this backend made it (``from_url``)."""
        if self._owns_client:
            await self._client.aclose()

    async def read(self, key: str, tags: Sequence[str]) -> tuple[bytes | None, list[str]]:
        keys = [self._entry_key(key), *map(self._generation_key, tags)]
        found: list[Any] = await self._call(self._read(keys=keys, args=[uuid.uuid4().hex]))
        entry = found[0] if isinstance(found[0], bytes) else None
        return entry, [_text(generation) for generation in found[1:]]

    async def write(
        self, key: str, entry: bytes, *, tags: Sequence[str], generations: Sequence[str], ttl: float
    ) -> bool:
        keys = [self._entry_key(key), *map(self._generation_key, tags)]
        ttl_ms = max(1, round(ttl * 1000))
        stored = await self._call(self._write(keys=keys, args=[ttl_ms, entry, *generations]))
        return bool(stored)

    async def invalidate(self, tags: Iterable[str]) -> None:
        fresh = uuid.uuid4().hex
        mapping = {self._generation_key(tag): f"{fresh}:{i}" for i, tag in enumerate(tags)}
        if mapping:
            await self._call(self._client.mset(mapping))

    async def clear(self) -> None:
        pattern = f"{{{self.prefix}}}:*"

        async def scan_and_delete() -> None:
            batch: list[bytes] = []
            async for name in self._client.scan_iter(match=pattern, count=_SCAN_BATCH):
                batch.append(name)
                if len(batch) >= _SCAN_BATCH:
                    await self._client.delete(*batch)
                    batch.clear()
            if batch:
                await self._client.delete(*batch)

        await self._call(scan_and_delete())

    def _entry_key(self, key: str) -> str:
        return f"{{{self.prefix}}}:e:{key}"

    def _generation_key(self, tag: str) -> str:
        return f"{{{self.prefix}}}:g:{tag}"

    async def _call(self, operation: Any) -> Any:
        try:
            return await operation
        except self._driver_errors as exc:
            raise CacheUnavailable(
                f"Redis (prefix {self.prefix!r})", f"{type(exc).__name__}: {exc}"
            ) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
