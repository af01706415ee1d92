"""Command and query buses, read models, and what serves queries fast, for uno.

Commands and queries are pydantic models (``Command``, ``Query``); each has
exactly one handler, a function or class registered on a ``BusBuilder``
(or found by ``scan``), whose ``build()`` checks them all and composes the
pipeline behaviours around them (validation, authorization, logging,
tracing, unit of work, retry, idempotency keys, timeout). On the read side, ``DataLoader``
batches and memoizes the loads of one request, and ``QueryCache`` keeps
query results with a TTL, invalidated when a read model they depend on
changes (``ReadModelChanges``), in process or on Redis.
"""

from uno.cqrs._behaviours import (
    AuthorizationBehaviour,
    AuthorizationPolicy,
    LoggingBehaviour,
    RetryBehaviour,
    Rule,
    TimeoutBehaviour,
    TracingBehaviour,
    UnitOfWorkBehaviour,
    UnitOfWorkLike,
    ValidationBehaviour,
    field_errors,
    parse_message,
)
from uno.cqrs._bus import Behaviour, BusBuilder, Buses, CommandBus, Next, QueryBus
from uno.cqrs._cache import (
    CacheBackend,
    InMemoryCacheBackend,
    QueryCache,
    RedisCacheBackend,
    query_cache_key,
)
from uno.cqrs._changes import ReadModelChanges
from uno.cqrs._dataloader import DataLoader
from uno.cqrs._handlers import handler
from uno.cqrs._messages import (
    Command,
    Message,
    MessageContext,
    Principal,
    Query,
    ServiceContainer,
    ServiceResolver,
)
from uno.cqrs._result import Err, Ok, Result
from uno.cqrs.exceptions import (
    BatchLoadMismatch,
    BusConfigurationError,
    CacheSerializationFailed,
    CacheUnavailable,
    CqrsError,
    DuplicateHandler,
    FieldError,
    HandlerNotFound,
    IdempotencyError,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotencyStoreUnavailable,
    LoaderKeyMissing,
    MessageTimeout,
    MissingHandlerDependency,
    NotAuthenticated,
    NotAuthorized,
    QueryCacheNotOpen,
    UncacheableQuery,
    ValidationFailed,
)
from uno.cqrs.idempotency import (
    REPLAYED,
    Claim,
    IdempotencyBehaviour,
    IdempotencyStore,
    InMemoryIdempotencyStore,
    SQLiteIdempotencyStore,
    open_idempotency_store,
)

__all__ = [
    "REPLAYED",
    "AuthorizationBehaviour",
    "AuthorizationPolicy",
    "BatchLoadMismatch",
    "Behaviour",
    "BusBuilder",
    "BusConfigurationError",
    "Buses",
    "CacheBackend",
    "CacheSerializationFailed",
    "CacheUnavailable",
    "Claim",
    "Command",
    "CommandBus",
    "CqrsError",
    "DataLoader",
    "DuplicateHandler",
    "Err",
    "FieldError",
    "HandlerNotFound",
    "IdempotencyBehaviour",
    "IdempotencyError",
    "IdempotencyKeyInProgress",
    "IdempotencyKeyReused",
    "IdempotencyStore",
    "IdempotencyStoreUnavailable",
    "InMemoryCacheBackend",
    "InMemoryIdempotencyStore",
    "LoaderKeyMissing",
    "LoggingBehaviour",
    "Message",
    "MessageContext",
    "MessageTimeout",
    "MissingHandlerDependency",
    "Next",
    "NotAuthenticated",
    "NotAuthorized",
    "Ok",
    "Principal",
    "Query",
    "QueryBus",
    "QueryCache",
    "QueryCacheNotOpen",
    "ReadModelChanges",
    "RedisCacheBackend",
    "Result",
    "RetryBehaviour",
    "Rule",
    "SQLiteIdempotencyStore",
    "ServiceContainer",
    "ServiceResolver",
    "TimeoutBehaviour",
    "TracingBehaviour",
    "UncacheableQuery",
    "UnitOfWorkBehaviour",
    "UnitOfWorkLike",
    "ValidationBehaviour",
    "ValidationFailed",
    "field_errors",
    "handler",
    "open_idempotency_store",
    "parse_message",
    "query_cache_key",
]
