"""The transactions a repository can join: structural, so uno.cqrs imports no event store.

``uno.event_storage``'s ``SQLiteTransaction`` (what ``store.transaction()``
yields on SQLite) satisfies ``SQLiteTransactionScope``, and its bound
PostgreSQL store satisfies ``PostgresTransactionScope``: a
``TransactionalProjection`` writes its documents with
``repository.within(tx)`` in the transaction that saves its checkpoint.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["PostgresTransactionScope", "SQLiteTransactionScope"]

T = TypeVar("T")


@runtime_checkable
class SQLiteTransactionScope(Protocol):
    """A SQLite transaction that runs functions on its connection.

    An implementer guarantees that ``run`` calls ``fn(connection)`` inside the
    open transaction (on the thread that owns the connection, off the event
    loop), undoes ``fn``'s changes if it raises, and never commits: the owner
    of the transaction commits or rolls back everything together.
    """

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` inside the transaction and return its result."""
        ...


@runtime_checkable
class PostgresTransactionScope(Protocol):
    """A PostgreSQL transaction: its psycopg ``AsyncConnection``, not in autocommit mode.

    The repository runs its statements on ``connection`` inside a savepoint
    and never commits; the owner of the transaction does.
    """

    @property
    def connection(self) -> Any:
        """The ``psycopg.AsyncConnection`` the transaction is open on."""
        ...
