"""What the SQLite store and its transactions share, and the transaction itself.

A transaction's writes commit together or not at all.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from uno.event_storage._base import EventStoreBase, TransactionScope
from uno.event_storage._prepared import PreparedAppend, Row
from uno.event_storage.exceptions import (
    StoreConfigurationError,
)
from uno.event_storage.sqlite._connections import (
    T,
    encoded_size,
    in_savepoint,
)
from uno.event_storage.sqlite._schema import SQLiteSchema, recorded_now
from uno.events import AppendResult, ExpectedVersion

if TYPE_CHECKING:
    from uno.event_storage.sqlite._store import SQLiteEventStore

__all__ = ["SQLiteAccess", "SQLiteTransaction"]


class SQLiteAccess(EventStoreBase):
    """The store primitives as SQL, run wherever ``_writing`` and ``_reading`` say."""

    backend: ClassVar[str] = "sqlite"
    _sql: SQLiteSchema
    _scan_window: int

    @abc.abstractmethod
    async def _writing(self, fn: Callable[[sqlite3.Connection], T], *, size: int = 0) -> T:
        """Run ``fn``, which writes about ``size`` bytes, on the writer connection, atomically."""

    @abc.abstractmethod
    async def _reading(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on a connection that sees what is committed (or this transaction)."""

    async def _reading_small(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Like ``_reading``, for a read of a few rows found through an index."""
        return await self._reading(fn)

    async def _read_stream(
        self, stream_id: str, from_version: int | None, backwards: bool, limit: int | None
    ) -> list[Row]:
        sql = self._sql
        return await self._reading(
            lambda c: sql.read_stream(c, stream_id, from_version, backwards, limit)
        )

    async def _read_all(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> tuple[list[Row], int | None]:
        sql, window = self._sql, self._scan_window
        return await self._reading(
            lambda c: sql.read_all(
                c,
                after,
                limit,
                event_types=event_types,
                stream_prefix=stream_prefix,
                scan_window=window,
            )
        )

    async def _log_position(self) -> int:
        sql = self._sql
        return await self._reading_small(sql.log_position)

    async def _count_events(
        self,
        after: int,
        before: int | None,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> int:
        sql = self._sql
        return await self._reading(
            lambda c: sql.count_events(
                c, after, before, event_types=event_types, stream_prefix=stream_prefix
            )
        )

    async def _stream_version(self, stream_id: str) -> int:
        sql = self._sql
        return await self._reading_small(lambda c: sql.stream_version(c, stream_id))

    async def _delete_stream(self, stream_id: str, hard: bool, expected: ExpectedVersion) -> None:
        sql = self._sql
        await self._writing(lambda c: sql.delete_stream(c, stream_id, hard, expected))

    async def _get_stream_metadata(self, stream_id: str) -> bytes | None:
        sql = self._sql
        return await self._reading_small(lambda c: sql.get_stream_metadata(c, stream_id))

    async def _set_stream_metadata(self, stream_id: str, metadata: bytes) -> None:
        sql = self._sql
        await self._writing(lambda c: sql.set_stream_metadata(c, stream_id, metadata))

    async def _save_snapshot(
        self, stream_id: str, version: int, event_type: str, event_version: int, data: bytes
    ) -> None:
        sql = self._sql
        await self._writing(
            lambda c: sql.save_snapshot(
                c, stream_id, version, event_type=event_type, event_version=event_version, data=data
            ),
            size=len(data),
        )

    async def _load_snapshot(
        self, stream_id: str, at_or_below: int | None
    ) -> tuple[int, str, int, bytes] | None:
        sql = self._sql
        return await self._reading_small(lambda c: sql.load_snapshot(c, stream_id, at_or_below))

    async def _load_checkpoint(self, consumer: str) -> int | None:
        sql = self._sql
        return await self._reading_small(lambda c: sql.load_checkpoint(c, consumer))

    async def _save_checkpoint(self, consumer: str, position: int) -> None:
        sql = self._sql
        await self._writing(lambda c: sql.save_checkpoint(c, consumer, position))


# -- the store ---------------------------------------------------------------------


class SQLiteTransaction(TransactionScope, SQLiteAccess):
    """A SQLite write transaction with the store's API: what ``store.transaction()`` yields.

    Its reads see its own writes. ``run`` executes your SQL in the same
    transaction (read models written with the events they project).
    ``subscribe`` is not available inside a transaction.
    """

    def __init__(self, store: SQLiteEventStore) -> None:
        super().__init__(
            store.registry,
            serializer=store.serializer,
            max_event_size=store.max_event_size,
            poll_interval=store.poll_interval,
        )
        self._sql = store._sql
        self._scan_window = store._scan_window
        self._writer = store._writer
        self._connection: sqlite3.Connection | None = None
        self._open = False

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer's ``sqlite3.Connection``, inside this transaction.

        It belongs to the writer: use it only in a function given to ``run``,
        and never commit or roll back through it. (When the store runs small
        appends on the event loop, SQLite no longer refuses calls from another
        thread, so nothing stops a misuse.)
        """
        if self._connection is None:
            raise StoreConfigurationError("the transaction has not begun")
        return self._connection

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread inside this transaction.

        If ``fn`` raises, its changes are undone and the exception (``sqlite3``
        errors included) propagates; the transaction stays usable. For example
        ``await tx.run(lambda c: c.execute("UPDATE balances SET ...", params))``.
        """
        self._check_open()
        return await self._writer.run(in_savepoint(fn), owner=self, translate=False)

    async def _write(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        self._check_open()
        sql, now = self._sql, recorded_now()
        return await self._writer.run(
            lambda c: sql.append_in_savepoint(c, appends, now),
            owner=self,
            size=encoded_size(appends),
        )

    async def _writing(self, fn: Callable[[sqlite3.Connection], T], *, size: int = 0) -> T:
        self._check_open()
        return await self._writer.run(in_savepoint(fn), owner=self, size=size)

    async def _reading(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        return await self._writer.run(fn, owner=self)

    def _begin(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        self._connection = connection
        self._writer.owner = self

    def _commit(self, connection: sqlite3.Connection) -> None:
        self._end(connection, "COMMIT")

    def _rollback(self, connection: sqlite3.Connection) -> None:
        self._end(connection, "ROLLBACK")

    def _end(self, connection: sqlite3.Connection, statement: str) -> None:
        self._writer.owner = None
        try:
            connection.execute(statement)
        finally:
            if connection.in_transaction:  # the commit failed
                connection.execute("ROLLBACK")
