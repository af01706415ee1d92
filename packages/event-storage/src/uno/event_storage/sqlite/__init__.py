"""The SQLite event store (``sqlite:///path/to/events.db``), uno's embedded default.

``_store`` holds the store and its transactions, ``_schema`` the tables and
the queries, ``_connections`` and ``_writer`` the threads that own the
connections, ``_ids`` the event ids derived from positions, ``_leases`` the
leases that processes of one machine share through the file.
"""

from uno.event_storage.sqlite._leases import SQLiteLease, SQLiteLeaseStore
from uno.event_storage.sqlite._store import INLINE_ROWS, SQLiteEventStore, SQLiteTransaction

__all__ = [
    "INLINE_ROWS",
    "SQLiteEventStore",
    "SQLiteLease",
    "SQLiteLeaseStore",
    "SQLiteTransaction",
]
