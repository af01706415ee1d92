"""Errors raised by uno.event_storage.

The errors of the event store contract live in ``uno.events.exceptions`` so that
third-party backends, which depend on uno-core-events only, raise the same
types; they are re-exported here. This package adds the errors of opening and
migrating a store::

    EventStoreError                     event_storage.error              (uno.events)
    ├── WrongExpectedVersion            event_storage.wrong_expected_version
    ├── DuplicateEventId                event_storage.duplicate_event_id
    ├── StreamDeleted                   event_storage.stream_deleted
    ├── InvalidStreamId                 event_storage.invalid_stream_id
    ├── InvalidArgument                 event_storage.invalid_argument
    ├── EventTooLarge                   event_storage.event_too_large
    ├── TransactionOrderConflict        event_storage.transaction_order_conflict
    ├── StoreUnavailable                event_storage.unavailable
    ├── UnknownBackend                  event_storage.unknown_backend
    ├── StoreConfigurationError         event_storage.invalid_configuration
    └── SchemaError                     event_storage.schema_error
        └── SchemaNotMigrated           event_storage.schema_not_migrated
"""

from __future__ import annotations

from collections.abc import Iterable

from uno.events.exceptions import (
    DuplicateEventId,
    EventStoreError,
    EventTooLarge,
    InvalidArgument,
    InvalidStreamId,
    StoreUnavailable,
    StreamDeleted,
    TransactionOrderConflict,
    WrongExpectedVersion,
)

__all__ = [
    "DuplicateEventId",
    "EventStoreError",
    "EventTooLarge",
    "InvalidArgument",
    "InvalidStreamId",
    "SchemaError",
    "SchemaNotMigrated",
    "StoreConfigurationError",
    "StoreUnavailable",
    "StreamDeleted",
    "TransactionOrderConflict",
    "UnknownBackend",
    "WrongExpectedVersion",
]


class UnknownBackend(EventStoreError, LookupError):
    """No installed backend handles the URL's scheme."""

    code = "event_storage.unknown_backend"

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
            f"No event store backend for {scheme!r}: {problem}. "
            f"Installed schemes: {', '.join(self.installed) or 'none'}. PostgreSQL needs "
            "`pip install 'uno-event-storage[postgres]'`."
        )


class StoreConfigurationError(EventStoreError, ValueError):
    """The URL or an option given to open a store is not valid."""

    code = "event_storage.invalid_configuration"


class SchemaError(EventStoreError):
    """The store's schema could not be created or migrated."""

    code = "event_storage.schema_error"


class SchemaNotMigrated(SchemaError):
    """The database lacks the store's tables, or holds an older schema version."""

    code = "event_storage.schema_not_migrated"

    def __init__(self, where: str, have: int, want: int) -> None:
        self.where = where
        self.have = have
        self.want = want
        super().__init__(
            f"The event store schema in {where} is at version {have}, this uno needs {want}. "
            "Run `await store.migrate()` once, or open the store with auto_migrate=True."
        )
