"""Errors raised by uno.cqrs.

Every error carries a stable ``code`` (listed in docs/errors.md) and a message
that says what happened and what to do::

    CqrsError                           cqrs.error
    ├── BusConfigurationError           cqrs.invalid_configuration
    │   ├── HandlerNotFound             cqrs.no_handler
    │   ├── DuplicateHandler            cqrs.duplicate_handler
    │   └── MissingHandlerDependency    cqrs.missing_dependency
    ├── ValidationFailed                cqrs.validation_failed
    ├── NotAuthenticated                cqrs.not_authenticated
    ├── NotAuthorized                   cqrs.not_authorized
    ├── MessageTimeout                  cqrs.timeout
    ├── IdempotencyError                cqrs.idempotency_error
    │   ├── IdempotencyKeyReused        cqrs.idempotency_key_reused
    │   ├── IdempotencyKeyInProgress    cqrs.idempotency_key_in_progress
    │   └── IdempotencyStoreUnavailable cqrs.idempotency_store_unavailable
    ├── LoaderKeyMissing                cqrs.loader_key_missing
    ├── BatchLoadMismatch               cqrs.batch_load_mismatch
    ├── UncacheableQuery                cqrs.uncacheable_query
    ├── CacheSerializationFailed        cqrs.cache_serialization_failed
    ├── CacheUnavailable                cqrs.cache_unavailable
    ├── QueryCacheNotOpen               cqrs.query_cache_not_open
    └── ReadModelError                  cqrs.read_model_error
        ├── DocumentNotFound            cqrs.document_not_found
        ├── DuplicateDocument           cqrs.duplicate_document
        ├── StaleDocumentVersion        cqrs.stale_document_version
        ├── InvalidDocument             cqrs.invalid_document
        ├── InvalidSpecification        cqrs.invalid_specification
        ├── InvalidQuery                cqrs.invalid_query
        │   └── PageSizeTooLarge        cqrs.page_size_too_large
        ├── InvalidCursor               cqrs.invalid_cursor
        ├── ReadModelConfigurationError cqrs.read_model_configuration
        │   └── UnknownReadModelBackend cqrs.unknown_read_model_backend
        ├── ReadModelUnavailable        cqrs.read_model_unavailable
        └── ReadModelNotMigrated        cqrs.read_model_not_migrated

"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "BatchLoadMismatch",
    "BusConfigurationError",
    "CacheSerializationFailed",
    "CacheUnavailable",
    "CqrsError",
    "DocumentNotFound",
    "DuplicateDocument",
    "DuplicateHandler",
    "FieldError",
    "HandlerNotFound",
    "IdempotencyError",
    "IdempotencyKeyInProgress",
    "IdempotencyKeyReused",
    "IdempotencyStoreUnavailable",
    "InvalidCursor",
    "InvalidDocument",
    "InvalidQuery",
    "InvalidSpecification",
    "LoaderKeyMissing",
    "MessageTimeout",
    "MissingHandlerDependency",
    "NotAuthenticated",
    "NotAuthorized",
    "PageSizeTooLarge",
    "QueryCacheNotOpen",
    "ReadModelConfigurationError",
    "ReadModelError",
    "ReadModelNotMigrated",
    "ReadModelUnavailable",
    "StaleDocumentVersion",
    "UncacheableQuery",
    "UnknownReadModelBackend",
    "ValidationFailed",
]


class CqrsError(Exception):
    """The root of every uno.cqrs error."""

    code: ClassVar[str] = "cqrs.error"


class LoaderKeyMissing(CqrsError, LookupError):
    """The batch function returned no value for a key, and the loader refuses missing keys."""

    code = "cqrs.loader_key_missing"

    def __init__(self, loader: str, key: object) -> None:
        self.loader = loader
        self.key = key
        super().__init__(
            f"The data loader {loader!r} found nothing for key {key!r}. Check that the key "
            "exists, or make the loader with missing='none' to get None for missing keys."
        )


class BatchLoadMismatch(CqrsError):
    """The batch function returned a sequence whose length differs from the keys it was given."""

    code = "cqrs.batch_load_mismatch"

    def __init__(self, loader: str, keys: int, values: int) -> None:
        self.loader = loader
        self.keys = keys
        self.values = values
        super().__init__(
            f"The batch function of data loader {loader!r} returned {values} values for "
            f"{keys} keys. Return one value per key, in key order (None or an exception for "
            "a key without a value), or return a mapping from key to value."
        )


class UncacheableQuery(CqrsError, TypeError):
    """A query cannot be turned into a cache key: it is not a pydantic model or a msgspec struct."""

    code = "cqrs.uncacheable_query"

    def __init__(self, query: object, reason: str) -> None:
        self.query_type = type(query).__qualname__
        super().__init__(
            f"A {self.query_type} cannot be a query cache key: {reason}. Cache queries that are "
            "pydantic models or msgspec structs whose fields encode to JSON."
        )


class CacheSerializationFailed(CqrsError):
    """A query result could not be encoded for the cache, or not decoded as its result type."""

    code = "cqrs.cache_serialization_failed"

    def __init__(self, query_type: str, reason: str) -> None:
        self.query_type = query_type
        super().__init__(
            f"The result of {query_type} cannot go through the query cache: {reason}. Return "
            "types that msgspec encodes (structs, dataclasses, builtins, datetime, UUID, "
            "Decimal) or pydantic models, and pass result_type= to get them back typed."
        )


class CacheUnavailable(CqrsError):
    """The cache's store (Redis) did not answer; the query was not served from or into it."""

    code = "cqrs.cache_unavailable"

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        super().__init__(
            f"The query cache at {where} is unavailable ({reason}). Check that Redis is up and "
            "reachable, then retry; nothing stale was served."
        )


