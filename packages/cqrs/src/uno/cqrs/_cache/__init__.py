"""The query-result cache: get-or-compute by query, with a TTL, invalidated by read model."""

from uno.cqrs._cache._backend import CacheBackend
from uno.cqrs._cache._codec import query_cache_key
from uno.cqrs._cache._memory import InMemoryCacheBackend
from uno.cqrs._cache._query_cache import QueryCache
from uno.cqrs._cache._redis import RedisCacheBackend
from uno.cqrs.exceptions import (
    CacheSerializationFailed,
    CacheUnavailable,
    QueryCacheNotOpen,
    UncacheableQuery,
)

__all__ = [
    "CacheBackend",
    "CacheSerializationFailed",
    "CacheUnavailable",
    "InMemoryCacheBackend",
    "QueryCache",
    "QueryCacheNotOpen",
    "RedisCacheBackend",
    "UncacheableQuery",
    "query_cache_key",
]
