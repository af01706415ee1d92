"""The PostgreSQL event store (``postgresql://``), on psycopg 3 and psycopg_pool.

Needs the ``[postgres]`` extra. ``_store`` holds the store, ``_appends`` its
write path, ``_schema`` and ``_migrations`` the tables and functions (and how
global order is kept), ``_connections`` the borrowed pool connections,
``_leases`` the advisory-lock leases.
"""

from uno.event_storage.postgres._appends import SeenVersions
from uno.event_storage.postgres._fence import FenceStatus
from uno.event_storage.postgres._leases import PostgresLease, PostgresLeaseStore
from uno.event_storage.postgres._store import PostgresEventStore

__all__ = [
    "FenceStatus",
    "PostgresEventStore",
    "PostgresLease",
    "PostgresLeaseStore",
    "SeenVersions",
]