class QueryCacheNotOpen(CqrsError, RuntimeError):
    """The cache was used outside its ``async with`` block."""

    code = "cqrs.query_cache_not_open"

    def __init__(self) -> None:
        super().__init__(
            "The QueryCache is not open. Use it inside `async with QueryCache(...) as cache:` "
            "(for instance in the application's lifespan), which starts its invalidation."
        )


class BusConfigurationError(CqrsError, ValueError):
    """The buses cannot be built as registered: raised by ``build()``, never by a send."""

    code: ClassVar[str] = "cqrs.invalid_configuration"


class HandlerNotFound(BusConfigurationError, LookupError):
    """A message type has no handler (at build), or a sent message's type is unknown."""

    code: ClassVar[str] = "cqrs.no_handler"

    def __init__(self, message_type: str, *, known: Sequence[str] = ()) -> None:
        self.message_type = message_type
        self.known = tuple(known)
        listed = ", ".join(self.known[:10]) or "none"
        super().__init__(
            f"No handler for {message_type}. Register one with @handler (or "
            f"builder.register(fn)) and import its module before build(); handled: {listed}."
        )


class DuplicateHandler(BusConfigurationError):
    """Two handlers take the same message type; a command or query has exactly one."""

    code: ClassVar[str] = "cqrs.duplicate_handler"

    def __init__(self, message_type: str, first: str, second: str) -> None:
        self.message_type = message_type
        self.handlers = (first, second)
        super().__init__(
            f"{message_type} has two handlers, {first} and {second}. Keep one: a message "
            "has exactly one handler (react to events with an event handler instead)."
        )


