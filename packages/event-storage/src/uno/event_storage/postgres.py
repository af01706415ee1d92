"""The PostgreSQL event store (``postgresql://``), on psycopg 3 and psycopg_pool.

Needs the ``[postgres]`` extra. How global order is kept without a table lock
is explained in ``_postgres_schema``; the guarantees are listed in
docs/guide/event-store-guarantees.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import logging
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from time import monotonic
from types import TracebackType
from typing import Any, ClassVar, Self

import anyio
import psycopg
import psycopg_pool
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.adapt import Dumper
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format, TransactionStatus
from psycopg.rows import TupleRow

from uno.event_storage._append_groups import LARGEST as LARGEST_GROUPED
from uno.event_storage._append_groups import AppendGroups, GroupRefused
from uno.event_storage._core import (
    EventStoreBase,
    PreparedAppend,
    PreparedEvent,
    Row,
    check_expected_version,
)
from uno.event_storage._postgres_leases import PostgresLease, PostgresLeaseStore
from uno.event_storage._postgres_schema import (
    MIGRATIONS,
    POSITION_BITS,
    SQLSTATES,
    Names,
    migration_lock_key,
)
from uno.event_storage._subscription import Notifier
from uno.event_storage.exceptions import (
    DuplicateEventId,
    SchemaNotMigrated,
    StoreConfigurationError,
    StoreUnavailable,
    StreamDeleted,
    TransactionOrderConflict,
    WrongExpectedVersion,
)
from uno.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EventRegistry,
    ExpectedVersion,
    uuid7,
)

__all__ = ["PostgresEventStore", "PostgresLease", "PostgresLeaseStore"]

logger = logging.getLogger(__name__)

_ROW_COLUMNS = (
    "event_id, stream_id, stream_version, global_position, recorded_at, "
    "event_type, event_version, data, metadata"
)
_MOST_EVENTS = 1 << POSITION_BITS
"""Most events one transaction may append: its positions are its id, then this many."""
_SAFE_END = f"(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {POSITION_BITS})"
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout, OSError)
_KEEP_FOR = 30.0  # seconds a borrowed connection serves before it goes back to the pool
_IDLE_FOR = 1.0  # seconds an unused borrowed connection waits before it goes back
_ORDER_RETRIES = 3  # retries of a store-owned append that a lock-free append overtook
# What makes a group of appends go alone, besides a deleted stream: a version
# another writer took or a stored id, and a wait for another transaction that
# the group gave up (its lock_timeout) or PostgreSQL broke (a deadlock).
_GROUP_REFUSALS = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.DeadlockDetected,
)


class PostgresEventStore(EventStoreBase):
    """An event store in PostgreSQL (13 or newer).

    Open it with ``open_event_store("postgresql://user@host/db", registry=...)``
    or ``await PostgresEventStore.from_url(...)``. Writers to different streams
    run in parallel; readers of the global log see events in one order that
    respects every stream's order, never skip a late commit, and never see a
    rolled-back event.

    Args:
        registry: The event classes and upcasters.
        pool: An open ``psycopg_pool.AsyncConnectionPool`` whose connections use
            autocommit and the UTC time zone (``from_url`` makes one).
        schema: The PostgreSQL schema of the store's tables.
        table_prefix: Prefix of the store's tables, so stores can share a schema.
        notify: After commits, wake subscribers in other processes with
            ``NOTIFY`` (sent outside the writers' transactions, so it does not
            serialize their commits). Without it they poll.
        notify_delay: Least seconds between two ``NOTIFY``: the first commit
            after a quiet spell is announced at once, and the commits of the
            next ``notify_delay`` together at its end, so a busy writer sends
            one per ``notify_delay`` and remote subscribers hear of its events
            up to that much later.
        group_commit: Most autocommit appends under way at once before the
            store groups them: an append that arrives while this many are under
            way waits, and the appends waiting when one ends share one
            transaction (each still succeeds or fails alone). Only appends
            that read nothing first are grouped: a version the store saw
            committed, or a new stream. 0 turns grouping off.
        owns_pool: Close the pool when the store closes.
        **options: ``serializer``, ``max_event_size``, ``poll_interval``.
    """

    backend: ClassVar[str] = "postgresql"

    def __init__(
        self,
        registry: EventRegistry,
        *,
        pool: psycopg_pool.AsyncConnectionPool[Any],
        schema: str = "public",
        table_prefix: str = "uno_",
        notify: bool = True,
        notify_delay: float = 0.05,
        group_commit: int = 2,
        owns_pool: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(registry, **options)
        if notify_delay < 0:
            raise StoreConfigurationError(f"notify_delay must be >= 0, got {notify_delay}")
        if type(group_commit) is not int or group_commit < 0:
            raise StoreConfigurationError(
                f"group_commit must be an int >= 0 (0 turns grouping off), got {group_commit!r}"
            )
        self.names = Names.of(schema, table_prefix)
        self.notify = notify
        self.notify_delay = notify_delay
        self._pool = pool
        self._connections = _BorrowedConnections(pool)
        self._owns_pool = owns_pool
        self._bound: AsyncConnection[TupleRow] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._announcer: asyncio.Task[None] | None = None
        self._announce_again = False
        self._sql = _Statements(self.names)
        self._locked: set[str] = set()  # streams a bound store's transaction has locked
        self._seen = SeenVersions()
        self._groups = (
            AppendGroups(group_commit, self._append_single, self._append_together)
            if group_commit
            else None
        )
        # LISTEN needs a connection of its own, outside the pool.
        self._conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""

    @classmethod
    async def from_url(
        cls,
        url: str,
        *,
        registry: EventRegistry,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout: float = 10.0,
        auto_migrate: bool = False,
        **options: Any,
    ) -> Self:
        """Open a store with a new connection pool for a ``postgresql://`` URL.

        Args:
            url: A libpq connection URL (``postgres://`` works too).
            registry: The event classes and upcasters.
            pool_min_size: Connections kept open.
            pool_max_size: Most connections at once (concurrent writers).
            connect_timeout: Seconds to wait for the first connection.
            auto_migrate: Create or upgrade the schema on open.
            **options: Passed to the constructor (schema, table_prefix, notify, ...).

        Raises:
            StoreUnavailable: the database cannot be reached within ``connect_timeout``.
            SchemaNotMigrated: the schema is missing or old and ``auto_migrate`` is off.
        """
        if pool_min_size < 0 or pool_max_size < max(1, pool_min_size):
            raise StoreConfigurationError(
                f"need 0 <= pool_min_size <= pool_max_size and pool_max_size >= 1, got "
                f"{pool_min_size} and {pool_max_size}"
            )
        conninfo = "postgresql://" + url.partition("://")[2]
        # Keep the URL's own server options, and read timestamps in UTC.
        given = conninfo_to_dict(conninfo).get("options")
        server_options = f"{given} -c TimeZone=UTC" if given else "-c TimeZone=UTC"
        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            conninfo,
            min_size=pool_min_size,
            max_size=pool_max_size,
            open=False,
            timeout=connect_timeout,
            kwargs={"autocommit": True, "prepare_threshold": 0, "options": server_options},
            name="uno.event_storage",
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout)
        except _UNAVAILABLE as exc:
            await pool.close()
            raise StoreUnavailable("postgresql", _reason(exc)) from exc
        store = cls(registry, pool=pool, owns_pool=True, **options)
        try:
            if auto_migrate:
                await store.migrate()
            else:
                await store.check_schema()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Stop listening, and close the pool if the store opened it."""
        await super().close()
        for task in (self._listener, self._announcer):
            if task is not None and not task.done():
                task.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(task, return_exceptions=True)
        if self._bound is None:
            if self._groups is not None:
                with anyio.CancelScope(shield=True):
                    await self._groups.drain()
            await self._connections.close()
            if self._owns_pool:
                await self._pool.close()

    # -- schema ----------------------------------------------------------------

    async def migrate(self) -> None:
        """Create or upgrade the schema; safe to run from several processes at once."""
        with self._translated():
            async with self._connections.borrow() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    [migration_lock_key(self.names)],
                )
                await conn.execute(self.names.render("CREATE SCHEMA IF NOT EXISTS {schema}"))
                await conn.execute(
                    self.names.render(
                        "CREATE TABLE IF NOT EXISTS {migrations} (version integer PRIMARY KEY, "
                        "description text NOT NULL, "
                        "applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
                    )
                )
                cursor = await conn.execute(self.names.render("SELECT version FROM {migrations}"))
                applied = {version for (version,) in await cursor.fetchall()}
                for version, description, template in MIGRATIONS:
                    if version in applied:
                        continue
                    await conn.execute(self.names.render(template), prepare=False)
                    await conn.execute(
                        self.names.render(
                            "INSERT INTO {migrations} (version, description) VALUES (%s, %s)"
                        ),
                        [version, description],
                    )
                    logger.info(
                        "migrated event store schema",
                        extra={"schema": self.names.schema, "version": version},
                    )

    async def schema_version(self) -> int:
        """Return the newest applied migration, 0 when the schema is missing."""
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(
                    "SELECT to_regclass(%s) IS NOT NULL", [self.names.table("migrations")]
                )
                row = await cur.fetchone()
                if row is None or not row[0]:
                    return 0
                await cur.execute(
                    self.names.render("SELECT coalesce(max(version), 0) FROM {migrations}")
                )
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def check_schema(self) -> None:
        """Raise ``SchemaNotMigrated`` unless every migration is applied."""
        have, want = await self.schema_version(), MIGRATIONS[-1][0]
        if have < want:
            raise SchemaNotMigrated(f"schema {self.names.schema!r}", have, want)

    # -- leases ----------------------------------------------------------------

    def lease_store(self, *, check_timeout: float = 5.0) -> PostgresLeaseStore:
        """Return leases shared by every process that opens this store (schema and prefix).

        Each held lease is a session-level advisory lock on a connection of its
        own, so a holder that dies or loses its connection loses the lease.

        Raises:
            StoreConfigurationError: the pool's connection string is unknown
                (a pool built with a conninfo callable).
        """
        if not self._conninfo:
            raise StoreConfigurationError(
                "leases need the database's connection string, and this store's pool has none: "
                "build PostgresLeaseStore(conninfo, namespace=...) yourself"
            )
        return PostgresLeaseStore(
            self._conninfo,
            namespace=f"uno.event_storage:{self.names.schema}.{self.names.prefix}",
            check_timeout=check_timeout,
        )

    # -- connections and transactions ------------------------------------------

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        return _translated(self._connections)

    def _cursor(self) -> contextlib.AbstractAsyncContextManager[AsyncCursor[TupleRow]]:
        """Return a cursor of the bound connection, or of one borrowed for the block."""
        if self._bound is not None:
            return nullcontext(self._bound.cursor())
        return self._connections.cursor()

    @asynccontextmanager
    async def _atomic(self) -> AsyncIterator[AsyncConnection[TupleRow]]:
        """Yield a connection in a transaction: the bound one's, or a new one committed on exit."""
        if self._bound is not None:
            yield self._bound
            return
        async with self._connections.borrow() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresEventStore]:
        """Open a transaction and yield a store bound to it.

        Everything done through the yielded store, and through its
        ``connection`` (read models, outbox rows...), commits together when the
        block ends, or rolls back if it raises. An error inside the block leaves
        the transaction aborted: let it propagate. Inside the block, append to a
        stream the transaction already appended to only through the yielded
        store: the task's own append through the outer store would wait for this
        transaction's lock forever, so it is refused.

        Raises:
            StoreConfigurationError: called on a bound store (transactions do not nest).
        """
        if self._bound is not None:
            raise StoreConfigurationError(
                "transactions do not nest: use the bound store you already have"
            )
        with self._translated():
            # The caller's code runs on this connection and may change its session:
            # it goes back to the pool (and its reset), not to the free-list.
            async with self._connections.borrow(reuse=False) as conn, conn.transaction():
                bound = self._bind(conn)
                token = _open_transaction.set((self, bound._locked))
                try:
                    yield bound
                finally:
                    _open_transaction.reset(token)
        self._committed()

    def using(self, connection: AsyncConnection[Any]) -> PostgresEventStore:
        """Return a store that works inside ``connection``'s current transaction.

        The caller commits or rolls back; the store never does. The connection
        must not be in autocommit mode. Subscribers learn of the events at their
        next poll (``poll_interval``).
        """
        if connection.autocommit:
            raise StoreConfigurationError(
                "store.using(connection) needs a connection that is not in autocommit mode, "
                "so that its appends join the caller's transaction"
            )
        _BinaryArray.register(connection)
        return self._bind(connection)

    def _bind(self, connection: AsyncConnection[Any]) -> PostgresEventStore:
        bound = copy.copy(self)
        bound._bound = connection
        bound._owns_pool = False
        bound._listener = bound._announcer = None
        bound._notifier = Notifier()  # closing the bound store must not end the parent's reads
        bound._locked = set()
        bound._seen = SeenVersions()  # never filled: a bound store sees uncommitted rows
        return bound

    @property
    def connection(self) -> AsyncConnection[Any]:
        """The connection a bound store (from ``transaction()``) works in."""
        if self._bound is None:
            raise StoreConfigurationError(
                "only a store from store.transaction() or store.using(conn) has a connection"
            )
        return self._bound

    # -- writing ---------------------------------------------------------------

    async def _write(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        if self._bound is None:
            self._refuse_self_deadlock(appends)
        else:
            self._locked.update(append.stream_id for append in appends)
        # A cancelled append still finishes (or fails) as a whole before the
        # cancellation is delivered, so the connection returns to the pool clean.
        with anyio.CancelScope(shield=True), self._translated():
            if self._bound is not None:
                return await self._append_locked(self._bound, appends)
            # The store owns these transactions, so it retries one that a lock-free
            # append to the same stream overtook (TransactionOrderConflict).
            for attempt in range(_ORDER_RETRIES, -1, -1):
                try:
                    if len(appends) == 1:
                        results = [await self._append_alone(appends[0])]
                    else:
                        async with self._atomic() as conn:
                            results = await self._append_locked(conn, appends)
                except TransactionOrderConflict:
                    if not attempt:
                        raise
                else:
                    for result in results:  # committed
                        self._seen.add(result.stream_id, result.stream_version)
                    return results
        raise AssertionError("unreachable")  # pragma: no cover

    async def _append_alone(self, append: PreparedAppend) -> AppendResult:
        """Append in an autocommit transaction, maybe shared with other appends of this store."""
        if len(append.events) > _MOST_EVENTS:  # the lock-free paths do not check it
            raise _too_many_events(_MOST_EVENTS)
        if (
            self._groups is not None
            and len(append.events) <= LARGEST_GROUPED
            and self._reads_nothing(append)
        ):
            return await self._groups.append(append)
        return await self._append_single(append)

    def _reads_nothing(self, append: PreparedAppend) -> bool:
        """Whether the append follows a version seen committed, or starts the stream."""
        expected = append.expected_version
        if expected is NO_STREAM:
            return True
        return type(expected) is int and (
            expected == 0 or self._seen.holds(append.stream_id, expected)
        )

    async def _append_together(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        """Append for several appends (distinct streams) in one autocommit transaction.

        Raises ``GroupRefused``, having written nothing, when one of them
        cannot go: a version another writer took, a stored id, a deleted stream.
        """
        streams: list[str] = []
        owners: list[bytes] = []
        versions: list[bytes] = []
        events: list[PreparedEvent] = []
        int4 = _INT4.pack
        for owner, append in enumerate(appends, start=1):
            first = _first_version(append)
            streams.append(append.stream_id)
            owners += [int4(owner)] * len(append.events)
            versions += [int4(v) for v in range(first + 1, first + 1 + len(append.events))]
            events += append.events
        params = [
            streams,
            _BinaryArray(_INT4_OID, owners, width=4),
            _BinaryArray(_INT4_OID, versions, width=4),
            *_event_arrays(events),
        ]
        async with self._connections.cursor() as cur:
            try:
                await cur.execute(self._sql.append_group, params)
            except _GROUP_REFUSALS as exc:
                raise GroupRefused from exc
            except psycopg.Error as exc:
                if exc.sqlstate == SQLSTATES["stream_deleted"]:
                    raise GroupRefused from exc
                raise
            row = await cur.fetchone()
        assert row is not None  # the function always returns one row
        base, results, end = row[0], [], 0
        for append in appends:
            end += len(append.events)
            results.append(
                AppendResult(
                    stream_id=append.stream_id,
                    stream_version=_first_version(append) + len(append.events),
                    global_position=base + end - 1,
                )
            )
        return results

    async def _append_single(self, append: PreparedAppend) -> AppendResult:
        """Append in an autocommit transaction of one statement."""
        async with self._connections.cursor() as cur:
            try:
                return await self._append_one(cur, append, alone=True)
            except psycopg.errors.UniqueViolation:
                # A stored id (a retry, or a duplicate) or a version another writer
                # took: this time the function takes the stream's lock, looks the ids
                # up, and tells which it is.
                return await self._append_one(cur, append, alone=False)

    async def _append_locked(
        self, conn: AsyncConnection[Any], appends: list[PreparedAppend]
    ) -> list[AppendResult]:
        """Append in ``conn``'s transaction, holding every stream's lock."""
        cur = conn.cursor()
        await cur.execute(
            # Every stream's lock, in one order, before any write: no deadlock, and
            # this transaction's id comes after every earlier locked append to them.
            "SELECT pg_advisory_xact_lock(hashtextextended(s, 7)) FROM unnest(%s::text[]) AS s",
            [sorted(a.stream_id for a in appends)],
        )
        return [await self._append_one(cur, append, alone=False) for append in appends]

    def _refuse_self_deadlock(self, appends: list[PreparedAppend]) -> None:
        """Refuse an append that would wait for a stream lock held by this task's transaction."""
        open_transaction = _open_transaction.get()
        if open_transaction is None or open_transaction[0] is not self:
            return
        held = open_transaction[1].intersection(a.stream_id for a in appends)
        if held:
            raise StoreConfigurationError(
                f"this task's open transaction holds {min(held)!r}: append through the "
                "store that store.transaction() yielded (this append would wait for it forever)"
            )

    async def _append_one(
        self, cur: AsyncCursor[TupleRow], append: PreparedAppend, *, alone: bool
    ) -> AppendResult:
        """Append with one call of the append function, in the cursor's transaction.

        ``alone=True`` says that the call is its autocommit transaction's only
        statement: the function then inserts without looking the event ids
        up, and a stored one raises ``UniqueViolation`` (call again with
        ``alone=False``, which looks them up). Inside a transaction that error
        would abort it: pass ``False``.
        """
        arrays = _event_arrays(append.events)
        try:
            if alone and self._reads_nothing(append):
                # Nothing to read first: the small function (schema version 4).
                await cur.execute(
                    self._sql.append_known, [append.stream_id, _first_version(append), *arrays]
                )
            else:
                expected = append.expected_version
                # The append function's 'known' state is the small function's case.
                state = (
                    "any"
                    if expected is ANY
                    else "no_stream"
                    if expected is NO_STREAM
                    else "stream_exists"
                    if expected is STREAM_EXISTS
                    else "exact"
                )
                version = expected if isinstance(expected, int) else None
                await cur.execute(
                    self._sql.append, [append.stream_id, version, state, *arrays, alone]
                )
        except psycopg.Error as exc:
            error = _contract_error(exc, append)
            if error is exc:
                raise  # not the contract's: _translated handles a lost link
            raise error from exc
        row = await cur.fetchone()
        assert row is not None  # the function always returns one row
        return AppendResult(
            stream_id=append.stream_id, stream_version=row[0], global_position=row[1]
        )

    def _committed(self) -> None:
        if self._bound is not None:
            return  # the transaction's owner announces after its commit
        super()._committed()
        if self.notify:
            self._announce_again = True
            if self._announcer is None or self._announcer.done():
                self._announcer = asyncio.get_running_loop().create_task(self._announce())

    async def _announce(self) -> None:
        """Send NOTIFY after commits: at once after a quiet spell, then one per ``notify_delay``.

        Commits while a notification is sent, or during the ``notify_delay``
        after it, are announced together by one more at the end of that wait.
        """
        while self._announce_again:
            self._announce_again = False
            try:
                async with self._connections.borrow() as conn:
                    await conn.execute(self._sql.announce, [self.names.channel])
            except Exception:
                logger.warning("could not notify subscribers; they will poll", exc_info=True)
                return
            await anyio.sleep(self.notify_delay)

    # -- reading ---------------------------------------------------------------

    async def _read_stream(
        self, stream_id: str, from_version: int | None, backwards: bool, limit: int | None
    ) -> list[Row]:
        if from_version is None:
            from_version = 2**31 - 1 if backwards else 1
        query = self._sql.read_stream_backwards if backwards else self._sql.read_stream_forwards
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(
                    query, {"id": stream_id, "v": from_version, "limit": limit}, binary=True
                )
                # Row's columns (without the stream id), then the stream's deletion state.
                rows: list[Any] = await cur.fetchall()
                if rows:
                    deleted = rows[0][9]
                else:  # no events: the stream may still be a tombstone
                    await cur.execute(self._sql.deleted, [stream_id])
                    found = await cur.fetchone()
                    deleted = found[0] if found else None
        if deleted is not None:
            raise StreamDeleted(stream_id, hard=deleted == "hard")
        if rows and self._bound is None:  # committed: a transaction's own rows may roll back
            self._seen.add(stream_id, max(rows[0][2], rows[-1][2]))
        return rows

    async def _read_all(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> tuple[list[Row], int | None]:
        query = self._sql.read_all(event_types is not None, stream_prefix is not None)
        params: list[Any] = [after]
        if event_types is not None:
            params.append(list(event_types))
        if stream_prefix is not None:
            params.append(stream_prefix)
        params.append(limit)
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(query, params, binary=True)
                # Plain tuples in Row's column order: _decode reads them by index.
                rows: list[Any] = await cur.fetchall()
        return rows, (rows[-1][3] if len(rows) == limit else None)

    async def _read_pages(
        self,
        after: int,
        limit: int,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> AsyncGenerator[list[Row], None]:
        """Yield ``read_all``'s pages, fetching the next one while the caller decodes this one.

        Each page is the same query from the same position as without the
        prefetch, so the read fence is unchanged: a page only ever holds rows
        below the safe end its own query saw. A bound store (a transaction)
        reads page by page: its one connection runs the caller's statements too.
        """
        if self._bound is not None:
            async with contextlib.aclosing(
                super()._read_pages(after, limit, event_types, stream_prefix)
            ) as pages:
                async for rows in pages:
                    yield rows
            return
        loop = asyncio.get_running_loop()
        fetch = loop.create_task(self._read_page(after, limit, event_types, stream_prefix))
        try:
            while True:
                rows, scanned_to = await fetch
                if scanned_to is None:
                    yield rows
                    return
                fetch = loop.create_task(
                    self._read_page(scanned_to, limit, event_types, stream_prefix)
                )
                await asyncio.sleep(0)  # let it send its query before this page is decoded
                yield rows
        finally:
            if not fetch.done():  # the caller stopped early: cancel the fetch, wait for it
                fetch.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([fetch])
                if not fetch.cancelled():
                    fetch.exception()  # retrieved: it no longer matters

    async def _log_position(self) -> int:
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(self._sql.log_position)
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _count_events(
        self,
        after: int,
        before: int | None,
        event_types: tuple[str, ...] | None,
        stream_prefix: str | None,
    ) -> int:
        query = self._sql.count_events(event_types is not None, stream_prefix is not None)
        params: list[Any] = [after, before]
        if event_types is not None:
            params.append(list(event_types))
        if stream_prefix is not None:
            params.append(stream_prefix)
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(query, params)
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _stream_version(self, stream_id: str) -> int:
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(self._sql.stream_state, {"id": stream_id})
                deleted, version = await cur.fetchone() or (None, None)
        return 0 if deleted is not None or version is None else int(version)

    # -- deletion, metadata, snapshots, checkpoints ------------------------------

    async def _delete_stream(self, stream_id: str, hard: bool, expected: ExpectedVersion) -> None:
        self._seen.forget(stream_id)  # tidiness: appends check for deletion anyway
        with anyio.CancelScope(shield=True), self._translated():
            async with self._atomic() as conn:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", [stream_id]
                )
                while True:
                    cursor = await conn.execute(self._sql.stream_state, {"id": stream_id})
                    deleted, version = await cursor.fetchone() or (None, None)
                    if deleted == "hard":
                        return
                    # Lock-free appends take no lock: a fence row holding the next
                    # version waits for one that holds it, and makes later ones wait
                    # for this transaction, which they then see (and undo themselves).
                    cursor = await conn.execute(
                        self._sql.fence, {"id": stream_id, "v": (version or 0) + 1}
                    )
                    fence = await cursor.fetchone()
                    if fence is not None:
                        break
                    # An append took that version meanwhile: read the stream again.
                try:
                    check_expected_version(stream_id, expected, version or 0)
                finally:
                    # Inside a caller's transaction the fence must not outlive this call.
                    await conn.execute(self._sql.erase_fence, [fence[0]])
                if hard:
                    await conn.execute(self._sql.erase_events, [stream_id])
                    await conn.execute(self._sql.erase_snapshots, [stream_id])
                await conn.execute(self._sql.mark_deleted, [stream_id, "hard" if hard else "soft"])

    async def _get_stream_metadata(self, stream_id: str) -> bytes | None:
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(self._sql.get_metadata, [stream_id])
                row = await cur.fetchone()
        return None if row is None else row[0]

    async def _set_stream_metadata(self, stream_id: str, metadata: bytes) -> None:
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(self._sql.set_metadata, [stream_id, metadata])
                if await cur.fetchone() is None:
                    raise StreamDeleted(stream_id, hard=True)

    async def _save_snapshot(
        self, stream_id: str, version: int, event_type: str, event_version: int, data: bytes
    ) -> None:
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(
                    self._sql.save_snapshot,
                    {
                        "id": stream_id,
                        "v": version,
                        "t": event_type,
                        "tv": event_version,
                        "d": data,
                    },
                )
                deleted = await cur.fetchone()
        if deleted is not None:
            raise StreamDeleted(stream_id, hard=deleted[0] == "hard")

    async def _load_snapshot(
        self, stream_id: str, at_or_below: int | None
    ) -> tuple[int, str, int, bytes] | None:
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(self._sql.load_snapshot, [stream_id, at_or_below, at_or_below])
                row = await cur.fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    async def _load_checkpoint(self, consumer: str) -> int | None:
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(self._sql.load_checkpoint, [consumer])
                row = await cur.fetchone()
        return None if row is None else int(row[0])

    async def _save_checkpoint(self, consumer: str, position: int) -> None:
        with self._translated():
            async with self._cursor() as cur:
                await cur.execute(self._sql.save_checkpoint, [consumer, position])

    # -- waking subscriptions --------------------------------------------------

    async def _wait_for_events(self, ticket: anyio.Event, max_wait: float) -> None:
        if (
            self.notify
            and self._bound is None
            and self._conninfo
            and (self._listener is None or self._listener.done())
        ):
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        await super()._wait_for_events(ticket, max_wait)

    async def _listen(self) -> None:
        """Wake subscriptions on NOTIFY from any process; reconnect when the link drops."""
        channel = sql.SQL("LISTEN {}").format(sql.Identifier(self.names.channel))
        while not self._notifier.closed:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(channel)
                    self._notifier.notify()  # events may have come while (re)connecting
                    async for _ in conn.notifies():
                        self._notifier.notify()
            except _UNAVAILABLE:
                logger.warning("lost the LISTEN connection; subscribers poll until it is back")
                await anyio.sleep(self.poll_interval)


class SeenVersions:
    """The highest version of each stream that this store saw committed (bounded).

    An append that expects a version at or below it needs no read of that
    event: it exists (only an erasure removes events, and the append function
    checks for deletion after it inserts), and its writer's transaction id is
    older than any that a later append takes. Only autocommit reads and
    appends fill it; a transaction's own rows may still roll back.
    """

    __slots__ = ("_versions", "limit")

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._versions: dict[str, int] = {}

    def holds(self, stream_id: str, version: int) -> bool:
        """Whether the event at ``version`` of the stream was seen committed."""
        return 0 < version <= self._versions.get(stream_id, 0)

    def add(self, stream_id: str, version: int) -> None:
        """Record that the stream's events up to ``version`` were seen committed."""
        versions = self._versions
        known = versions.pop(stream_id, 0)
        versions[stream_id] = max(known, version)  # newest last: the oldest goes first
        if len(versions) > self.limit:
            del versions[next(iter(versions))]

    def forget(self, stream_id: str) -> None:
        """Drop what was seen of a stream (it was deleted)."""
        self._versions.pop(stream_id, None)


class _Statements:
    """The SQL of one store, rendered once with its schema and table names."""

    def __init__(self, names: Names) -> None:
        r = names.render
        self.append = r(
            "SELECT stream_version, global_position FROM {append}"
            # Arrays go in binary (%b): dumping bytea arrays as text costs more than the insert.
            "(%s, %s, %s, %b::uuid[], %b::text[], %b::integer[], %b::bytea[], %b::bytea[], %s)"
        )
        self.append_known = r(
            "SELECT stream_version, global_position FROM {append_known}"
            "(%s, %s, %b::uuid[], %b::text[], %b::integer[], %b::bytea[], %b::bytea[])"
        )
        self.append_group = r(
            "SELECT {append_group}(%b::text[], %b::integer[], %b::integer[], "
            "%b::uuid[], %b::text[], %b::integer[], %b::bytea[], %b::bytea[])"
        )
        stream = (
            # Row's columns, but not the stream's id again with every row (read_stream knows it).
            "SELECT " + _ROW_COLUMNS.replace("stream_id", "NULL", 1) + ", "
            "(SELECT deleted FROM {streams} WHERE stream_id = %(id)s) FROM {events} "
            "WHERE stream_id = %(id)s AND stream_version {op} %(v)s "
            "ORDER BY stream_version {order} LIMIT %(limit)s"
        )
        self.deleted = r("SELECT deleted FROM {streams} WHERE stream_id = %s")
        # NOTIFY takes a transaction id, so its commit would wait for a WAL flush like a
        # write's. It carries no data and the events it announces are durable already:
        # commit it asynchronously (losing it in a crash costs subscribers one poll).
        self.announce = "SELECT pg_notify(%s, ''), set_config('synchronous_commit', 'off', true)"
        self.read_stream_forwards = r(stream.replace("{op}", ">=").replace("{order}", "ASC"))
        self.read_stream_backwards = r(stream.replace("{op}", "<=").replace("{order}", "DESC"))
        self._read_all = {
            (types, prefix): r(
                "SELECT " + _ROW_COLUMNS + " FROM {events} WHERE global_position > %s "
                "AND global_position < "
                + _SAFE_END
                + _filters(types, prefix)
                + " ORDER BY global_position LIMIT %s"
            )
            for types in (False, True)
            for prefix in (False, True)
        }
        self._count_events = {
            (types, prefix): r(
                "SELECT count(*) FROM {events} WHERE global_position > %s "
                "AND global_position <= coalesce(%s::bigint, 9223372036854775807) "
                "AND global_position < " + _SAFE_END + _filters(types, prefix)
            )
            for types in (False, True)
            for prefix in (False, True)
        }
        self.log_position = r(
            "SELECT coalesce(max(global_position), 0) FROM {events} "
            "WHERE global_position < " + _SAFE_END
        )
        self.stream_state = r(
            "SELECT (SELECT deleted FROM {streams} WHERE stream_id = %(id)s), "
            "(SELECT max(stream_version) FROM {events} WHERE stream_id = %(id)s)"
        )
        self.erase_events = r("DELETE FROM {events} WHERE stream_id = %s")
        # A placeholder event that a deletion holds until it commits: a negative
        # position (readers never read one) and a type no event can have.
        self.fence = r(
            "INSERT INTO {events} (global_position, stream_id, stream_version, event_id, "
            "event_type, event_version, data, metadata) VALUES "
            "(-1 - floor(random() * 4e18)::bigint, %(id)s, %(v)s, gen_random_uuid(), "
            "'$deletion', 0, '', '') ON CONFLICT DO NOTHING RETURNING event_id"
        )
        self.erase_fence = r("DELETE FROM {events} WHERE event_id = %s")
        self.erase_snapshots = r("DELETE FROM {snapshots} WHERE stream_id = %s")
        self.mark_deleted = r(
            "INSERT INTO {streams} (stream_id, deleted) VALUES (%s, %s) ON CONFLICT (stream_id) "
            "DO UPDATE SET deleted = excluded.deleted, metadata = CASE WHEN excluded.deleted = "
            "'hard' THEN NULL ELSE {streams}.metadata END"
        )
        self.get_metadata = r("SELECT metadata FROM {streams} WHERE stream_id = %s")
        self.set_metadata = r(
            "INSERT INTO {streams} AS s (stream_id, metadata) VALUES (%s, %s) "
            "ON CONFLICT (stream_id) DO UPDATE SET metadata = excluded.metadata "
            "WHERE s.deleted IS DISTINCT FROM 'hard' RETURNING 1"
        )
        self.save_snapshot = r(
            "WITH d AS (SELECT deleted FROM {streams} WHERE stream_id = %(id)s "
            "AND deleted IS NOT NULL), "
            "w AS (INSERT INTO {snapshots} (stream_id, stream_version, event_type, event_version, "
            "data) SELECT %(id)s, %(v)s, %(t)s, %(tv)s, %(d)s WHERE NOT EXISTS (SELECT 1 FROM d) "
            "ON CONFLICT (stream_id, stream_version) DO UPDATE SET "
            "event_type = excluded.event_type, event_version = excluded.event_version, "
            "data = excluded.data) "
            "SELECT deleted FROM d"
        )
        self.load_snapshot = r(
            "SELECT stream_version, event_type, event_version, data FROM {snapshots} "
            "WHERE stream_id = %s AND (%s::integer IS NULL OR stream_version <= %s::integer) "
            "ORDER BY stream_version DESC LIMIT 1"
        )
        self.load_checkpoint = r("SELECT position FROM {checkpoints} WHERE consumer = %s")
        self.save_checkpoint = r(
            "INSERT INTO {checkpoints} (consumer, position) VALUES (%s, %s) "
            "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, "
            "updated_at = clock_timestamp()"
        )

    def read_all(self, types: bool, prefix: bool) -> str:
        """Return the global-log query with the given filters."""
        return self._read_all[(types, prefix)]

    def count_events(self, types: bool, prefix: bool) -> str:
        """Return the query that counts visible events with the given filters."""
        return self._count_events[(types, prefix)]


def _filters(types: bool, prefix: bool) -> str:
    """Return the conditions of ``read_all``'s filters (their parameters come in this order)."""
    return (" AND event_type = ANY (%s::text[])" if types else "") + (
        " AND starts_with(stream_id, %s)" if prefix else ""
    )


_ARRAY_HEADER = struct.Struct(">iiiii")  # dimensions, has nulls, element type, length, lower bound
_INT4 = struct.Struct(">i")
_UUID_OID, _TEXT_OID, _INT4_OID, _BYTEA_OID = 2950, 25, 23, 17


class _BinaryArray:
    """A one-dimensional array without nulls, encoded in PostgreSQL's binary format.

    psycopg dumps a Python list in pure Python, looking up each element's
    dumper: about 25 µs for the append's five one-element arrays, and more per
    event. This writes the format directly from elements already in binary.
    """

    __slots__ = ("data",)

    def __init__(self, element_oid: int, elements: list[bytes], *, width: int = 0) -> None:
        header = _ARRAY_HEADER.pack(1, 0, element_oid, len(elements), 1)
        if width and elements:  # every element is ``width`` bytes long: one join
            size = _INT4.pack(width)
            self.data = header + size + size.join(elements)
            return
        pack = _INT4.pack
        parts = [header]
        for element in elements:
            parts.append(pack(len(element)))
            parts.append(element)
        self.data = b"".join(parts)

    @staticmethod
    def register(conn: AsyncConnection[Any]) -> None:
        """Teach ``conn`` to send binary arrays (cheap; idempotent)."""
        conn.adapters.register_dumper(_BinaryArray, _BinaryArrayDumper)


class _BinaryArrayDumper(Dumper):
    """Send a ``_BinaryArray`` as it is; the statement's cast (``%b::uuid[]``) names its type."""

    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        """Return the encoded array."""
        data: bytes = obj.data
        return data


class _BorrowedConnections:
    """A LIFO free-list of connections borrowed from the pool: a checkout in a microsecond.

    ``pool.connection()`` costs 40-90 µs a checkout (a lock, a waiting queue,
    logging, statistics); popping a list costs about one. Each connection
    keeps one cursor, reused by the store's own statements: a new cursor per
    statement costs another 30-40 µs (a kept cursor holds its last result, at
    most one page of a read, until its next statement). A connection goes back
    on the list only if it is open and idle (no transaction, no statement under
    way); any other goes back to the pool, which rolls it back or replaces it. A borrowed
    connection returns to the pool ``_KEEP_FOR`` seconds after it was
    borrowed, so the pool's ``max_lifetime`` still applies, and ``_IDLE_FOR``
    seconds after its last use, so the store holds no more connections than it
    uses and other users of a shared pool get the rest. The list never holds
    more than the pool's ``max_size``: each of its connections is one the pool
    lent.
    """

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        # (the connection's cursor, when it is due back to the pool, when it was last used)
        self._free: list[tuple[AsyncCursor[TupleRow], float, float]] = []
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    def cursor(self) -> _Loan:
        """Return a context that lends a connection's cursor for the block."""
        return _Loan(self, reuse=True, cursor=True)

    def borrow(self, *, reuse: bool = True) -> _Loan:
        """Return a context that lends a connection; ``reuse=False`` returns it to the pool."""
        return _Loan(self, reuse=reuse, cursor=False)

    async def get(self) -> tuple[AsyncCursor[TupleRow], float]:
        """Return a connection's cursor and when the connection is due back to the pool."""
        if self._free:
            if not self.pool.closed:
                cur, due, _ = self._free.pop()
                return cur, due
            await self.release()  # the pool closes them; getconn says it is closed
        conn = await self.pool.getconn()
        _BinaryArray.register(conn)
        return conn.cursor(), monotonic() + _KEEP_FOR

    async def put(self, cur: AsyncCursor[TupleRow], due: float, *, reuse: bool = True) -> None:
        """Keep the connection for the next checkout if it is clean, else give it back."""
        conn = cur.connection
        now = monotonic()
        if (
            reuse
            and now < due
            and conn.pgconn.transaction_status == TransactionStatus.IDLE
            and not self._closed
            and not self.pool.closed
        ):
            self._free.append((cur, due, now))
            if self._sweep is None:
                self._sweep = asyncio.get_running_loop().call_later(_IDLE_FOR, self._return_idle)
            return
        with anyio.CancelScope(shield=True):
            await self.pool.putconn(conn)

    async def release(self) -> None:
        """Give every free connection back to the pool."""
        free, self._free = self._free, []
        with anyio.CancelScope(shield=True):
            await self._give_back([cur.connection for cur, _, _ in free])

    async def close(self) -> None:
        """Give every free connection back, and keep none from now on."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        await self.release()

    def recover(self) -> None:
        """After a lost link: give the free connections back, then have the pool check them.

        After a database restart, the dead ones are thus replaced before they
        are handed out again; none is lent from the list meanwhile.
        """
        free, self._free = self._free, []
        _background(self._recover([cur.connection for cur, _, _ in free]))

    async def _recover(self, conns: list[AsyncConnection[TupleRow]]) -> None:
        await self._give_back(conns)
        if not self.pool.closed:
            await self.pool.check()

    def _return_idle(self) -> None:
        self._sweep = None
        idle_since = monotonic() - _IDLE_FOR
        idle = [entry for entry in self._free if entry[2] <= idle_since]
        if idle:
            self._free = [entry for entry in self._free if entry[2] > idle_since]
            _background(self._give_back([cur.connection for cur, _, _ in idle]))
        if self._free:
            self._sweep = asyncio.get_running_loop().call_later(_IDLE_FOR, self._return_idle)

    async def _give_back(self, conns: list[AsyncConnection[TupleRow]]) -> None:
        for conn in conns:
            await self.pool.putconn(conn)


class _Loan:
    """``async with``: a connection (or its cursor) of a ``_BorrowedConnections``, for one block."""

    __slots__ = ("_cur", "_cursor", "_due", "_lender", "_reuse")

    def __init__(self, lender: _BorrowedConnections, *, reuse: bool, cursor: bool) -> None:
        self._lender = lender
        self._reuse = reuse
        self._cursor = cursor

    async def __aenter__(self) -> Any:
        self._cur, self._due = await self._lender.get()
        return self._cur if self._cursor else self._cur.connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._lender.put(self._cur, self._due, reuse=self._reuse)


@contextmanager
def _translated(connections: _BorrowedConnections | None = None) -> Iterator[None]:
    """Turn driver errors about the link to the database into ``StoreUnavailable``.

    With ``connections``, also start a check of the idle ones, so that after a
    database restart the dead ones are replaced before they are handed out.
    """
    try:
        yield
    except psycopg_pool.PoolClosed as exc:
        raise StoreConfigurationError("the event store is closed; open it again") from exc
    except psycopg.errors.InFailedSqlTransaction as exc:
        raise StoreConfigurationError(
            "an earlier statement of this transaction failed, so PostgreSQL refuses the rest: "
            "leave the transaction block (it rolls back) and retry the whole unit of work"
        ) from exc
    except _UNAVAILABLE as exc:
        if connections is not None:
            connections.recover()
        raise StoreUnavailable("postgresql", _reason(exc)) from exc


_tasks: set[asyncio.Task[None]] = set()
# The store whose transaction this task has open, and the streams that transaction locked.
_open_transaction: contextvars.ContextVar[tuple[PostgresEventStore, set[str]] | None] = (
    contextvars.ContextVar("uno_event_storage_open_transaction", default=None)
)


def _background(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` without waiting for it, keeping a reference until it ends."""
    task = asyncio.get_running_loop().create_task(work)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _event_arrays(events: list[PreparedEvent]) -> list[_BinaryArray]:
    """Return the append functions' arrays: ids, types, type versions, data, metadata."""
    int4 = _INT4.pack
    return [
        _BinaryArray(_UUID_OID, _id_bytes(events), width=16),
        # Event types are ASCII (validate_event_type): the same in every encoding.
        _BinaryArray(_TEXT_OID, [e.event_type.encode("ascii") for e in events]),
        _BinaryArray(_INT4_OID, [int4(e.event_version) for e in events], width=4),
        _BinaryArray(_BYTEA_OID, [e.data for e in events]),
        _BinaryArray(_BYTEA_OID, [e.metadata for e in events]),
    ]


def _first_version(append: PreparedAppend) -> int:
    """Return the version an append that reads nothing first follows (0: a new stream)."""
    expected = append.expected_version
    return expected if type(expected) is int else 0


def _id_bytes(events: list[PreparedEvent]) -> list[bytes]:
    """Return the events' ids as bytes, with a new uuid7 for each the caller did not choose."""
    return [uuid7().bytes if e.event_id is None else e.event_id.bytes for e in events]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _too_many_events(most: int | str) -> StoreConfigurationError:
    return StoreConfigurationError(
        f"one transaction may append at most {most} events; split the import"
    )


def _contract_error(exc: psycopg.Error, append: PreparedAppend) -> Exception:
    """Map the append function's SQLSTATEs to the contract's errors; return others as they are."""
    state = exc.sqlstate
    message = exc.diag.message_primary or ""
    if state == SQLSTATES["wrong_expected_version"]:
        return WrongExpectedVersion(append.stream_id, append.expected_version, int(message) or None)
    if state == SQLSTATES["duplicate_event_id"]:
        stored = set(message.split(","))
        return DuplicateEventId(
            append.stream_id,
            [
                e.event_id
                for e in append.events
                if e.event_id is not None and str(e.event_id) in stored
            ],
        )
    if state == SQLSTATES["stream_deleted"]:
        return StreamDeleted(append.stream_id, hard=message == "hard")
    if state == SQLSTATES["transaction_order_conflict"]:
        return TransactionOrderConflict(append.stream_id)
    if state == SQLSTATES["too_many_events"]:
        return _too_many_events(message)
    return exc
