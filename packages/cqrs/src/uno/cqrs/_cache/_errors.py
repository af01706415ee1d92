"""Errors of the query-result cache (defined in ``uno.cqrs.exceptions``)."""

from uno.cqrs.exceptions import (
    CacheSerializationFailed,
    CacheUnavailable,
    QueryCacheNotOpen,
    UncacheableQuery,
)

__all__ = ["CacheSerializationFailed", "CacheUnavailable", "QueryCacheNotOpen", "UncacheableQuery"]