class MissingHandlerDependency(BusConfigurationError):
    """A handler needs a service that the container does not provide."""

    code: ClassVar[str] = "cqrs.missing_dependency"

    def __init__(self, handler: str, parameter: str, service: str) -> None:
        self.handler = handler
        self.parameter = parameter
        self.service = service
        super().__init__(
            f"{handler} needs {parameter}: {service}, which the container does not provide. "
            "Register it in the container, or give the parameter a default."
        )


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a message: where, what, and a stable kind."""

    path: tuple[str | int, ...]
    message: str
    kind: str

    @property
    def location(self) -> str:
        """The path as text: ``"lines.2.amount"``; ``""`` for the whole message."""
        return ".".join(str(part) for part in self.path)


class ValidationFailed(CqrsError, ValueError):
    """A message (or the data for one) is not valid: every problem, with its field path."""

    code: ClassVar[str] = "cqrs.validation_failed"

    def __init__(self, message_type: str, errors: Sequence[FieldError]) -> None:
        self.message_type = message_type
        self.errors = tuple(errors)
        shown = "; ".join(f"{e.location or '(message)'}: {e.message}" for e in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(
            f"{message_type} is not valid: {shown}{more}. Fix these fields and send it again."
        )


class NotAuthenticated(CqrsError, PermissionError):
    """A message that needs a principal was sent without one."""

    code: ClassVar[str] = "cqrs.not_authenticated"

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type
        super().__init__(
            f"{message_type} needs an authenticated principal; none was given. Send it with "
            "MessageContext(principal=...)."
        )


class NotAuthorized(CqrsError, PermissionError):
    """The principal may not send this message: a role or permission lacks, or a policy said no."""

    code: ClassVar[str] = "cqrs.not_authorized"

    def __init__(self, message_type: str, principal: str, reason: str) -> None:
        self.message_type = message_type
        self.principal = principal
        self.reason = reason
        super().__init__(
            f"{principal} may not send {message_type}: {reason}. Grant what is missing, or "
            "send it as a principal that has it."
        )


class MessageTimeout(CqrsError, TimeoutError):
    """A handler took longer than its message's timeout; it was cancelled."""

    code: ClassVar[str] = "cqrs.timeout"

    def __init__(self, message_type: str, seconds: float) -> None:
        self.message_type = message_type
        self.seconds = seconds
        super().__init__(
            f"{message_type} took longer than {seconds:g} s and was cancelled (its unit of "
            "work rolled back). Retry later, or raise the message's timeout."
        )


class IdempotencyError(CqrsError):
    """An idempotency key could not be honoured."""

    code: ClassVar[str] = "cqrs.idempotency_error"


class IdempotencyKeyReused(IdempotencyError, ValueError):
    """An idempotency key came again with another message than the one it was first sent with."""

    code: ClassVar[str] = "cqrs.idempotency_key_reused"

    def __init__(self, key: str, message_type: str) -> None:
        self.key = key
        self.message_type = message_type
        super().__init__(
            f"The idempotency key {key!r} was first used for another message than this "
            f"{message_type}; nothing ran. Send a new key for a new request, and the same "
            "key only to repeat the very same message."
        )


class IdempotencyKeyInProgress(IdempotencyError):
    """The first send of this key is still running after the wait; nothing ran."""

    code: ClassVar[str] = "cqrs.idempotency_key_in_progress"

    def __init__(self, key: str, message_type: str, waited: float) -> None:
        self.key = key
        self.message_type = message_type
        self.waited = waited
        super().__init__(
            f"{message_type} with idempotency key {key!r} is still being handled by an "
            f"earlier send (waited {waited:g} s); nothing ran. Retry with the same key "
            "later: it returns the first send's result once that finishes."
        )


class IdempotencyStoreUnavailable(IdempotencyError):
    """The idempotency key store (a database) failed; the message was not handled."""

    code: ClassVar[str] = "cqrs.idempotency_store_unavailable"

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(
            f"The {backend} idempotency key store failed: {reason}. Check that the database "
            "is up and reachable, then retry with the same key."
        )


class ReadModelError(CqrsError):
    """The root of every read-model error."""

    code: ClassVar[str] = "cqrs.read_model_error"


class DocumentNotFound(ReadModelError, LookupError):
    """An update or a versioned delete named a document that is not stored."""

    code: ClassVar[str] = "cqrs.document_not_found"

    def __init__(self, read_model: str, document_id: object) -> None:
        self.read_model = read_model
        self.document_id = document_id
        super().__init__(
            f"Read model {read_model!r} has no document {document_id!r}. Nothing was written: "
            "add it first (add or upsert), or check the id."
        )


