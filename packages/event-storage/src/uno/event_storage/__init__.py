"""The uno event store: memory, SQLite and PostgreSQL backends chosen by URL.

::

    async with open_event_store("sqlite:///events.db", registry=registry) as store:
        await store.append("account-1", [AccountOpened(owner="ada")], expected_version=NO_STREAM)
        events = await store.read_stream("account-1")
"""

from uno.event_storage import exceptions
from uno.event_storage._base import EventStoreBase
from uno.event_storage._opening import (
    BACKENDS_GROUP,
    Backend,
    ClosableEventStore,
    installed_backends,
    open_event_store,
)
from uno.event_storage._prepared import (
    DEFAULT_MAX_EVENT_SIZE,
    PreparedAppend,
    PreparedEvent,
    Row,
    StoredId,
    check_expected_version,
    idempotent_result,
)
from uno.event_storage._subscription import PollingSubscription
from uno.event_storage.memory import InMemoryEventStore, InMemoryLeaseStore, InMemoryTransaction
from uno.event_storage.sqlite import SQLiteEventStore, SQLiteLeaseStore, SQLiteTransaction

__all__ = [
    "BACKENDS_GROUP",
    "DEFAULT_MAX_EVENT_SIZE",
    "Backend",
    "ClosableEventStore",
    "EventStoreBase",
    "InMemoryEventStore",
    "InMemoryLeaseStore",
    "InMemoryTransaction",
    "PollingSubscription",
    "PreparedAppend",
    "PreparedEvent",
    "Row",
    "SQLiteEventStore",
    "SQLiteLeaseStore",
    "SQLiteTransaction",
    "StoredId",
    "check_expected_version",
    "exceptions",
    "idempotent_result",
    "installed_backends",
    "open_event_store",
]