class DuplicateDocument(ReadModelError):
    """``add`` was given a document whose id is already stored."""

    code: ClassVar[str] = "cqrs.duplicate_document"

    def __init__(self, read_model: str, document_id: object) -> None:
        self.read_model = read_model
        self.document_id = document_id
        super().__init__(
            f"Read model {read_model!r} already holds document {document_id!r}. Nothing was "
            "written: use upsert to replace it, or update with its version."
        )


class StaleDocumentVersion(ReadModelError):
    """An update or delete expected another version than the stored one."""

    code: ClassVar[str] = "cqrs.stale_document_version"

    def __init__(self, read_model: str, document_id: object, expected: int, actual: int) -> None:
        self.read_model = read_model
        self.document_id = document_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"Document {document_id!r} of read model {read_model!r} is at version {actual}, "
            f"but the write expected {expected}. Nothing was written: reload it, apply the "
            "change again and retry with the new version."
        )


class InvalidDocument(ReadModelError, ValueError):
    """A document is not of the repository's type, or cannot be stored as it is."""

    code: ClassVar[str] = "cqrs.invalid_document"


class InvalidSpecification(ReadModelError, ValueError):
    """A specification names an unknown field, or a value or operator that does not fit it."""

    code: ClassVar[str] = "cqrs.invalid_specification"


class InvalidQuery(ReadModelError, ValueError):
    """A query's order, limit, offset or field selection is not valid."""

    code: ClassVar[str] = "cqrs.invalid_query"


class PageSizeTooLarge(InvalidQuery):
    """A query asked for more documents at once than the repository's ``max_page_size``."""

    code: ClassVar[str] = "cqrs.page_size_too_large"

    def __init__(self, asked: int, most: int) -> None:
        self.asked = asked
        self.most = most
        super().__init__(
            f"A page of {asked} documents is more than this repository allows ({most}). "
            "Ask for a smaller page and follow the cursor, or open the repository with a "
            "larger max_page_size."
        )


class InvalidCursor(ReadModelError, ValueError):
    """A page cursor was tampered with, is malformed, or belongs to another query."""

    code: ClassVar[str] = "cqrs.invalid_cursor"


class ReadModelConfigurationError(ReadModelError, ValueError):
    """A repository's URL, options, document type or index declarations are not valid."""

    code: ClassVar[str] = "cqrs.read_model_configuration"


class UnknownReadModelBackend(ReadModelConfigurationError, LookupError):
    """No installed read-model backend handles the URL's scheme."""

    code: ClassVar[str] = "cqrs.unknown_read_model_backend"

    def __init__(
        self, scheme: str, installed: Iterable[str], *, missing: str | None = None
    ) -> None:
        self.scheme = scheme
        self.installed = tuple(sorted(installed))
        problem = (
            f"its backend {missing} failed to import, so its dependencies are not installed"
            if missing
            else "misspelled or not installed"
        )
        super().__init__(
            f"No read-model backend for {scheme!r}: {problem}. Installed schemes: "
            f"{', '.join(self.installed) or 'none'}. PostgreSQL needs "
            "`pip install 'uno-cqrs[postgres]'`."
        )


class ReadModelUnavailable(ReadModelError):
    """The database cannot be reached, or failed in a way that is not the caller's input."""

    code: ClassVar[str] = "cqrs.read_model_unavailable"

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(
            f"The {backend} read-model database failed: {reason}. Nothing was written; "
            "check that the database is up and reachable, then retry."
        )


class ReadModelNotMigrated(ReadModelError):
    """The database lacks the read model's table, or holds an older schema version."""

    code: ClassVar[str] = "cqrs.read_model_not_migrated"

    def __init__(self, read_model: str, have: int, want: int) -> None:
        self.read_model = read_model
        self.have = have
        self.want = want
        super().__init__(
            f"The schema of read model {read_model!r} is at version {have}, this uno needs "
            f"{want}. Run `await repository.migrate()` once, or open it with auto_migrate=True."
        )
